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

**A step that never returns.** librdkafka's ``send_offsets_to_transaction`` can block past
its timeout, for good, once the group's coordinator was a broker that went away (seen here
after a broker restart; librdkafka issues #5456 and #5511). Each step therefore runs on a
helper thread, and one that outlasts its timeout by ``HUNG_GRACE_S`` is given up: the
producer is replaced by a new one with the same transactional id, whose
``init_transactions`` fences the old one and aborts its open transaction, and the
transaction is reported aborted (tried again by the runner). The hung call's thread is left
to end when the old producer fails on its fencing.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from consumer.config.settings import Settings
from consumer.kafka.access import KafkaAccessRefused
from consumer.kafka.client_log import ConnectionLog
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
HUNG_GRACE_S = 5.0  # past its own timeout, a step that has not returned is hung
INIT_TIMEOUT_S = 30.0
_State = Literal["ready", "open", "committing", "aborting"]
_Result = TypeVar("_Result")


class TransactionsRefused(KafkaAccessRefused):
    """The broker would not start transactions for ``run`` (see ``[kafka] transactional_hops``):
    no retry helps, so it stops ``run`` at start-up like refused credentials (exit 5)."""


class ProducerHung(Exception):
    """A transaction step outlasted its timeout (see the module's notes)."""


def transactional_producers(settings: Settings) -> Callable[[], Producer]:
    """Builds the producers of ``KafkaTransactions``: each with this process's transactional
    id, so a new one fences the one it replaces.

    ``message.timeout.ms`` must not exceed the transaction timeout (librdkafka refuses it):
    both default to ``TRANSACTION_TIMEOUT_MS`` unless ``[kafka.client]`` sets them.
    """
    transactional_id = f"clinic-events.{settings.kafka.group_id}.{uuid.uuid4().hex}"
    # One log for them all: while Kafka is down a step times out every STEP_TIMEOUT_S and
    # its producer is replaced, and each new one would say again that Kafka is unreachable.
    log = ConnectionLog("producer")
    return lambda: _transactional_producer(settings, transactional_id, log)


def _transactional_producer(settings: Settings, transactional_id: str,
                            log: ConnectionLog) -> Producer:
    client = settings.kafka.client
    timeout = int(client.get("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS))
    defaults: dict[str, Any] = {"transaction.timeout.ms": timeout}
    if "message.timeout.ms" not in client:
        defaults["message.timeout.ms"] = timeout
    return build_producer(settings, connection_log=log, **{
        "transactional.id": transactional_id,
        **{name: value for name, value in defaults.items() if name not in client},
    })


class KafkaTransactions:
    """``Transactions`` over transactional producers and the group's ``Consumer``.

    Every step waits at most ``STEP_TIMEOUT_S``: the poll thread calls ``commit``, and while
    it waits nobody polls the consumer, so a rebalance would wait for this member (and stall
    the whole group) if a step waited out a broker outage. A step that times out is left to
    librdkafka, which goes on with it in the background: an abort is finished at the next
    call, and a commit whose outcome is unknown is reported as ``TransactionInDoubt`` and
    resumed by the next call, which must bring the same batch. A step that does not return
    at all gets its producer replaced (see the module's notes).
    """

    def __init__(self, producers: Callable[[], Producer], consumer: Consumer, *,
                 step_timeout_s: float = STEP_TIMEOUT_S,
                 hung_grace_s: float = HUNG_GRACE_S) -> None:
        self._producers = producers
        self._consumer = consumer
        self._step_s = step_timeout_s
        self._grace_s = hung_grace_s
        self._state: _State = "ready"
        self.replaced = 0  # producers given up on a hung step
        try:
            self._producer: Producer | None = self._started()
        except (KafkaException, ProducerHung) as exc:
            reason = kafka_reason(exc) if isinstance(exc, KafkaException) else str(exc)
            raise TransactionsRefused(
                f"the broker would not start transactions within {INIT_TIMEOUT_S:.0f} s "
                f"({reason}); exactly-once hops need Kafka transactions (and, with ACLs, "
                "WRITE on the TransactionalId prefix 'clinic-events.'); set [kafka] "
                "transactional_hops = false to run at-least-once instead") from exc

    def _started(self) -> Producer:
        """A new producer, its transactions initialised (which fences an earlier one)."""
        producer = self._producers()
        self._step("init_transactions", producer.init_transactions, INIT_TIMEOUT_S)
        return producer

    def commit(self, hops: Sequence[Hop], offsets: Mapping[Partition, int]) -> None:
        try:
            if self._producer is None:  # the last replacement could not start
                self._producer = self._started()
            self._commit(self._producer, hops, offsets)
        except ProducerHung as hung:
            self._replace(str(hung))
            raise TransactionAborted(f"{hung}; the producer is replaced") from None
        except KafkaException as exc:  # a replacement could not start: again next time
            raise TransactionAborted(f"starting a new producer: {kafka_reason(exc)}") from exc

    def _commit(self, producer: Producer, hops: Sequence[Hop],
                offsets: Mapping[Partition, int]) -> None:
        try:
            if self._state == "committing":  # the batch in doubt, brought again
                self._step("commit_transaction", producer.commit_transaction, self._step_s)
                self._state = "ready"
                return
            if self._state != "ready":
                self._abort(producer)
            producer.begin_transaction()
            self._state = "open"
            for hop in hops:
                self._produce(producer, hop)
            if offsets:
                self._step("send_offsets_to_transaction", producer.send_offsets_to_transaction,
                           [TopicPartition(topic, partition, offset)
                            for (topic, partition), offset in offsets.items()],
                           self._consumer.consumer_group_metadata(), self._step_s)
            self._state = "committing"
            self._step("commit_transaction", producer.commit_transaction, self._step_s)
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
            self._abort(producer)
            raise TransactionAborted(kafka_reason(exc)) from exc

    def _step(self, name: str, call: Callable[..., _Result], *args: Any) -> _Result:
        """``call(*args)`` on a helper thread; ``ProducerHung`` if it has not returned
        ``HUNG_GRACE_S`` after its own timeout (the last of ``args``)."""
        wait_s = float(args[-1]) + self._grace_s
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append((True, call(*args)))
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                outcome.append((False, exc))

        helper = threading.Thread(target=run, name=f"txn-{name}", daemon=True)
        helper.start()
        helper.join(wait_s)
        if not outcome:
            raise ProducerHung(f"{name} did not return within {wait_s:.0f} s")
        returned, value = outcome[0]
        if not returned:
            raise value
        return value  # type: ignore[no-any-return]

    def _replace(self, why: str) -> None:
        """Give up the producer; the next ``commit`` starts a new one with the same id, which
        fences it and aborts its open transaction (its hung call is left to fail on that
        fencing)."""
        LOG.warning("transactions: %s (librdkafka issue 5456); replacing the producer", why)
        self.replaced += 1
        self._state = "ready"
        self._producer = None

    def close(self) -> None:
        if self._producer is None:
            return
        try:
            if self._state != "ready":
                self._abort(self._producer)
        except (BrokerError, TransactionAborted, ProducerHung) as exc:
            LOG.warning("%s; the broker aborts it after transaction.timeout.ms", exc)
        finally:
            close = getattr(self._producer, "close", None)  # confluent-kafka >= 2.13
            if close is not None:
                close()

    @staticmethod
    def _produce(producer: Producer, hop: Hop) -> None:
        wire: list[tuple[str, str | bytes | None]] = list(hop.headers)
        while True:
            try:
                producer.produce(hop.topic, value=hop.value, key=hop.key, headers=wire)
                return
            except BufferError:
                producer.poll(0.05)  # local queue full: let it drain, then retry

    def _abort(self, producer: Producer) -> None:
        """Abort the open transaction (its records are purged or marked aborted).

        Raises ``TransactionAborted`` while the abort is still under way (it is finished at
        the next call), ``BrokerError`` if it cannot be done at all.
        """
        self._state = "aborting"
        try:
            self._step("abort_transaction", producer.abort_transaction, self._step_s)
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
