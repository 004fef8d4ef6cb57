"""In-order offset bookkeeping for records processed out of order.

Records of one partition are handed to several lanes and finish in any order, but Kafka's
committed offset means "everything before this is done". ``PartitionOffsets`` keeps the
offsets of one partition in the order they were consumed and reports the next offset to
commit only once every earlier record's fate is durable, so a crash can never skip a record.
Pure bookkeeping: no Kafka, no threads (the runner's poll thread owns it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

TopicPartitionKey = tuple[str, int]


@dataclass(slots=True)
class PartitionOffsets:
    """Offsets of one partition: consumed in order, completed in any order."""

    pending: deque[int] = field(default_factory=deque)
    done: set[int] = field(default_factory=set)
    committable: int | None = None  # next offset to commit, once it moved

    def track(self, offset: int) -> None:
        """Note a consumed record; offsets must be tracked in increasing order."""
        if self.pending and offset <= self.pending[-1]:
            raise ValueError(f"offset {offset} tracked after {self.pending[-1]}")
        self.pending.append(offset)

    def complete(self, offset: int) -> int | None:
        """Mark ``offset`` done; return the new committable offset if it advanced."""
        self.done.add(offset)
        advanced = None
        while self.pending and self.pending[0] in self.done:
            head = self.pending.popleft()
            self.done.discard(head)
            advanced = head + 1
        if advanced is not None:
            self.committable = advanced
        return advanced

    @property
    def in_flight(self) -> int:
        return len(self.pending)


class OffsetBook:
    """``PartitionOffsets`` for every assigned partition."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, PartitionOffsets] = {}

    def track(self, tp: TopicPartitionKey, offset: int) -> None:
        self._partitions.setdefault(tp, PartitionOffsets()).track(offset)

    def complete(self, tp: TopicPartitionKey, offset: int) -> int | None:
        """Complete a record; None if it advanced nothing or the partition was revoked."""
        partition = self._partitions.get(tp)
        return None if partition is None else partition.complete(offset)

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
