"""Which retry partitions wait for their head record to come due, and until when.

The runner pauses a retry partition when its head record is not due yet (and seeks back to
it, so the head is fetched again on resume). This module is the bookkeeping of those pauses:
which partitions are held, which are due to resume at a given time, and how long the poll
loop may block before the next one is. Pure state, no Kafka: the runner makes the
``pause``/``seek``/``resume`` calls, so the timing rules are testable on their own.
"""

from __future__ import annotations

from consumer.pipeline.offsets import TopicPartitionKey


class PausedPartitions:
    """Retry partitions held until a due time (epoch ms); owned by the poll thread."""

    def __init__(self) -> None:
        self._due_at_ms: dict[TopicPartitionKey, int] = {}

    def __bool__(self) -> bool:
        return bool(self._due_at_ms)

    def __contains__(self, tp: object) -> bool:
        return tp in self._due_at_ms

    def held(self) -> frozenset[TopicPartitionKey]:
        """The partitions held right now."""
        return frozenset(self._due_at_ms)

    def hold(self, tp: TopicPartitionKey, due_at_ms: int) -> None:
        """``tp`` is paused until ``due_at_ms`` (its head record's due time)."""
        self._due_at_ms[tp] = due_at_ms

    def take_due(self, now_ms: int) -> list[TopicPartitionKey]:
        """The partitions due by ``now_ms``, no longer held once returned (resume them)."""
        due = [tp for tp, due_at_ms in self._due_at_ms.items() if due_at_ms <= now_ms]
        for tp in due:
            del self._due_at_ms[tp]
        return due

    def wait_s(self, now_ms: int, longest_s: float) -> float:
        """How long the poll loop may block: until the next resume, at most ``longest_s``.

        An idle consumer with a held partition wakes exactly when that partition is due,
        never earlier (no busy polling) and never later (no late retries).
        """
        if not self._due_at_ms:
            return longest_s
        wait_ms = min(self._due_at_ms.values()) - now_ms
        return max(0.0, min(longest_s, wait_ms / 1000))

    def forget(self, tp: TopicPartitionKey) -> None:
        """``tp`` was revoked or lost: never resume it."""
        self._due_at_ms.pop(tp, None)
