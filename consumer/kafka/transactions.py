"""Exactly-once hops over confluent-kafka: the ``Transactions`` port of the run loop.

One transaction produces a batch of hops (records to retry tiers and the DLQ) and commits
the source offsets they settle, with the consumer's group metadata: the broker then refuses
the offsets of a member whose generation is over (KIP-447), and the whole transaction is
aborted, so a partition taken away mid-batch never gets its records routed twice.

The transactional id is new for every process (like Kafka Streams' exactly-once v2): fencing
comes from the group generation, not from the id, so several instances on one host need no
configuration. The cost is that a transaction left open by a killed process is not aborted
by its successor: the broker aborts it after ``transaction.timeout.ms``, during which readers
of the partitions it wrote to wait (read_committed stops at the first open transaction).
That timeout is 10 s here, and a transaction stays open only for the milliseconds of a
commit, so a kill blocks a tier for at most about 20 s (the broker looks for timed-out
transactions every 10 s), and only if it landed inside a commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from consumer.config.settings import Settings
from consumer.kafka.access import KafkaAccessRefused
from consumer.kafka.clients import build_producer, kafka_reason
from consumer.pipeline.broker import (
    BrokerError,
    Partition,
    TransactionAborted,
    TransactionInDoubt,
)
from consumer.pipeline.outbox import Hop

LOG = logging.getLogger("clinic_events.runner")
#: The broker aborts a transaction open longer than this (the producer's
#: ``transaction.timeout.ms``); ``[kafka.client]`` may change it.
TRANSACTION_TIMEOUT_MS = 10_000
#: The longest any transaction step holds up the poll thread (see ``KafkaTransactions``).
STEP_TIMEOUT_S = 5.0
INIT_TIMEOUT_S = 30.0
_State = Literal["ready", "open", "committing", "aborting"]


class TransactionsRefused(KafkaAccessRefused):
    """The broker would not start transactions for ``run`` (see ``[kafka] transactional_hops``):
    no retry helps, so it stops ``run`` at start-up like refused credentials (exit 5)."""


def build_transactional_producer(settings: Settings) -> Producer:
    """A producer with a transactional id of its own, for ``KafkaTransactions``.

    ``message.timeout.ms`` must not exceed the transaction timeout (librdkafka refuses it):
    both default to ``TRANSACTION_TIMEOUT_MS`` unless ``[kafka.client]`` sets them.
    """
    client = settings.kafka.client
    timeout = int(client.get("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS))
    defaults: dict[str, Any] = {"transaction.timeout.ms": timeout}
    if "message.timeout.ms" not in client:
        defaults["message.timeout.ms"] = timeout
    return build_producer(settings, **{
        "transactional.id": f"clinic-events.{settings.kafka.group_id}.{uuid.uuid4().hex}",
        **{name: value for name, value in defaults.items() if name not in client},
    })


class KafkaTransactions:
    """``Transactions`` over a transactional ``Producer`` and the group's ``Consumer``.

    Every step waits at most ``STEP_TIMEOUT_S``: the poll thread calls ``commit``, and while
    it waits nobody polls the consumer, so a rebalance would wait for this member (and stall
    the whole group) if a step waited out a broker outage. A step that times out is left to
    librdkafka, which goes on with it in the background: an abort is finished at the next
    call, and a commit whose outcome is unknown is reported as ``TransactionInDoubt`` and
    resumed by the next call, which must bring the same batch.
    """

    def __init__(self, producer: Producer, consumer: Consumer, *,
                 step_timeout_s: float = STEP_TIMEOUT_S) -> None:
        self._producer = producer
        self._consumer = consumer
        self._step_s = step_timeout_s
        self._state: _State = "ready"
        try:
            producer.init_transactions(INIT_TIMEOUT_S)
        except KafkaException as exc:
            raise TransactionsRefused(
                f"the broker would not start transactions within {INIT_TIMEOUT_S:.0f} s "
                f"({kafka_reason(exc)}); exactly-once hops need Kafka transactions (and, with "
                "ACLs, WRITE on the TransactionalId prefix 'clinic-events.'); set [kafka] "
                "transactional_hops = false to run at-least-once instead") from exc

    def commit(self, hops: Sequence[Hop], offsets: Mapping[Partition, int]) -> None:
        try:
            if self._state == "committing":  # the batch in doubt, brought again
                self._producer.commit_transaction(self._step_s)
                self._state = "ready"
                return
            if self._state != "ready":
                self._abort()
            self._producer.begin_transaction()
            self._state = "open"
            for hop in hops:
                self._produce(hop)
            if offsets:
                self._producer.send_offsets_to_transaction(
                    [TopicPartition(topic, partition, offset)
                     for (topic, partition), offset in offsets.items()],
                    self._consumer.consumer_group_metadata(), self._step_s)
            self._state = "committing"
            self._producer.commit_transaction(self._step_s)
            self._state = "ready"
        except KafkaException as exc:
            error = _error(exc)
            if error.fatal():
                raise BrokerError(f"the transactional producer failed: {kafka_reason(exc)}") \
                    from exc
            if self._state == "committing" and error.retriable() \
                    and not error.txn_requires_abort():
                raise TransactionInDoubt(kafka_reason(exc)) from exc
            self._state = "open"  # abortable, or a step before the commit failed
            self._abort()
            raise TransactionAborted(kafka_reason(exc)) from exc

    def close(self) -> None:
        try:
            if self._state != "ready":
                self._abort()
        except BrokerError as exc:
            LOG.warning("%s; the broker aborts it after transaction.timeout.ms", exc)
        finally:
            close = getattr(self._producer, "close", None)  # confluent-kafka >= 2.13
            if close is not None:
                close()

    def _produce(self, hop: Hop) -> None:
        wire: list[tuple[str, str | bytes | None]] = list(hop.headers)
        while True:
            try:
                self._producer.produce(hop.topic, value=hop.value, key=hop.key, headers=wire)
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let it drain, then retry

    def _abort(self) -> None:
        """Abort the open transaction (its records are purged or marked aborted).

        Raises ``TransactionAborted`` while the abort is still under way (it is finished at
        the next call), ``BrokerError`` if it cannot be done at all.
        """
        self._state = "aborting"
        try:
            self._producer.abort_transaction(self._step_s)
        except KafkaException as exc:
            if _error(exc).retriable() and not _error(exc).fatal():
                raise TransactionAborted(f"aborting the last transaction: {kafka_reason(exc)}") \
                    from exc
            raise BrokerError(f"could not abort a transaction: {kafka_reason(exc)}") from exc
        self._state = "ready"


def _error(exc: KafkaException) -> KafkaError:
    first = exc.args[0] if exc.args else None
    if isinstance(first, KafkaError):
        return first
    return KafkaError(KafkaError._FAIL, str(exc))
