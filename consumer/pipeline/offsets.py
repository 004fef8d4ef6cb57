"""In-order offset bookkeeping for records processed out of order.

Records of one partition are handed to several lanes and finish in any order, but Kafka's
committed offset means "everything before this is done". ``PartitionOffsets`` keeps the
offsets of one partition in the order they were consumed and reports the next offset to
commit only once every earlier record's fate is durable, so a crash can never skip a record.
Offsets are tracked and completed a batch at a time (per partition), which keeps the cost per
record to a set insert and a deque pop. Pure bookkeeping: no Kafka, no threads (the runner's
poll thread owns it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from operator import ge

TopicPartitionKey = tuple[str, int]


@dataclass(slots=True)
class PartitionOffsets:
    """Offsets of one partition: consumed in order, completed in any order."""

    pending: deque[int] = field(default_factory=deque)
    done: set[int] = field(default_factory=set)
    committable: int | None = None  # next offset to commit, once it moved

    def track(self, offsets: Sequence[int]) -> None:
        """Note consumed records; offsets must be tracked in increasing order."""
        if not offsets:
            return
        previous = self.pending[-1] if self.pending else -1
        if offsets[0] <= previous or any(map(ge, offsets, islice(offsets, 1, None))):
            raise ValueError(f"offsets {list(offsets)[:5]}... tracked out of order "
                             f"(after {previous})")
        self.pending.extend(offsets)

    def complete(self, offsets: Iterable[int]) -> int | None:
        """Mark ``offsets`` done; return the new committable offset if it advanced."""
        done = self.done
        done.update(offsets)
        pending = self.pending
        advanced = None
        while pending and pending[0] in done:
            head = pending.popleft()
            done.discard(head)
            advanced = head + 1
        if advanced is not None:
            self.committable = advanced
        return advanced

    def step_over(self, position: int) -> bool:
        """Move the committable offset up to ``position`` if nothing is pending before it.

        For offsets the client skipped without delivering them (transaction markers, see
        ``consumer.pipeline.undelivered``): True if it moved, so ``position`` should be stored.
        """
        if self.pending or position <= (self.committable if self.committable is not None
                                         else -1):
            return False
        self.committable = position
        return True

    @property
    def in_flight(self) -> int:
        """Records whose fate is not durable yet; those done behind one that is not are
        waiting to be committed, not in flight (``done`` holds only pending offsets)."""
        return len(self.pending) - len(self.done)


class OffsetBook:
    """``PartitionOffsets`` for every assigned partition."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, PartitionOffsets] = {}

    def track(self, tp: TopicPartitionKey, offsets: Sequence[int]) -> None:
        """Note records of one partition consumed together, in increasing offset order."""
        partition = self._partitions.get(tp)
        if partition is None:
            partition = self._partitions[tp] = PartitionOffsets()
        partition.track(offsets)

    def complete(self, tp: TopicPartitionKey, offsets: Iterable[int]) -> int | None:
        """Complete records; None if that advanced nothing or the partition was revoked."""
        partition = self._partitions.get(tp)
        return None if partition is None else partition.complete(offsets)

    def step_over(self, tp: TopicPartitionKey, position: int) -> bool:
        """``PartitionOffsets.step_over`` for ``tp`` (tracked from now on if it was not)."""
        partition = self._partitions.get(tp)
        if partition is None:
            partition = self._partitions[tp] = PartitionOffsets()
        return partition.step_over(position)

    def forget(self, tp: TopicPartitionKey) -> None:
        """Drop a revoked partition: late completions for it are ignored."""
        self._partitions.pop(tp, None)

    def in_flight(self, tp: TopicPartitionKey | None = None) -> int:
        if tp is not None:
            partition = self._partitions.get(tp)
            return 0 if partition is None else partition.in_flight
        return sum(p.in_flight for p in self._partitions.values())

    def tracked(self) -> list[TopicPartitionKey]:
        return list(self._partitions)
