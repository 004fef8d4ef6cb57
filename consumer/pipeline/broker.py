"""The broker as the run loop sees it: a small consumer port and a producer port.

Why a port: the run loop's decisions (pause a retry partition until its head is due, seek
back, resume, hold partitions under back-pressure, forget state on revoke, store offsets
only in order) are the heart of the consumer, and they must be provable quickly and
deterministically. ``consumer.kafka.consumer`` implements this port over confluent-kafka;
``consumer.pipeline.memory_broker`` implements it in memory with a manual clock, and the
same contract tests run against both (Arroyo's pattern: an abstract consumer and a local
backend).

Partitions are ``(topic, partition)`` pairs. Records come back as ``InboundRecord`` values,
detached from the client; consumer errors that are not about a record (a broker gone away)
are the adapter's to log. Offsets passed to ``store_offsets`` are the next offset to read,
as Kafka commits them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from consumer.errors import ClinicEventsError
from consumer.pipeline.offsets import TopicPartitionKey
from consumer.pipeline.outbox import Hop, Publisher
from consumer.pipeline.records import InboundRecord
from retry_topics.system_state import SystemState

Partition = TopicPartitionKey


class BrokerError(ClinicEventsError, RuntimeError):
    """The broker refused a request the run loop can survive (offsets of a revoked partition)."""


class RebalanceListener(Protocol):
    """Called on the consuming thread, inside ``consume``, when the assignment changes."""

    def on_assign(self, partitions: list[Partition]) -> None:
        """``partitions`` are now this consumer's; fetching starts from committed offsets."""

    def on_revoke(self, partitions: list[Partition]) -> None:
        """``partitions`` go away after this returns: finish and commit their work here."""

    def on_lost(self, partitions: list[Partition]) -> None:
        """``partitions`` were taken already (session expired): committing is too late."""


class ConsumerPort(Protocol):
    """The part of a Kafka consumer the run loop uses."""

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        """Join the group for ``topics``; the listener hears every assignment change."""

    def consume(self, max_records: int, timeout_s: float) -> list[InboundRecord]:
        """Up to ``max_records`` records, waiting at most ``timeout_s`` for the first one.

        Returns as soon as one record is there (never waits to fill the batch), so a lone
        record is not held back.
        """

    def pause(self, partitions: Iterable[Partition]) -> None:
        """Stop fetching ``partitions``; records fetched but not handed out are dropped, and
        fetching starts again from the first of them on ``resume``."""

    def resume(self, partitions: Iterable[Partition]) -> None:
        """Fetch ``partitions`` again."""

    def seek(self, partition: Partition, offset: int) -> None:
        """Make ``offset`` the next record fetched from ``partition``."""

    def positions(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """The next offset to fetch of each of ``partitions`` that has a known position.

        Raises ``BrokerError`` when the client cannot tell.
        """

    def backlog(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """Records of each of ``partitions`` known to wait beyond those handed out already
        (0 where the client cannot tell yet)."""

    def committed(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """The group's committed offset of each of ``partitions`` (assigned to this member
        or not) that has one. Raises ``BrokerError`` when the broker cannot tell."""

    def store_offsets(self, offsets: Mapping[Partition, int]) -> None:
        """Mark ``offsets`` to be committed; raises ``BrokerError`` (e.g. not assigned)."""

    def commit(self) -> None:
        """Commit stored offsets now; nothing stored is not an error."""

    def close(self) -> None:
        """Leave the group (revoking every partition first) and release the client."""


class ProducerPort(Publisher, Protocol):
    """The part of the producer the run loop drives; at-least-once hops are published here."""

    def serve(self, timeout_s: float) -> None:
        """Run delivery callbacks of acknowledged records, waiting at most ``timeout_s``."""

    def flush(self, timeout_s: float) -> None:
        """Wait until every record sent is acknowledged, or ``timeout_s`` passed."""

    def close(self) -> None:
        """Release the client."""


class TransactionAborted(BrokerError):
    """A transaction was aborted: nothing of it is visible, and it may be tried again."""


class TransactionInDoubt(BrokerError):
    """A commit timed out, and may yet succeed: bring the same batch again to learn whether
    it did (nothing else may be committed meanwhile)."""


class Transactions(Protocol):
    """Hops committed together with the source offsets they settle (exactly-once hops).

    At the edge: a transactional producer, and the consumer group's metadata so the broker
    fences a commit from a member whose generation is over (KIP-447).
    """

    def commit(self, hops: Sequence[Hop], offsets: Mapping[Partition, int]) -> None:
        """Produce ``hops`` and commit ``offsets`` for the group, all in one transaction.

        Raises ``TransactionAborted`` when the transaction was aborted (by the broker, or
        because a step failed), ``TransactionInDoubt`` when its commit timed out (call again
        with the same ``hops`` and ``offsets``), and ``BrokerError`` when the producer can go
        on no more.
        """

    def close(self) -> None:
        """Release the producer (a transaction still open is aborted)."""


class StatusBoard(Protocol):
    """Where an instance states its condition (the status topic at the edge)."""

    def state(self, state: SystemState) -> None:
        """Publish ``state``, keyed by its instance; a failure is the board's to log."""
