"""Kafka I/O of the DLQ ledger: reading which dead letters are resolved, and resolving them.

**Reading** (:func:`read_ledger`): a read-committed consumer reads the whole ledger topic
(compacted, one partition) from its beginning to its end, so the state of every DLQ record is
known before a command decides anything. Aborted writes are never seen.

**Writing** (:class:`LedgerWriter`): one transactional producer per DLQ topic,
``transactional.id = clinic-events.dlq-ledger.<dlq topic>``, shared by every ``dlq replay``
and ``dlq discard`` of that DLQ. Each republished record and its ledger entry go into the
same Kafka transaction, so a record is either republished *and* resolved, or neither.

**Why two runs never resolve a record twice.** ``init_transactions`` of a run (which happens
before the run reads the ledger) completes or aborts every transaction an earlier holder of
the same ``transactional.id`` left open, and fences that holder: any later produce, commit or
abort of it fails with ``PRODUCER_FENCED``. So when a run reads the ledger, every ledger
entry another run committed or will ever commit is either already there, or belongs to a
transaction that can no longer commit. A run's decisions therefore rest on a ledger nobody
else can change behind its back: if another run starts meanwhile, this one is fenced at its
next commit (its open transaction aborted, nothing of it visible) and stops with
:class:`DlqFencedError`; what it committed before stays committed and is in the ledger the
newer run read. A run killed at any point leaves its open transaction to be aborted by the
next run's ``init_transactions`` (or by the broker's transaction timeout).
"""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from consumer.config.settings import Settings
from consumer.errors import ClinicEventsError
from consumer.kafka.client_log import ClientLog
from consumer.kafka.clients import build_consumer, build_producer
from consumer.observability.telemetry import Telemetry
from consumer.ops.dlq.ledger import DlqLedger, Resolution, ledger_key
from consumer.ops.dlq.model import Decision, DlqRecord, Replay

COMMIT_EVERY = 10
COMMIT_INTERVAL_S = 1.0
READ_BATCH = 500
STALL_TIMEOUT_S = 60.0
TIMEOUT_S = 30.0
_FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                     KafkaError.INVALID_PRODUCER_EPOCH})


class DlqIoError(ClinicEventsError):
    """The DLQ or its ledger could not be read, or a replay or discard could not be
    committed."""


#: librdkafka's lines about this producer being fenced, which ``DlqFencedError`` reports.
_FENCING_LINE = re.compile(r"fenced by a newer instance|operation with an old epoch")


class DlqFencedError(DlqIoError):
    """Another ``dlq replay`` or ``dlq discard`` of the same DLQ started and took over."""


def fenced(exc: KafkaException) -> bool:
    """True if ``exc`` says a newer producer with our ``transactional.id`` fenced ours."""
    error = exc.args[0] if exc.args else None
    # After the fencing, calls fail with the producer's fatal error, which names it; a step
    # the fencing made fail (AddPartitionsToTxn under a commit) has a code of its own and
    # the fencing's text: "... Local: This instance has been fenced by a newer instance".
    return isinstance(error, KafkaError) and (
        error.code() in _FENCED or "fenced" in error.str().lower())


def read_ledger(settings: Settings, ledger_topic: str) -> DlqLedger | None:
    """Every committed entry of ``ledger_topic`` up to its end; None if it does not exist."""
    log = ClientLog()
    consumer = build_consumer(settings, **{
        "group.id": f"{settings.kafka.group_id}.dlq-inspect", "enable.auto.commit": False,
        "enable.partition.eof": True, "isolation.level": "read_committed", "logger": log})
    try:
        found = consumer.list_topics(ledger_topic, timeout=TIMEOUT_S).topics.get(ledger_topic)
        if found is None or found.error is not None or not found.partitions:
            return None
        ledger, ends = DlqLedger(), {}
        for partition in sorted(found.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(ledger_topic, partition), timeout=TIMEOUT_S, cached=False)
            if low < high:
                ends[partition] = (low, high)
        consumer.assign([TopicPartition(ledger_topic, p, low) for p, (low, _) in ends.items()])
        progress_at = time.monotonic()
        while ends:
            messages = consumer.consume(READ_BATCH, timeout=0.5)
            for message in messages:
                _take(message, ledger, ends, ledger_topic)
            if messages:
                progress_at = time.monotonic()
            elif time.monotonic() - progress_at > STALL_TIMEOUT_S:
                raise DlqIoError(f"no progress reading {ledger_topic} for "
                                 f"{STALL_TIMEOUT_S:.0f} s")
        return ledger
    finally:
        try:
            consumer.close()
        finally:
            log.close()


def _take(message: Message, ledger: DlqLedger, ends: dict[int, tuple[int, int]],
          topic: str) -> None:
    """Apply one ledger message; a partition is done at its end (transaction markers take
    offsets too, so the end is the EOF event, or the last offset before the high mark)."""
    partition = int(message.partition() or 0)
    error = message.error()
    if error is not None:
        if error.code() != KafkaError._PARTITION_EOF:
            raise DlqIoError(f"reading {topic}: {error.str()}")
        ends.pop(partition, None)
        return
    ledger.apply(message.key(), message.value())
    if partition in ends and int(message.offset() or 0) >= ends[partition][1] - 1:
        del ends[partition]


class LedgerWriter:
    """Republishes DLQ records and writes their ledger entries, in one transaction per batch."""

    def __init__(self, settings: Settings, dlq_topic: str, ledger_topic: str,
                 telemetry: Telemetry | None = None) -> None:
        self._dlq_topic, self._ledger_topic = dlq_topic, ledger_topic
        self._settings = settings
        self._telemetry = telemetry or Telemetry()
        self._log = ClientLog(reported=_FENCING_LINE)
        required: dict[str, Any] = {
            "transactional.id": f"clinic-events.dlq-ledger.{dlq_topic}",
            "allow.auto.create.topics": False, "logger": self._log}
        self._producer = build_producer(settings, **required)
        self._pending: list[tuple[DlqRecord, Decision]] = []
        self._opened_at: float | None = None
        self._failures: list[str] = []
        self._topics: set[str] = set()
        self.fenced = False
        try:
            with self._fencing():
                # completes or aborts what an earlier run left open, and fences that run
                self._producer.init_transactions(TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    @contextmanager
    def _fencing(self) -> Iterator[None]:
        try:
            yield
        except KafkaException as exc:
            if fenced(exc):
                self.fenced = True
                raise self._fenced_error() from exc
            raise
        except SystemError as exc:
            # confluent-kafka sets the fencing as the pending exception while flush() runs
            # the delivery callbacks; the callback's next call then fails with SystemError.
            # Under load flush() itself can fail so, with no exception at all: then the
            # delivery reports, or the producer's answer to an abort, tell.
            cause = exc.__cause__
            if (isinstance(cause, KafkaException) and fenced(cause)) or \
                    (cause is None and self._found_fenced()):
                self.fenced = True
                raise self._fenced_error() from cause or exc
            raise

    def _found_fenced(self) -> bool:
        """Whether this producer was fenced, asked after a call failed without saying why:
        a fenced producer refuses the abort with its fatal "fenced" error."""
        if self.fenced:
            return True
        try:
            self._producer.abort_transaction(TIMEOUT_S)
        except KafkaException as probe:
            return fenced(probe)
        self._pending, self._opened_at = [], None  # not fenced, and nothing of it is left
        return False

    def _fenced_error(self) -> DlqFencedError:
        return DlqFencedError(
            f"another dlq replay or discard of {self._dlq_topic} started and took over (this "
            "run was fenced); what this run committed stays committed, and the other run "
            "replays or discards the rest")

    def close(self) -> None:
        try:
            with warnings.catch_warnings():
                if self.fenced:  # its open transaction cannot be aborted: known, not news
                    warnings.simplefilter("ignore", RuntimeWarning)
                self._producer.close()
        finally:
            self._log.close()

    def add(self, record: DlqRecord, decision: Decision, resolution: Resolution) -> None:
        """Republish (if ``decision`` is a replay) and resolve ``record``, uncommitted."""
        with self._fencing():
            if self._opened_at is None:
                self._producer.begin_transaction()
                self._opened_at = time.monotonic()
            if isinstance(decision, Replay):
                self.check_topic(decision.topic)
                with self._telemetry.replay_span(decision.topic, record.event_id,
                                                 decision.headers):
                    headers: list[tuple[str, str | bytes | None]] = [
                        *self._telemetry.headers_with_traceparent(decision.headers)]
                    self._producer.produce(decision.topic, key=decision.key,
                                           value=decision.value, headers=headers,
                                           on_delivery=self._delivered)
            key = ledger_key(self._dlq_topic, record.partition, record.offset)
            self._producer.produce(self._ledger_topic, key=key.encode(),
                                   value=resolution.to_json(), on_delivery=self._delivered)
        self._pending.append((record, decision))

    def due(self) -> bool:
        opened = self._opened_at
        return opened is not None and (len(self._pending) >= COMMIT_EVERY
                                       or time.monotonic() - opened >= COMMIT_INTERVAL_S)

    def commit(self) -> list[tuple[DlqRecord, Decision]]:
        """Wait for every delivery report, then commit; what the transaction held."""
        if self._opened_at is None:
            return []
        with self._fencing():
            if self._producer.flush(TIMEOUT_S) or self._failures:
                self.abort()
                if self.fenced:  # the delivery reports said so
                    raise self._fenced_error()
                raise DlqIoError(f"republishing failed: {'; '.join(self._failures) or 'timeout'}")
            self._producer.commit_transaction(TIMEOUT_S)
        committed, self._pending, self._opened_at = self._pending, [], None
        return committed

    def abort(self) -> None:
        """Abort the open transaction, if any (a fenced producer's is aborted already)."""
        if self._opened_at is None:
            return
        self._pending, self._opened_at = [], None
        try:
            self._producer.abort_transaction(TIMEOUT_S)
        except KafkaException as exc:
            if not (self.fenced or fenced(exc)):
                raise
            # A delivery report does not always carry the fencing's own code (a failed
            # AddPartitionsToTxn reports its own); the refused abort does.
            self.fenced = True

    def write_audit(self, topic: str, key: str, audit: dict[str, Any]) -> None:
        """Append ``audit`` to the audit topic (without a transaction if this run was fenced:
        the fenced producer can write nothing more)."""
        value = json.dumps(audit).encode()
        if not self.fenced:
            self.check_topic(topic)
            try:
                with self._fencing():
                    self._producer.begin_transaction()
                    self._producer.produce(topic, key=key.encode(), value=value,
                                           on_delivery=self._delivered)
                    self._producer.commit_transaction(TIMEOUT_S)
                return
            except DlqFencedError:
                pass
        write_plain(self._settings, topic, key.encode(), value)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.fenced = self.fenced or error.code() in _FENCED
            self._failures.append(f"{message.topic()}: {error.str()}")

    def check_topic(self, topic: str) -> None:
        """Refuse a topic that does not exist (never let a typo create one)."""
        if topic not in self._topics:
            found = self._producer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
            if found is None or found.error is not None:
                raise DlqIoError(f"topic {topic} does not exist (`clinic-events topics ensure`)")
            self._topics.add(topic)


def write_plain(settings: Settings, topic: str, key: bytes, value: bytes) -> None:
    """Write one record to ``topic`` outside any transaction and wait for its ack."""
    log = ClientLog()
    required: dict[str, Any] = {"allow.auto.create.topics": False, "logger": log}
    producer = build_producer(settings, **required)
    failures: list[str] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error.str())

    try:
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
        if producer.flush(TIMEOUT_S) or failures:
            raise DlqIoError(f"writing to {topic} failed: {'; '.join(failures) or 'timeout'}")
    finally:
        try:
            producer.close()
        finally:
            log.close()
