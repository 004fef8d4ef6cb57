"""What ``clinic-events demo`` shows: counts taken from the runner and the simulator, as values.

Everything here is pure (no Kafka, no threads, no clock): ``snapshot`` turns the runner's
``stats`` counter and the simulator's ``stats()`` into a frozen :class:`DemoSnapshot`, and the
renderers turn a snapshot into a ``rich`` table for the live view, one plain line for logs and
pipes, or the final summary (tables or JSON). The demo command only samples and prints.

"Settled" means an event reached a final state: delivered, dead-lettered, or skipped as a
duplicate of an event already settled. Retries are not final; an event retried through two
tiers and then delivered counts once in each tier and once as delivered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoSnapshot:
    """The demo's counts at one moment."""

    published: int
    delivered: int
    duplicate: int
    retried_by_tier: tuple[int, ...]  # records republished to tier 1, 2, ... (index 0 = tier 1)
    dead_lettered: int
    downstream_requests: int
    downstream_by_outcome: Mapping[str, int] = field(default_factory=dict)
    duplicate_deliveries: int = 0  # extra 2xx the downstream gave for an already-delivered key
    elapsed_s: float = 0.0

    @property
    def settled(self) -> int:
        return self.delivered + self.dead_lettered + self.duplicate

    @property
    def pending(self) -> int:
        """Published events not settled yet (in flight, waiting in a tier, or not read yet)."""
        return max(0, self.published - self.settled)

    @property
    def finished(self) -> bool:
        return self.settled >= self.published


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterLine:
    """One dead-lettered event as the summary lists it (ids and error, never payload fields)."""

    event_id: str | None
    event_type: str
    reason: str  # permanent | exhausted | undecodable (the clinic.dlq-reason header)
    error_class: str
    error_message: str


def snapshot(stats: Mapping[str, int], *, tiers: int, published: int,
             downstream: Mapping[str, Any], elapsed_s: float) -> DemoSnapshot:
    """A snapshot from ``Runner.stats`` and ``DownstreamSimulator.stats()``.

    Reads keys one by one (never iterates ``stats``), so it is safe while the runner thread
    is still counting.
    """
    by_outcome = downstream.get("by_outcome", {})
    return DemoSnapshot(
        published=published,
        delivered=stats.get("delivered", 0),
        duplicate=stats.get("duplicate", 0),
        retried_by_tier=tuple(stats.get(f"retried:{index}", 0) for index in range(1, tiers + 1)),
        dead_lettered=stats.get("dead_lettered", 0),
        downstream_requests=int(downstream.get("requests", 0)),
        downstream_by_outcome={str(k): int(v) for k, v in dict(by_outcome).items()},
        duplicate_deliveries=int(downstream.get("duplicates", 0)),
        elapsed_s=elapsed_s,
    )


def _tier_label(index: int, delay: str) -> str:
    return f"retried → tier {index} ({delay})"


def _downstream_text(snap: DemoSnapshot) -> str:
    outcomes = ", ".join(f"{name} {count}" for name, count in
                         sorted(snap.downstream_by_outcome.items()))
    return f"{snap.downstream_requests} requests" + (f": {outcomes}" if outcomes else "")


def live_view(snap: DemoSnapshot, *, main_topic: str,
              tier_delays: Sequence[str]) -> RenderableType:
    """The live view: a counts table, then lines about the topic and the downstream."""
    table = Table(title="clinic-events demo", title_justify="left", show_header=False,
                  min_width=40)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("published", str(snap.published))
    table.add_row("[green]delivered", f"[green]{snap.delivered}")
    table.add_row("duplicate (skipped)", str(snap.duplicate))
    for index, (delay, count) in enumerate(zip(tier_delays, snap.retried_by_tier, strict=True),
                                           start=1):
        table.add_row(f"[yellow]{_tier_label(index, delay)}",
                      f"[yellow]{count}" if count else "0")
    table.add_row("[red]dead-lettered", f"[red]{snap.dead_lettered}" if snap.dead_lettered
                  else "0")
    table.add_row("pending", str(snap.pending))
    footer = Text.assemble(
        ("main topic: ", "bold"), main_topic, "\n",
        ("downstream: ", "bold"), _downstream_text(snap), "\n",
        ("duplicate deliveries: ", "bold"),
        (str(snap.duplicate_deliveries), "red bold" if snap.duplicate_deliveries else "green"),
        f"    elapsed {snap.elapsed_s:.1f}s",
    )
    return Group(table, footer)


def plain_line(snap: DemoSnapshot, *, tier_delays: Sequence[str]) -> str:
    """One line of the counts, for output that is not a terminal."""
    retried = " ".join(f"retried[{delay}]={count}"
                       for delay, count in zip(tier_delays, snap.retried_by_tier, strict=True))
    return (f"[{snap.elapsed_s:5.1f}s] published={snap.published} delivered={snap.delivered} "
            f"duplicate={snap.duplicate} {retried} dead_lettered={snap.dead_lettered} "
            f"pending={snap.pending} downstream_requests={snap.downstream_requests} "
            f"duplicate_deliveries={snap.duplicate_deliveries}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoResult:
    """How the demo ended, for the summary and the exit code."""

    snap: DemoSnapshot
    main_topic: str
    tier_delays: tuple[str, ...]
    dead_letters: tuple[DeadLetterLine, ...] = ()
    rejected_lines: int = 0
    publish_failures: int = 0
    timed_out: bool = False
    interrupted: bool = False
    runner_error: str | None = None

    @property
    def ok(self) -> bool:
        return (self.snap.finished and self.snap.duplicate_deliveries == 0
                and not (self.timed_out or self.interrupted or self.runner_error
                         or self.publish_failures))

    def problems(self) -> list[str]:
        """Why the demo did not succeed, one sentence each (empty when ``ok``)."""
        found = []
        if self.timed_out:
            found.append(f"timed out with {self.snap.pending} event(s) not settled")
        if self.interrupted:
            found.append("interrupted")
        if self.runner_error:
            found.append(f"the consumer stopped: {self.runner_error}")
        if self.publish_failures:
            found.append(f"{self.publish_failures} event(s) could not be published")
        if self.snap.duplicate_deliveries:
            found.append(f"{self.snap.duplicate_deliveries} duplicate delivery(ies) downstream")
        return found

    def dead_letter_reasons(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for line in self.dead_letters:
            counts[line.reason] = counts.get(line.reason, 0) + 1
        return dict(sorted(counts.items()))

    def to_json(self) -> dict[str, Any]:
        snap = self.snap
        return {
            "ok": self.ok,
            "main_topic": self.main_topic,
            "published": snap.published,
            "rejected_lines": self.rejected_lines,
            "publish_failures": self.publish_failures,
            "delivered": snap.delivered,
            "duplicate": snap.duplicate,
            "retried": {delay: count for delay, count in
                        zip(self.tier_delays, snap.retried_by_tier, strict=True)},
            "dead_lettered": snap.dead_lettered,
            "dead_letter_reasons": self.dead_letter_reasons(),
            "dead_letters": [{"event_id": d.event_id, "event_type": d.event_type,
                              "reason": d.reason, "error_class": d.error_class,
                              "error_message": d.error_message} for d in self.dead_letters],
            "pending": snap.pending,
            "downstream_requests": snap.downstream_requests,
            "downstream_by_outcome": dict(snap.downstream_by_outcome),
            "duplicate_deliveries": snap.duplicate_deliveries,
            "elapsed_s": round(snap.elapsed_s, 3),
            "timed_out": self.timed_out,
            "interrupted": self.interrupted,
            "runner_error": self.runner_error,
            "problems": self.problems(),
        }


def summary_view(result: DemoResult) -> list[RenderableType]:
    """The final summary: the counts, the dead letters with their reasons, the verdict."""
    snap = result.snap
    counts = Table(title="demo summary", title_justify="left", show_header=False,
                   min_width=40)
    counts.add_column("what")
    counts.add_column("count", justify="right")
    counts.add_row("published", str(snap.published))
    if result.rejected_lines:
        counts.add_row("[yellow]invalid lines (not published)", str(result.rejected_lines))
    counts.add_row("[green]delivered", str(snap.delivered))
    counts.add_row("duplicate (skipped)", str(snap.duplicate))
    for index, (delay, count) in enumerate(zip(result.tier_delays, snap.retried_by_tier,
                                               strict=True), start=1):
        counts.add_row(_tier_label(index, delay), str(count))
    reasons = ", ".join(f"{reason} {count}" for reason, count in
                        result.dead_letter_reasons().items())
    counts.add_row("[red]dead-lettered", f"{snap.dead_lettered}" + (f" ({reasons})"
                                                                    if reasons else ""))
    counts.add_row("not settled", str(snap.pending))
    counts.add_row("downstream requests", str(snap.downstream_requests))
    counts.add_row("duplicate deliveries (must be 0)",
                   f"[red]{snap.duplicate_deliveries}" if snap.duplicate_deliveries
                   else "[green]0")
    counts.add_row("elapsed (publish → settled)", f"{snap.elapsed_s:.1f}s")
    parts: list[RenderableType] = [counts, Text.assemble(
        ("main topic: ", "bold"), result.main_topic, "\n",
        ("downstream: ", "bold"), _downstream_text(snap))]
    if result.dead_letters:
        dead = Text("dead-lettered events:", style="bold")
        for line in result.dead_letters:  # whole ids, to grep them in the outcome log
            dead.append_text(Text.assemble(
                "\n  ", (line.reason, "red"), f"  {line.event_type}  {line.event_id or '-'}\n",
                f"    {line.error_class}: {line.error_message}"))
        parts.append(dead)
    if result.ok:
        parts.append(Text("every event was delivered or dead-lettered; none was delivered twice",
                          style="green"))
    else:
        parts.append(Text("demo failed: " + "; ".join(result.problems()), style="red bold"))
    return parts
