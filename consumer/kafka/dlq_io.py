"""Kafka I/O of the ``dlq`` commands: reading the DLQ, replaying it exactly once, auditing.

**Reading.** A command captures the DLQ's high watermarks when it starts and reads only up to
them, so it terminates even while the consumer keeps dead-lettering. ``list`` and ``show``
read from the low watermark and never commit.

**Replaying.** ``replay`` reads from the committed position of its own consumer group
(``<kafka.group_id>.dlq-replay`` unless ``--group`` is given). That position means
*examined*: records a run's filter did not match are passed too, so a later run with other
filters does not see them again; another ``--group`` gives an independent pass. A partition
or offset range limits which part of the DLQ a run passes (the offsets before
``--from-offset`` included); other partitions keep their position.

Every republished record and the DLQ offsets it advances are committed **in one Kafka
transaction** (a transactional producer: idempotent, ``acks=all``). Before each commit the
producer is flushed, so offsets are committed only after every delivery report arrived
without error; the commit is synchronous, every :data:`COMMIT_EVERY` records or
:data:`COMMIT_INTERVAL_S`, and before a rate-limited run waits. A run killed at any point
leaves both (records and offsets) or neither: the next run uses the same ``transactional.id``,
which aborts the leftover transaction, and read-committed readers (the librdkafka default,
hence the consumer; Java clients need ``isolation.level=read_committed``) never see aborted
copies. So each DLQ record is republished once in total, however often the replay is
interrupted. A run asked to stop (``stop_requested``: the command's SIGINT and SIGTERM
handlers) stops after the record in progress and commits what it republished. Every run that
is not a dry run ends by writing a JSON audit record to ``<main>.audit``, also when it is
interrupted or fails; a run refuses to start without one.
A missing DLQ, or a ``--partition`` it does not have, stops a run before anything else (no
transaction, no audit record): nothing was examined.

**An unreachable broker** fails the first request, the DLQ's metadata, after
:data:`TIMEOUT_S` with ``consumer.errors.KafkaUnreachable``. Meanwhile librdkafka logs the
same connection failure every few milliseconds; ``consumer.kafka.client_log.ClientLog`` passes each
distinct line on once and counts the repeats.
"""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from consumer.config.settings import Settings
from consumer.dedup.store import DedupStore, open_dedup_store
from consumer.errors import ClinicEventsError, KafkaUnreachable
from consumer.events.codec import EventCodec
from consumer.kafka.client_log import ClientLog
from consumer.kafka.clients import (
    build_consumer,
    build_producer,
    kafka_reason,
    message_headers,
)
from consumer.observability.telemetry import Telemetry
from consumer.ops.dlq.model import (
    DlqFilter,
    DlqFilterError,
    DlqRecord,
    OffsetRange,
    Replay,
    ReplayTally,
    Skip,
    check_partition,
    decide_replay,
    iso,
    parse_dlq_record,
    plan_ranges,
)

COMMIT_EVERY = 10
COMMIT_INTERVAL_S = 1.0
EXAMINED_COMMIT_EVERY = 500
READ_BATCH = 100
STALL_TIMEOUT_S = 60.0
STOP_CHECK_S = 0.1  # how often a rate-limited wait looks whether a stop was requested
TIMEOUT_S = 30.0

Decision = Replay | Skip | None
"""What a replay did with one examined record; ``None``: it did not match the filter."""


class DlqIoError(ClinicEventsError):
    """The DLQ could not be read or a replay could not be committed."""


@contextmanager
def _kafka_failures() -> Iterator[None]:
    """A client error leaving ``scan`` or ``replay`` becomes a ``DlqIoError``, so callers
    never handle the client's own exceptions."""
    try:
        yield
    except KafkaException as exc:
        raise DlqIoError(f"Kafka: {kafka_reason(exc)}") from exc


class DlqReader:
    """Reads one DLQ topic between offsets, without joining its consumer group."""

    def __init__(self, settings: Settings, topic: str, group_id: str) -> None:
        self.topic = topic
        self._servers = settings.kafka.bootstrap_servers
        self._codec = EventCodec()
        self._log = ClientLog()
        self._consumer = build_consumer(settings, **{
            "group.id": group_id, "enable.auto.commit": False, "enable.partition.eof": True,
            "logger": self._log})

    def __enter__(self) -> DlqReader:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._consumer.close()
        finally:
            self._log.close()

    def topic_exists(self, topic: str) -> bool:
        return self._partitions(topic) is not None

    def _partitions(self, topic: str) -> list[int] | None:
        """The partitions of ``topic`` as the broker reports them; None if it does not exist."""
        found = self._consumer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
        return None if found is None or found.error is not None else sorted(found.partitions)

    def watermarks(self) -> dict[int, tuple[int, int]]:
        """Low and high watermark of every partition, read from the broker now.

        The first request of every command: failing, it means Kafka cannot be reached.
        """
        try:
            partitions = self._partitions(self.topic)
        except KafkaException as exc:
            raise KafkaUnreachable(
                f"cannot reach Kafka at {self._servers} to read {self.topic}: "
                f"{kafka_reason(exc)} (waited {TIMEOUT_S:.0f} s)") from exc
        if not partitions:
            raise DlqIoError(f"topic {self.topic} does not exist (`clinic-events topics ensure`)")
        marks = {}
        for partition in partitions:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=TIMEOUT_S, cached=False)
            marks[partition] = (low, high)
        return marks

    def committed(self, partitions: list[int]) -> dict[int, int | None]:
        """The group's committed position per partition (None: nothing committed yet)."""
        asked = [TopicPartition(self.topic, p) for p in partitions]
        return {tp.partition: tp.offset if tp.offset >= 0 else None
                for tp in self._consumer.committed(asked, timeout=TIMEOUT_S)}

    def group_metadata(self) -> Any:
        return self._consumer.consumer_group_metadata()

    def read(self, ranges: list[OffsetRange],
             stop_requested: Callable[[], bool] = lambda: False) -> Iterator[list[DlqRecord]]:
        """Records of ``ranges`` in chunks, in offset order per partition, until the end
        offsets or until ``stop_requested`` says so."""
        ends = {r.partition: r.end for r in ranges}
        self._consumer.assign([TopicPartition(self.topic, r.partition, r.start) for r in ranges])
        progress_at = time.monotonic()
        while ends and not stop_requested():
            chunk = [record for message in self._consumer.consume(READ_BATCH, timeout=0.5)
                     if (record := self._take(message, ends)) is not None]
            if chunk:
                progress_at = time.monotonic()
                yield chunk
            elif time.monotonic() - progress_at > STALL_TIMEOUT_S:
                raise DlqIoError(f"no progress reading {self.topic} for {STALL_TIMEOUT_S:.0f} s")
        self._consumer.unassign()

    def _take(self, message: Message, ends: dict[int, int]) -> DlqRecord | None:
        partition, offset = int(message.partition() or 0), int(message.offset() or 0)
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                raise DlqIoError(f"reading {self.topic}: {error.str()}")
            ends.pop(partition, None)  # reached the high watermark: nothing more to read
            return None
        end = ends.get(partition)
        if end is None or offset >= end:
            return None
        if offset >= end - 1:
            del ends[partition]
        stamp_type, stamp = message.timestamp()
        return parse_dlq_record(
            partition=partition, offset=offset, key=message.key(), value=message.value(),
            timestamp_ms=stamp if stamp_type and stamp >= 0 else None,
            headers=message_headers(message), codec=self._codec)


def scan(settings: Settings, topic: str, flt: DlqFilter) -> Generator[DlqRecord, None, None]:
    """Every DLQ record matching ``flt``, from the low to the high watermark seen at start."""
    with _kafka_failures(), \
            DlqReader(settings, topic, f"{settings.kafka.group_id}.dlq-inspect") as reader:
        watermarks = reader.watermarks()
        check_partition(flt, topic, watermarks)
        for chunk in reader.read(plan_ranges(watermarks, flt)):
            yield from (record for record in chunk if flt.matches(record))


@dataclass(slots=True)
class _Batch:
    """The open transaction: what it holds, to be counted once it commits."""

    opened_at: float
    positions: dict[int, int] = field(default_factory=dict)
    decisions: list[tuple[int, int, Decision]] = field(default_factory=list)
    replays: int = 0


class ReplayPublisher:
    """Republishes DLQ records and commits their DLQ offsets in the same transaction."""

    def __init__(self, settings: Settings, dlq_topic: str, group: str,
                 telemetry: Telemetry | None = None) -> None:
        self._topic = dlq_topic
        self._telemetry = telemetry or Telemetry()
        self._log = ClientLog()
        self._producer = build_producer(settings, **{
            "transactional.id": f"clinic-events.dlq-replay.{group}.{dlq_topic}",
            "allow.auto.create.topics": False, "logger": self._log})
        self._batch: _Batch | None = None
        self._failures: list[str] = []
        self._topics: set[str] = set()
        self.tally = ReplayTally()
        self.offsets: dict[int, list[int]] = {}  # partition -> [first, last] examined, committed
        try:
            self._producer.init_transactions(TIMEOUT_S)  # also aborts a killed run's leftovers
        except KafkaException:
            self.close()
            raise

    def close(self) -> None:
        try:
            self._producer.close()
        finally:
            self._log.close()

    def add(self, record: DlqRecord, decision: Decision) -> None:
        """Republish (if ``decision`` says so) and mark ``record`` examined, uncommitted."""
        if self._batch is None:
            self._producer.begin_transaction()
            self._batch = _Batch(opened_at=time.monotonic())
        if isinstance(decision, Replay):
            self.check_topic(decision.topic)
            with self._telemetry.replay_span(decision.topic, record.event_id, decision.headers):
                headers: list[tuple[str, str | bytes | None]] = [
                    *self._telemetry.headers_with_traceparent(decision.headers)]
                self._producer.produce(decision.topic, key=decision.key, value=decision.value,
                                       headers=headers, on_delivery=self._delivered)
            self._batch.replays += 1
        self._batch.positions[record.partition] = record.offset + 1
        self._batch.decisions.append((record.partition, record.offset, decision))

    def due(self) -> bool:
        batch = self._batch
        return batch is not None and (
            batch.replays >= COMMIT_EVERY or len(batch.decisions) >= EXAMINED_COMMIT_EVERY
            or time.monotonic() - batch.opened_at >= COMMIT_INTERVAL_S)

    def commit(self, group_metadata: Any) -> None:
        """Wait for every delivery report, then commit records and DLQ offsets atomically."""
        batch = self._batch
        if batch is None:
            return
        if self._producer.flush(TIMEOUT_S) or self._failures:
            self.abort()
            raise DlqIoError(f"republishing failed: {'; '.join(self._failures) or 'timeout'}")
        self._producer.send_offsets_to_transaction(
            [TopicPartition(self._topic, p, o) for p, o in sorted(batch.positions.items())],
            group_metadata, TIMEOUT_S)
        self._producer.commit_transaction(TIMEOUT_S)
        self._batch = None
        for partition, offset, decision in batch.decisions:
            self.tally.count(decision)
            self.offsets.setdefault(partition, [offset, offset])[1] = offset

    def abort(self) -> None:
        if self._batch is not None:
            self._batch = None
            self._producer.abort_transaction(TIMEOUT_S)

    def write_audit(self, topic: str, key: str, audit: dict[str, Any]) -> None:
        self.check_topic(topic)
        self._producer.begin_transaction()
        self._producer.produce(topic, key=key.encode(), value=json.dumps(audit).encode(),
                               on_delivery=self._delivered)
        self._producer.commit_transaction(TIMEOUT_S)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(f"{message.topic()}: {error.str()}")

    def check_topic(self, topic: str) -> None:
        """Refuse a topic that does not exist (never let a typo create one)."""
        if topic not in self._topics:
            found = self._producer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
            if found is None or found.error is not None:
                raise DlqIoError(f"target topic {topic} does not exist")
            self._topics.add(topic)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayRequest:
    """What an operator asked ``dlq replay`` to do.

    ``target`` may be neither the DLQ nor the audit topic: replaying into the DLQ would hand
    the records to the next replay run again, and the audit topic holds audit records only.
    """

    dlq_topic: str
    audit_topic: str
    group: str
    filter: DlqFilter
    target: str | None = None
    max_replays: int = 3
    force: bool = False
    dry_run: bool = False
    rate: float | None = None
    actor: str | None = None

    def __post_init__(self) -> None:
        for topic, what in ((self.dlq_topic, "the DLQ itself"),
                            (self.audit_topic, "the audit topic")):
            if self.target == topic:
                raise DlqFilterError(f"--to: {topic} is {what}; replay to a topic the "
                                     "consumer reads (default: each record's original topic)")


@dataclass(slots=True)
class ReplayRun:
    """Progress of one replay: counts (committed ones for a real run), how it ended
    (``completed``, ``interrupted`` or ``failed``) and the audit record once written."""

    tally: ReplayTally = field(default_factory=ReplayTally)
    offsets: dict[int, list[int]] = field(default_factory=dict)
    outcome: str = "completed"
    audit: dict[str, Any] | None = None


def replay(settings: Settings, request: ReplayRequest, *,
           on_start: Callable[[int], None] = lambda total: None,
           on_record: Callable[[DlqRecord, Decision], None] = lambda r, d: None,
           run: ReplayRun | None = None,
           stop_requested: Callable[[], bool] = lambda: False,
           telemetry: Telemetry | None = None) -> ReplayRun:
    """Replay the DLQ records matching the request, from the group's position to the end
    offsets seen at start; ``on_start`` gets the number of records to examine.

    Once ``stop_requested`` returns true the replay stops after the record in progress,
    commits, writes the audit record and returns with ``outcome`` ``interrupted``. ``run``
    (the caller's, if given) holds the committed counts also when the replay ends in an
    exception, a KeyboardInterrupt included, so the caller can report them. ``telemetry``
    makes a ``send`` span per republished record, in the record's own trace.
    """
    run = run if run is not None else ReplayRun()
    started = _now_iso()
    with _kafka_failures(), DlqReader(settings, request.dlq_topic, request.group) as reader:
        # The DLQ first: without it (or the partition asked for) nothing can be replayed, and
        # that, not a missing audit topic, is what the operator has to fix.
        watermarks = reader.watermarks()
        check_partition(request.filter, request.dlq_topic, watermarks)
        if request.target is not None and not reader.topic_exists(request.target):
            # an operator's option, like a filter: a usage error, found before anything is sent
            raise DlqFilterError(f"--to: topic {request.target} does not exist (a replay "
                                 "never creates one)")
        publisher = None if request.dry_run else ReplayPublisher(
            settings, request.dlq_topic, request.group, telemetry)
        outcome, ended = "failed", False
        try:
            if publisher is not None:
                publisher.check_topic(request.audit_topic)  # no replay that cannot be audited
            # Committed positions only after init_transactions aborted a killed run's leftovers.
            ranges = plan_ranges(watermarks, request.filter, reader.committed(list(watermarks)))
            on_start(sum(r.end - r.start for r in ranges))
            stopped = _replay_ranges(settings, request, reader, ranges, publisher, run,
                                     on_record, stop_requested)
            outcome, ended = ("interrupted" if stopped else "completed"), True
        except KeyboardInterrupt:
            outcome = "interrupted"
            raise
        finally:
            run.outcome = outcome
            if publisher is not None:
                _finish(publisher, request, run, outcome, started, report_errors=ended)
    return run


def _replay_ranges(settings: Settings, request: ReplayRequest, reader: DlqReader,
                   ranges: list[OffsetRange], publisher: ReplayPublisher | None,
                   run: ReplayRun, on_record: Callable[[DlqRecord, Decision], None],
                   stop_requested: Callable[[], bool]) -> bool:
    """Examine and replay ``ranges``, then commit; True if ``stop_requested`` ended it early."""
    store = None if request.force else open_dedup_store(
        settings.dedup.store, settings.dedup.ttl_ms, read_only=True)
    try:
        stopped = _examine(request, reader, ranges, store, publisher, run, on_record,
                           stop_requested)
        if publisher is not None:
            publisher.commit(reader.group_metadata())
        return stopped
    except BaseException:
        if publisher is not None:
            publisher.abort()
        raise
    finally:
        if store is not None:
            store.close()


def _examine(request: ReplayRequest, reader: DlqReader, ranges: list[OffsetRange],
             store: DedupStore | None, publisher: ReplayPublisher | None, run: ReplayRun,
             on_record: Callable[[DlqRecord, Decision], None],
             stop_requested: Callable[[], bool]) -> bool:
    """Decide on every record of ``ranges`` and hand it to ``publisher`` (a dry run counts it
    in ``run``); True if a stop was requested before the end. A record waiting for its
    ``--rate`` slot when the stop comes is left for the next run."""
    next_send = time.monotonic()
    for chunk in reader.read(ranges, stop_requested):
        matching = [request.filter.matches(r) for r in chunk]
        ids = sorted({eid for r, m in zip(chunk, matching, strict=True) if m
                      if (eid := r.event_id)})
        outcomes = store.lookup(ids) if store is not None and ids else {}
        for record, matches in zip(chunk, matching, strict=True):
            if stop_requested():
                return True
            decision = decide_replay(
                record, target=request.target, max_replays=request.max_replays,
                outcome=outcomes.get(record.event_id or ""), force=request.force,
            ) if matches else None
            if isinstance(decision, Replay) and request.rate and publisher is not None:
                if (delay := next_send - time.monotonic()) > 0:
                    publisher.commit(reader.group_metadata())  # no transaction while idle
                    if _wait(delay, stop_requested):
                        return True
                next_send = max(next_send, time.monotonic()) + 1 / request.rate
            if publisher is None:
                run.tally.count(decision)
            else:
                publisher.add(record, decision)
                if publisher.due():
                    publisher.commit(reader.group_metadata())
            on_record(record, decision)
    return stop_requested()


def _wait(seconds: float, stop_requested: Callable[[], bool]) -> bool:
    """Wait ``seconds``, or less if a stop is requested meanwhile; True if one was."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stop_requested():
            return True
        time.sleep(min(left, STOP_CHECK_S))
    return stop_requested()


def _finish(publisher: ReplayPublisher, request: ReplayRequest, run: ReplayRun,
            outcome: str, started: str, *, report_errors: bool) -> None:
    """Record what was committed in ``run`` and in the audit topic; close the producer.

    A failure to write the audit record is raised if ``report_errors`` (the run ended
    without an exception of its own), else the run's own exception is the one reported.
    """
    run.tally, run.offsets = publisher.tally, publisher.offsets
    audit = {
        "action": "dlq.replay", "user": _user(), "actor": request.actor,
        "started_at": started, "finished_at": _now_iso(), "outcome": outcome,
        "dlq_topic": request.dlq_topic, "target_topic": request.target or "(original topic)",
        "group": request.group, "filters": request.filter.describe(),
        "max_replays": request.max_replays, "force": request.force, "rate": request.rate,
        "counts": run.tally.as_dict(),
        "dlq_offsets": [{"partition": p, "from": first, "to": last}
                        for p, (first, last) in sorted(run.offsets.items())],
    }
    try:
        publisher.write_audit(request.audit_topic, request.group, audit)
        run.audit = audit
    except (KafkaException, DlqIoError):
        if report_errors:
            raise  # otherwise the error that ended the run is the one to report
    finally:
        publisher.close()


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _now_iso() -> str:
    return str(iso(time.time_ns() // 1_000_000))

