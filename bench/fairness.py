"""How evenly a backlog drains across partitions, from samples of committed offsets.

Mechanism: while the consumer drains a backlog published across several partitions, the
group's committed offset of every partition is sampled at a fixed interval. Each sample
gives every partition a progress fraction, (committed - start) / (end - start). Two figures
come out of the samples:

* the *spread*: the largest difference, in any one sample, between the partition furthest
  ahead and the one furthest behind (0: all in step; 1: one finished before another began);
* the longest *flat* stretch: how long a partition that still had records to drain kept the
  same committed offset while another partition's advanced. This is what an operator sees
  as "lag stays flat on p2 while p0 drains", and ``lag`` calls a stall.

The drain's clock starts at the first sample in which any partition has advanced, so a
group join or the first auto-commit interval is not counted as a stall.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProgressSample:
    """The committed offsets of the drained partitions at one moment."""

    at_s: float  # seconds since sampling began (monotonic)
    committed: Mapping[int, int]  # partition -> committed offset (the next one to read)


@dataclass(frozen=True, slots=True)
class DrainFairness:
    spread: float  # max over samples of (max - min) progress fraction
    longest_flat_s: float  # a partition with records left, unmoved while another moved
    flat_partition: int | None  # the partition of that stretch (None: none was flat)
    drain_s: float  # first sample with progress -> first sample with every partition done
    done_at_s: Mapping[int, float]  # partition -> when it was drained (from the drain's start)


def progress(sample: ProgressSample, start: Mapping[int, int],
             end: Mapping[int, int]) -> dict[int, float]:
    """Each partition's drained fraction in ``sample`` (an empty partition counts as done)."""
    fractions = {}
    for partition, first in start.items():
        total = end[partition] - first
        done = min(max(sample.committed.get(partition, first), first), end[partition]) - first
        fractions[partition] = 1.0 if total <= 0 else done / total
    return fractions


def drain_fairness(samples: Sequence[ProgressSample], start: Mapping[int, int],
                   end: Mapping[int, int]) -> DrainFairness:
    """The spread and the longest flat stretch of the samples (in time order)."""
    spread, longest, flat_partition = 0.0, 0.0, None
    began: float | None = None
    finished: float | None = None
    moved_at: dict[int, float] = {}
    done_at: dict[int, float] = {}
    previous = dict(start)
    for sample in samples:
        fractions = progress(sample, start, end)
        spread = max(spread, max(fractions.values()) - min(fractions.values()))
        now = {p: sample.committed.get(p, previous[p]) for p in start}
        advanced = {p for p in start if now[p] > previous[p]}
        if began is None and advanced:
            began = sample.at_s
            moved_at = dict.fromkeys(start, began)
        if began is not None:
            for partition in start:
                if partition not in done_at and now[partition] >= end[partition]:
                    done_at[partition] = sample.at_s - began
                if partition in advanced:
                    moved_at[partition] = sample.at_s
                elif now[partition] < end[partition] and advanced:
                    flat = sample.at_s - moved_at[partition]
                    if flat > longest:
                        longest, flat_partition = flat, partition
            if finished is None and all(now[p] >= end[p] for p in start):
                finished = sample.at_s
        previous = now
    drain_s = 0.0 if began is None else (finished if finished is not None
                                         else samples[-1].at_s) - began
    return DrainFairness(spread=spread, longest_flat_s=longest, flat_partition=flat_partition,
                         drain_s=drain_s, done_at_s=done_at)
