"""Committing past offsets no record was delivered for: transaction markers.

Why: a transactional producer (``clinic-events dlq replay``, or an upstream system that
publishes in transactions) ends every transaction with a control record, a commit or abort
marker, which takes an offset but is never handed to a consumer; neither are the records of
an aborted transaction, to a ``read_committed`` consumer like this one. The runner stores
"last finished offset + 1", so a partition whose newest offset is a marker kept a committed
offset one short of its end: ``clinic-events lag`` and every Kafka lag monitor showed lag
that was not there, and a stopped consumer looked like one with work waiting. librdkafka's
consumer position steps over such offsets as it fetches past them; like Java consumers, the
runner stores that position, but only where nothing it has not finished lies before it:

- the partition has nothing in flight (every record delivered so far has a durable fate);
- it is not paused, and no seek back is still unconfirmed. A retry partition whose head is
  not due is paused and sought back to the head, and librdkafka applies a seek
  asynchronously: until the head is delivered again, the position may still be the one from
  before the seek, past records the runner skipped. ``SeekBacks`` remembers those
  partitions;
- the position is past the offset stored last (``OffsetBook.step_over``).

The runner checks idle partitions about once a second, and before every commit on revoke and
on stop.
"""

from __future__ import annotations

from consumer.pipeline.offsets import TopicPartitionKey

CHECK_INTERVAL_S = 1.0


class SeekBacks:
    """Partitions sought back to a head offset that has not been delivered again yet."""

    def __init__(self) -> None:
        self._heads: dict[TopicPartitionKey, int] = {}

    def __bool__(self) -> bool:
        return bool(self._heads)

    def __contains__(self, tp: object) -> bool:
        return tp in self._heads

    def sought(self, tp: TopicPartitionKey, head: int) -> None:
        """``tp`` was sought back to ``head``: its position is unreliable until it returns."""
        self._heads[tp] = head

    def delivered(self, tp: TopicPartitionKey, offset: int) -> None:
        """A record of ``tp`` was delivered: at or before the head, the seek has taken effect.

        Records past the head may still come from before the seek (fetched earlier); they
        confirm nothing.
        """
        head = self._heads.get(tp)
        if head is not None and offset <= head:
            del self._heads[tp]

    def forget(self, tp: TopicPartitionKey) -> None:
        """``tp`` was revoked or lost: a new assignment fetches from the committed offset."""
        self._heads.pop(tp, None)
