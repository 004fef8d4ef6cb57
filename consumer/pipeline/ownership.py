"""Which partitions this instance owns now: work on a lost partition must stop.

Why: when the group takes partitions away without a revoke (the session expired while the
broker was unreachable, say), their records may still be in the workers' hands. The new
owner processes them again from the committed offset, so anything this instance still did
with them would be a second fate: a second retry-tier record, a second dead letter. Each
assignment of a partition gets a new generation; the runner stamps every record it accepts
with its partition's generation, and the processor calls no handler and republishes nothing
for a record whose generation is no longer current (``Dropped``).

Read from worker threads, written by the poll thread: a dict lookup and a dict assignment
are atomic under CPython's GIL, and a stale read only delays a drop by one record.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from consumer.pipeline.offsets import TopicPartitionKey
from consumer.pipeline.records import InboundRecord


class Ownership:
    """The current generation of each partition this instance owns."""

    def __init__(self) -> None:
        self._generations: dict[TopicPartitionKey, int] = {}
        self._next = itertools.count(1)

    def claim(self, partitions: Iterable[TopicPartitionKey]) -> None:
        for tp in partitions:
            self._generations[tp] = next(self._next)

    def release(self, partitions: Iterable[TopicPartitionKey]) -> None:
        for tp in partitions:
            self._generations.pop(tp, None)

    def generation(self, tp: TopicPartitionKey) -> int:
        """The partition's current generation; 0 if it is not owned."""
        return self._generations.get(tp, 0)

    def owns(self, record: InboundRecord) -> bool:
        """Whether the record was accepted under the current ownership of its partition."""
        return record.generation != 0 and \
            self._generations.get((record.topic, record.partition)) == record.generation
