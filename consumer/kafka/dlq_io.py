"""Kafka I/O of the ``dlq`` commands: reading the DLQ, resolving it exactly once, auditing.

**Reading.** A command captures the DLQ's high watermarks when it starts and reads from the
low watermark up to them, so it terminates even while the consumer keeps dead-lettering. It
first reads the DLQ ledger (:mod:`consumer.kafka.dlq_ledger`), so every record comes with its
status: open, or replayed / discarded. ``list`` and ``show`` write nothing.

**Resolving.** ``replay`` republishes matching open records (to their original topic or
``--to``), ``discard`` only marks them; both write one ledger entry per record they resolve,
keyed by its DLQ coordinates, in the **same Kafka transaction** as the republished copy (a
transactional producer: idempotent, ``acks=all``). No consumer-group position is kept:
which records are done is the ledger's business, so a filtered run passes over nothing and a
later run, filtered or not, finds every record still open. A record a replay skips (replayed
too often, already delivered, no target) gets no entry and stays open. A replay takes along
the dead letters parked behind an event it replays, right after it, whatever the filter
(``consumer.ops.dlq.chains.ParkedFollowers``): the held head's followers are its key's
next events, and replaying the head alone would leave them stranded in the DLQ. With ``[ordering]
mode = "per_key"``, each committed discard also takes the record's dead-lettered link out of
its key's chain in the dedup store (``consumer.ops.dlq.chains``), so the key's later events
stop waiting for an event that will never come.

Before each commit the producer is flushed, so a transaction commits only after every
delivery report arrived without error; the commit is synchronous, every :data:`COMMIT_EVERY`
records or :data:`COMMIT_INTERVAL_S`, and before a rate-limited run waits. A run killed at
any point leaves both (copies and entries) or neither, and the next run's
``init_transactions`` aborts the leftovers; read-committed readers (the librdkafka default,
hence the consumer; Java clients need ``isolation.level=read_committed``) never see aborted
copies. A run started while another one of the same DLQ is running fences the older one
(``DlqFencedError``, see :mod:`consumer.kafka.dlq_ledger` for why this keeps every record
resolved at most once). So each DLQ record is republished once in total, however often
replays are interrupted or run side by side. A run asked to stop (``stop_requested``: the
command's SIGINT and SIGTERM handlers) stops after the record in progress and commits what it
resolved. Every run that is not a dry run ends by writing a JSON audit record to
``<main>.audit``, also when it is interrupted, fenced or fails; a run refuses to start
without the audit and ledger topics. A missing DLQ, or a ``--partition`` it does not have,
stops a run before anything else (no transaction, no audit record): nothing was examined.

**An unreachable broker** fails the first request, the DLQ's metadata, after
:data:`TIMEOUT_S` with ``consumer.errors.KafkaUnreachable``. Meanwhile librdkafka logs the
same connection failure every few milliseconds; ``consumer.kafka.client_log.ClientLog`` passes each
distinct line on once and counts the repeats.
"""

from __future__ import annotations

import dataclasses
import getpass
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from consumer.config.settings import Settings
from consumer.dedup.store import DedupStore, DedupStoreMissing, Outcome, open_dedup_store
from consumer.errors import DedupStoreError, DiscardedKeysStillHeld, KafkaUnreachable
from consumer.events.codec import EventCodec
from consumer.kafka.client_log import ClientLog
from consumer.kafka.clients import build_consumer, kafka_reason, message_headers
from consumer.kafka.dlq_ledger import (
    COMMIT_EVERY,
    COMMIT_INTERVAL_S,
    DlqFencedError,
    DlqIoError,
    LedgerWriter,
    read_ledger,
)
from consumer.observability.telemetry import Telemetry
from consumer.ops.dlq.chains import ParkedFollowers, release_discarded
from consumer.ops.dlq.ledger import DlqLedger, Resolution
from consumer.ops.dlq.model import (
    DEFAULT_MAX_REPLAYS,
    Decision,
    Discard,
    DlqFilter,
    DlqFilterError,
    DlqRecord,
    DlqTally,
    OffsetRange,
    Replay,
    check_partition,
    decide_discard,
    decide_replay,
    iso,
    parse_dlq_record,
    plan_ranges,
)

__all__ = [
    "COMMIT_EVERY", "COMMIT_INTERVAL_S", "Decision", "DiscardRequest", "DlqFencedError",
    "DlqIoError", "DlqReader", "ReplayRequest", "ReplayRun", "discard", "replay", "scan",
]

READ_BATCH = 100
STALL_TIMEOUT_S = 60.0
STOP_CHECK_S = 0.1  # how often a rate-limited wait looks whether a stop was requested
TIMEOUT_S = 30.0


@contextmanager
def _kafka_failures() -> Iterator[None]:
    """A client error leaving ``scan``, ``replay`` or ``discard`` becomes a ``DlqIoError``,
    so callers never handle the client's own exceptions."""
    try:
        yield
    except KafkaException as exc:
        raise DlqIoError(f"Kafka: {kafka_reason(exc)}") from exc


def _inspect_group(settings: Settings) -> str:
    """The group id the readers give librdkafka; they never join it or commit to it."""
    return f"{settings.kafka.group_id}.dlq-inspect"


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

    def read(self, ranges: list[OffsetRange], ledger: DlqLedger,
             stop_requested: Callable[[], bool] = lambda: False) -> Iterator[list[DlqRecord]]:
        """Records of ``ranges`` in chunks, in offset order per partition, until the end
        offsets or until ``stop_requested`` says so; each with its resolution in ``ledger``."""
        ends = {r.partition: r.end for r in ranges}
        self._consumer.assign([TopicPartition(self.topic, r.partition, r.start) for r in ranges])
        progress_at = time.monotonic()
        while ends and not stop_requested():
            chunk = [record for message in self._consumer.consume(READ_BATCH, timeout=0.5)
                     if (record := self._take(message, ends, ledger)) is not None]
            if chunk:
                progress_at = time.monotonic()
                yield chunk
            elif time.monotonic() - progress_at > STALL_TIMEOUT_S:
                raise DlqIoError(f"no progress reading {self.topic} for {STALL_TIMEOUT_S:.0f} s")
        self._consumer.unassign()

    def _take(self, message: Message, ends: dict[int, int],
              ledger: DlqLedger) -> DlqRecord | None:
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
            headers=message_headers(message), codec=self._codec,
            resolution=ledger.resolution(self.topic, partition, offset))


def scan(settings: Settings, topic: str, ledger_topic: str,
         flt: DlqFilter) -> Generator[DlqRecord, None, None]:
    """Every DLQ record matching ``flt``, from the low to the high watermark seen at start,
    with its resolution (a missing ledger topic: every record is open)."""
    with _kafka_failures(), DlqReader(settings, topic, _inspect_group(settings)) as reader:
        watermarks = reader.watermarks()
        check_partition(flt, topic, watermarks)
        ledger = read_ledger(settings, ledger_topic) or DlqLedger()
        for chunk in reader.read(plan_ranges(watermarks, flt), ledger):
            yield from (record for record in chunk if flt.matches(record))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayRequest:
    """What an operator asked ``dlq replay`` to do.

    ``target`` may be neither the DLQ, its ledger nor the audit topic: replaying into the
    DLQ would hand the records to the next replay again, and the other two hold their own
    records only.
    """

    dlq_topic: str
    ledger_topic: str
    audit_topic: str
    filter: DlqFilter
    target: str | None = None
    max_replays: int = DEFAULT_MAX_REPLAYS
    force: bool = False
    dry_run: bool = False
    rate: float | None = None
    actor: str | None = None

    def __post_init__(self) -> None:
        for topic, what in ((self.dlq_topic, "the DLQ itself"),
                            (self.ledger_topic, "the DLQ ledger"),
                            (self.audit_topic, "the audit topic")):
            if self.target == topic:
                raise DlqFilterError(f"--to: {topic} is {what}; replay to a topic the "
                                     "consumer reads (default: each record's original topic)")

    @property
    def action(self) -> Literal["replay", "discard"]:
        return "replay"


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscardRequest:
    """What an operator asked ``dlq discard`` to do: resolve matching open records for
    ``reason`` without replaying them."""

    dlq_topic: str
    ledger_topic: str
    audit_topic: str
    filter: DlqFilter
    reason: str
    dry_run: bool = False
    actor: str | None = None

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise DlqFilterError("--reason must say why the records are discarded")

    @property
    def action(self) -> Literal["replay", "discard"]:
        return "discard"


Request = ReplayRequest | DiscardRequest


@dataclass(slots=True)
class ReplayRun:
    """Progress of one replay or discard: counts (committed ones for a real run), the DLQ
    offsets examined, how it ended (``completed``, ``interrupted``, ``fenced`` or ``failed``),
    the audit record once written, and notes for the operator (what could not be checked)."""

    tally: DlqTally = field(default_factory=DlqTally)
    offsets: dict[int, list[int]] = field(default_factory=dict)
    outcome: str = "completed"
    audit: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def count(self, record: DlqRecord, decision: Decision) -> None:
        """Count one examined record (a resolved one once its transaction committed)."""
        self.tally.count(decision)
        span = self.offsets.setdefault(record.partition, [record.offset, record.offset])
        span[:] = [min(span[0], record.offset), max(span[1], record.offset)]


def replay(settings: Settings, request: ReplayRequest, *,
           on_start: Callable[[int], None] = lambda total: None,
           on_record: Callable[[DlqRecord, Decision], None] = lambda r, d: None,
           run: ReplayRun | None = None,
           stop_requested: Callable[[], bool] = lambda: False,
           telemetry: Telemetry | None = None) -> ReplayRun:
    """Replay the open DLQ records matching the request, up to the end offsets seen at start;
    ``on_start`` gets the number of records to examine.

    Once ``stop_requested`` returns true the replay stops after the record in progress,
    commits, writes the audit record and returns with ``outcome`` ``interrupted``. ``run``
    (the caller's, if given) holds the committed counts also when the replay ends in an
    exception, a KeyboardInterrupt included, so the caller can report them. ``telemetry``
    makes a ``send`` span per republished record, in the record's own trace.
    """
    return _resolve(settings, request, on_start, on_record, run, stop_requested, telemetry)


def discard(settings: Settings, request: DiscardRequest, *,
            on_start: Callable[[int], None] = lambda total: None,
            on_record: Callable[[DlqRecord, Decision], None] = lambda r, d: None,
            run: ReplayRun | None = None,
            stop_requested: Callable[[], bool] = lambda: False) -> ReplayRun:
    """Mark the open DLQ records matching the request resolved, as :func:`replay` would
    replay them (same stopping, counting and auditing), without republishing anything."""
    return _resolve(settings, request, on_start, on_record, run, stop_requested, None)


def _resolve(settings: Settings, request: Request, on_start: Callable[[int], None],
             on_record: Callable[[DlqRecord, Decision], None], run: ReplayRun | None,
             stop_requested: Callable[[], bool], telemetry: Telemetry | None) -> ReplayRun:
    run = run if run is not None else ReplayRun()
    started = _now_iso()
    with _kafka_failures(), \
            DlqReader(settings, request.dlq_topic, _inspect_group(settings)) as reader:
        # The DLQ first: without it (or the partition asked for) nothing can be resolved, and
        # that, not a missing audit topic, is what the operator has to fix.
        watermarks = reader.watermarks()
        check_partition(request.filter, request.dlq_topic, watermarks)
        target = request.target if isinstance(request, ReplayRequest) else None
        if target is not None and not reader.topic_exists(target):
            # an operator's option, like a filter: a usage error, found before anything is sent
            raise DlqFilterError(f"--to: topic {target} does not exist (a replay "
                                 "never creates one)")
        writer = None if request.dry_run else LedgerWriter(
            settings, request.dlq_topic, request.ledger_topic, telemetry)
        outcome, ended = "failed", False
        try:
            if writer is not None:  # nothing that cannot be recorded and audited
                writer.check_topic(request.ledger_topic)
                writer.check_topic(request.audit_topic)
            # Read only now: the writer's init_transactions has completed or fenced every
            # other run's transactions, so the ledger read here is the whole truth.
            ledger = read_ledger(settings, request.ledger_topic) or DlqLedger()
            ranges = plan_ranges(watermarks, request.filter)
            on_start(sum(r.end - r.start for r in ranges))
            stopped = _resolve_ranges(settings, request, reader, ranges, ledger, writer, run,
                                      on_record, stop_requested)
            outcome, ended = ("interrupted" if stopped else "completed"), True
        except KeyboardInterrupt:
            outcome = "interrupted"
            raise
        except DlqFencedError:
            outcome = "fenced"
            raise
        finally:
            run.outcome = outcome
            if writer is not None:
                _finish(writer, request, run, outcome, started, report_errors=ended)
    return run


def _resolve_ranges(settings: Settings, request: Request, reader: DlqReader,
                    ranges: list[OffsetRange], ledger: DlqLedger, writer: LedgerWriter | None,
                    run: ReplayRun, on_record: Callable[[DlqRecord, Decision], None],
                    stop_requested: Callable[[], bool]) -> bool:
    """Examine and resolve ``ranges``, then commit; True if ``stop_requested`` ended it early."""
    store = None if not isinstance(request, ReplayRequest) or request.force else \
        _outcome_store(settings, run)
    chains = _chain_store(settings, request, writer)
    try:
        stopped = _examine(request, reader, ranges, ledger, store, writer, run, on_record,
                           stop_requested, chains)
        if writer is not None:
            _committed(run, writer, chains)
        return stopped
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        for opened in (store, chains):
            if opened is not None:
                opened.close()


def _outcome_store(settings: Settings, run: ReplayRun) -> DedupStore | None:
    """The dedup store a replay looks outcomes up in (read-only), or None, noted on ``run``,
    when its SQLite file does not exist: the check is skipped, not made against an empty
    store created here (the consumer still skips events it recorded as delivered)."""
    try:
        return open_dedup_store(settings.dedup.store, settings.dedup.ttl_ms, read_only=True)
    except DedupStoreMissing as exc:
        run.notes.append(f"{exc}: whether events were delivered already was not checked "
                         "(the consumer still skips those it recorded as delivered)")
        return None


def _chain_store(settings: Settings, request: Request,
                 writer: LedgerWriter | None) -> DedupStore | None:
    """The dedup store a discard releases its records' chain links in (writable), or None:
    not a discard, a dry run, or ``[ordering] mode = "none"``. A SQLite file that does not
    exist is refused (``DedupStoreMissing``) before anything is discarded: releasing links
    in a new, empty store would leave the consumer's keys held."""
    if not isinstance(request, DiscardRequest) or writer is None or \
            not settings.ordering.per_key:
        return None
    return open_dedup_store(settings.dedup.store, settings.dedup.ttl_ms, create=False)


def _committed(run: ReplayRun, writer: LedgerWriter, chains: DedupStore | None = None) -> None:
    """Commit the open transaction and count what it resolved; discarded records then leave
    their keys' chains (only then: an uncommitted discard changed nothing)."""
    committed = writer.commit()
    for record, decision in committed:
        run.count(record, decision)
    if chains is not None:
        discarded = [record for record, decision in committed if isinstance(decision, Discard)]
        try:
            release_discarded(chains, discarded)
        except DedupStoreError as exc:
            raise DiscardedKeysStillHeld(
                f"{exc}; the discard of {len(discarded)} record(s) is committed, but their "
                "keys may still hold back their later events: the next dlq discard (on the "
                "command line or the review page) releases them once the store can be "
                "written") from exc


def _examine(request: Request, reader: DlqReader, ranges: list[OffsetRange],
             ledger: DlqLedger, store: DedupStore | None, writer: LedgerWriter | None,
             run: ReplayRun, on_record: Callable[[DlqRecord, Decision], None],
             stop_requested: Callable[[], bool], chains: DedupStore | None = None) -> bool:
    """Decide on every record of ``ranges`` and hand what resolves one to ``writer`` (a dry
    run counts it in ``run``); True if a stop was requested before the end. A record waiting
    for its ``--rate`` slot when the stop comes is left for the next run. A replay also
    decides on the open records parked behind an event it replayed (``followers``). A
    discard (``chains``) also releases the keys that records discarded earlier, selected or
    not, still hold: the store failed right after their discard committed."""
    next_send, user = time.monotonic(), _user()
    replaying = isinstance(request, ReplayRequest)
    rate = request.rate if isinstance(request, ReplayRequest) else None
    followers = ParkedFollowers()
    discarded_before: list[DlqRecord] = []
    for chunk in reader.read(ranges, ledger, stop_requested):
        if chains is not None and discarded_before:
            _release_left_held(run, chains, discarded_before)
        discarded_before = []
        matching = [request.filter.matches(r) for r in chunk]
        ids = sorted({eid for r, m in zip(chunk, matching, strict=True)
                      if (m or (replaying and r.parked_behind)) and r.resolution is None
                      if (eid := r.event_id)})
        outcomes = store.lookup(ids) if store is not None and ids else {}
        for record, matches in zip(chunk, matching, strict=True):
            if stop_requested():
                return True
            if chains is not None and record.resolution is not None and \
                    record.resolution.status == "discarded":  # whatever the filter selects
                discarded_before.append(record)
            follows = None if matches or not replaying else followers.head_of(record)
            decision = _decide(request, record, outcomes) \
                if matches or follows is not None else None
            if isinstance(decision, Replay) and follows is not None:
                decision = dataclasses.replace(decision, follows=follows)
            if replaying:
                followers.note(record, decision)
            if isinstance(decision, Replay) and rate and writer is not None:
                if (delay := next_send - time.monotonic()) > 0:
                    _committed(run, writer, chains)  # no transaction while idle
                    if _wait(delay, stop_requested):
                        return True
                next_send = max(next_send, time.monotonic()) + 1 / rate
            if writer is not None and isinstance(decision, Replay | Discard):
                writer.add(record, decision, _resolution(request, record, decision, user))
                if writer.due():
                    _committed(run, writer, chains)
            else:
                run.count(record, decision)
            on_record(record, decision)
    if chains is not None and discarded_before:
        _release_left_held(run, chains, discarded_before)
    return stop_requested()


def _release_left_held(run: ReplayRun, chains: DedupStore, discarded: list[DlqRecord]) -> None:
    """Release the keys of records discarded earlier that still hold them (the store failed
    right after their discard committed); the operator is told how many were."""
    if released := release_discarded(chains, discarded):
        run.notes.append(f"released the keys of {released} dead letter(s) discarded earlier, "
                         "which still held them (the dedup store had failed after their "
                         "discard)")


def _decide(request: Request, record: DlqRecord, outcomes: Mapping[str, Outcome]) -> Decision:
    if isinstance(request, DiscardRequest):
        return decide_discard(record, reason=request.reason)
    return decide_replay(record, target=request.target, max_replays=request.max_replays,
                         outcome=outcomes.get(record.event_id or ""), force=request.force)


def _resolution(request: Request, record: DlqRecord, decision: Replay | Discard,
                user: str) -> Resolution:
    """The ledger entry of ``record``: how, when, by whom and why it was resolved."""
    if isinstance(decision, Replay):
        return Resolution(status="replayed", at=_now_iso(), user=user, actor=request.actor,
                          target_topic=decision.topic, event_id=record.event_id,
                          forced=decision.forced)
    return Resolution(status="discarded", at=_now_iso(), user=user, actor=request.actor,
                      reason=decision.reason, event_id=record.event_id)


def _wait(seconds: float, stop_requested: Callable[[], bool]) -> bool:
    """Wait ``seconds``, or less if a stop is requested meanwhile; True if one was."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stop_requested():
            return True
        time.sleep(min(left, STOP_CHECK_S))
    return stop_requested()


def _finish(writer: LedgerWriter, request: Request, run: ReplayRun,
            outcome: str, started: str, *, report_errors: bool) -> None:
    """Record what was committed in the audit topic; close the producer.

    A failure to write the audit record is raised if ``report_errors`` (the run ended
    without an exception of its own), else the run's own exception is the one reported.
    """
    audit: dict[str, Any] = {
        "action": f"dlq.{request.action}", "user": _user(), "actor": request.actor,
        "started_at": started, "finished_at": _now_iso(), "outcome": outcome,
        "dlq_topic": request.dlq_topic, "ledger_topic": request.ledger_topic,
        "filters": request.filter.describe(),
    }
    if isinstance(request, ReplayRequest):
        audit.update(target_topic=request.target or "(original topic)",
                     max_replays=request.max_replays, force=request.force, rate=request.rate)
    else:
        audit["reason"] = request.reason
    audit.update(counts=run.tally.as_dict(request.action),
                 dlq_offsets=[{"partition": p, "from": first, "to": last}
                              for p, (first, last) in sorted(run.offsets.items())])
    try:
        writer.write_audit(request.audit_topic, request.dlq_topic, audit)
        run.audit = audit
    except (KafkaException, DlqIoError):
        if report_errors:
            raise  # otherwise the error that ended the run is the one to report
    finally:
        writer.close()


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _now_iso() -> str:
    return str(iso(time.time_ns() // 1_000_000))
