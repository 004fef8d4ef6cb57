"""The poll loop of ``clinic-events run``: consume, gate by due time, dispatch, commit.

One consumer reads the main topic and every retry tier. On the poll thread, every record of
a retry tier is checked against its due time with the pure ``due_gate`` (values are decoded
later, by whoever processes the record): the first record of a partition that is not yet
due pauses that partition and seeks back to it, so the head of the partition is fetched
again when it is due. Because a tier has one fixed delay, the head is always the next
record due, and nothing behind it is delayed for longer than its own delay. The loop's poll
timeout is the time to the earliest resume, so an idle wait costs no CPU, and other
partitions and the main topic keep flowing.

Records that may run go to the lanes (bounded concurrency, one key at a time). Their fates
come back on a queue. Offsets advance strictly in order per partition and only over durable
fates. How a hop (a record republished to a retry tier or the DLQ) and its source offset
become durable depends on ``transactions``:

* with them (exactly-once hops), workers leave hops in a ``HopOutbox``; the poll thread
  takes them, and commits them with the offsets they settle in one Kafka transaction: at
  once when there are hops, else every ``OFFSETS_EVERY_S``. A crash before the commit
  leaves neither the hop (readers see committed records only) nor the offset, so the next
  owner processes the source record as if for the first time, and never gives an event a
  second fate. A transaction the broker aborts is tried again, less what this instance no
  longer owns;
* without them (at-least-once), a hop's fate counts when the producer's ack arrives; only
  then is its offset stored, and librdkafka auto-commits stored offsets.

On revoke the runner finishes in-flight work for the revoked partitions (bounded), commits,
and forgets their paused state; on stop it drains, flushes, commits and closes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter

from consumer.errors import ClinicEventsError, DedupStoreError
from consumer.observability.telemetry import EventOutcome, Telemetry
from consumer.pipeline.breaker import BreakerStatus, OutageBreaker
from consumer.pipeline.broker import (
    BrokerError,
    ConsumerPort,
    Partition,
    ProducerPort,
    StatusBoard,
    TransactionAborted,
    TransactionInDoubt,
    Transactions,
)
from consumer.pipeline.flood_guard import DeadLetterGuard, Halt
from consumer.pipeline.lanes import InlineLane, LaneFailure, Lanes
from consumer.pipeline.notifier import Notifier
from consumer.pipeline.offsets import OffsetBook, TopicPartitionKey
from consumer.pipeline.ordering import EntityOrder
from consumer.pipeline.outbox import AckedHops, Hop, HopOutbox, HopSender
from consumer.pipeline.outcome_buffer import LingerWatch, PendingOutcomes
from consumer.pipeline.outcome_log import (
    OUTCOME_LEVEL,
    OutcomeSummary,
    log_outcome,
    outcome_logging_enabled,
)
from consumer.pipeline.ownership import Ownership
from consumer.pipeline.pauses import PausedPartitions
from consumer.pipeline.records import Duplicate, Fate, Held, InboundRecord, Republished
from consumer.pipeline.undelivered import CHECK_INTERVAL_S, SeekBacks
from retry_topics.clock import Clock
from retry_topics.due_gate import Ready, due_gate
from retry_topics.policy import RetryPolicy, RetryTier, tier_labels
from retry_topics.routing import DeadLetter, RetryTo
from retry_topics.system_state import RECOVERED, RESTATE_MS, Condition, SystemState

LOG = logging.getLogger("clinic_events.runner")
_TOPIC_OF = attrgetter("topic")
_EVENT_ID_OF = attrgetter("event_id")
BATCH_SIZE = 500
IDLE_POLL_S = 0.25
OUTCOME_WAIT_S = 0.05
OFFSETS_EVERY_S = 1.0  # how often a transaction commits offsets when no hop is waiting
# A fenced commit succeeds at the next try, after the rebalance, and one in doubt once the
# broker is back; transactions failing for this long are refused for good (a hop to a topic
# the broker will not take, say).
TROUBLED_LIMIT_S = 300.0


class FatalError(ClinicEventsError, RuntimeError):
    """Processing cannot go on safely (a republish was refused, a lane died)."""


class Runner:
    """Owns the consumer and producer for the lifetime of ``run``."""

    def __init__(self, *, consumer: ConsumerPort, producer: ProducerPort, policy: RetryPolicy,
                 lanes_factory: Callable[[HopSender], Lanes | InlineLane],
                 outcomes: PendingOutcomes, clock: Clock, telemetry: Telemetry,
                 max_in_flight: int = 5000, drain_timeout_s: float = 30.0,
                 breaker: OutageBreaker | None = None,
                 guard: DeadLetterGuard | None = None,
                 status: StatusBoard | None = None, instance: str = "",
                 notifier: Notifier | None = None,
                 ownership: Ownership | None = None,
                 transactions: Transactions | None = None,
                 ordering: EntityOrder | None = None) -> None:
        self._consumer = consumer
        self._producer = producer
        self._policy = policy
        self._outcomes = outcomes
        self._clock = clock
        self._telemetry = telemetry
        self._max_in_flight = max_in_flight
        self._drain_timeout_s = drain_timeout_s
        self._book = OffsetBook()
        self._paused = PausedPartitions()
        self._seek_backs = SeekBacks()
        self._undelivered_checked_at = float("-inf")  # clock.monotonic() of the last check
        self._throttled = False  # back-pressure holds every partition (max_in_flight)
        self._main_held: set[TopicPartitionKey] = set()  # main partitions over their share
        self._breaker = breaker
        self._guard = guard
        self._system_held = False  # the downstream is down, or dead letters are halted
        self._held: list[InboundRecord] = []  # waiting out an outage or a halt, in order
        self._told_halt = False
        self._status = status
        self._instance = instance
        self._stated: SystemState | None = None
        self._notifier = notifier
        self._noted: Condition = "ok"  # the condition the notifier was last told of
        self._assigned: set[TopicPartitionKey] = set()
        self._ownership = ownership or Ownership()
        self._acks: list[tuple[Republished, str | None]] = []
        self._acks_lock = threading.Lock()
        self._transactions = transactions
        self._ordering = ordering  # parked keys: chained events leave once durable
        self._outbox = HopOutbox() if transactions is not None else None
        self._unsent: list[Hop] = []  # taken from the outbox, not committed yet
        self._settled: dict[TopicPartitionKey, int] = {}  # offsets not committed yet
        self._committed_at = clock.monotonic()
        self._in_doubt: tuple[list[Hop], dict[TopicPartitionKey, int]] | None = None
        self._troubled = 0  # transactions aborted or in doubt in a row
        self._troubled_since = 0.0  # clock.monotonic() of the first of them
        self._stop = threading.Event()
        self._hurry = False
        self._drained = False  # the shutdown drain ran: closing's revoke need not drain again
        self._fatal: BaseException | None = None
        self._lane_failures: set[str] = set()  # causes logged: every lane tends to hit the same
        self.stats: Counter[str] = Counter()
        self._summary = OutcomeSummary(clock.monotonic())
        self._linger_watch = LingerWatch(outcomes)
        self._lanes = lanes_factory(
            self._outbox if self._outbox is not None
            else AckedHops(producer, self._on_republished))
        self._tier_by_topic = {tier.topic: tier for tier in (*policy.tiers, *policy.drain_tiers)}
        self._tier_labels = tier_labels(policy)

    @property
    def assignment(self) -> frozenset[TopicPartitionKey]:
        """The (topic, partition) pairs this instance owns right now."""
        return frozenset(self._assigned)

    @property
    def downstream(self) -> BreakerStatus:
        """The downstream breaker's state (closed when there is no breaker)."""
        return self._breaker.status() if self._breaker is not None else BreakerStatus(False)

    @property
    def halt(self) -> Halt | None:
        """Why dead letters are halted, if they are."""
        return self._guard.halt if self._guard is not None else None

    @property
    def held(self) -> int:
        """Events waiting out an outage or a halt (their offsets unstored)."""
        return len(self._held)

    @property
    def waiting(self) -> frozenset[TopicPartitionKey]:
        """The retry partitions paused until their head record is due."""
        return self._paused.held()

    def stop(self, *, hurry: bool = False) -> None:
        """Ask the loop to finish (signal handlers call this).

        It drains first: every record already handed to the lanes is finished, for at most
        the drain timeout. ``hurry`` (an operator's second signal) finishes only the handler
        calls in progress; records still queued in the lanes are left uncommitted, so they
        are redelivered after a restart.
        """
        if hurry:
            self._hurry = True
            self._lanes.discard_pending()
        self._stop.set()

    def run(self) -> None:
        """Consume until stopped; raise FatalError if processing could not go on safely."""
        if self._notifier is not None:
            self._notifier.start()
        self._consumer.subscribe(list(self._policy.consumed_topics), self)
        self._linger_watch.start()
        try:
            while not self._stop.is_set() and self._fatal is None:
                self._service()
                self._watch_the_system()
                self._summary.tick(self._clock.monotonic())
                room = self._apply_backpressure()
                records = self._consumer.consume(max(1, min(BATCH_SIZE, room)),
                                                 self._poll_timeout_s())
                if records:
                    if not self._chains_refreshed():
                        break  # before anything could store their positions
                    self._accept(records)
                if self._clock.monotonic() - self._undelivered_checked_at >= CHECK_INTERVAL_S:
                    self._step_over_undelivered(self._assigned)
                if self._ordering is not None and self._ordering.unconfirmed:
                    self._ordering.confirm_durable(self._consumer.committed)
        finally:
            try:
                self._shutdown()
            finally:
                if self._notifier is not None:
                    self._notifier.close()  # sends the last digest, within a few seconds
        if self._fatal is not None:
            raise FatalError(str(self._fatal)) from self._fatal

    # -- the loop's steps -------------------------------------------------------------------

    def _chains_refreshed(self) -> bool:
        """Take in other instances' parked keys before consumed records are viewed; False
        (the loop ends, the records untracked, so consumed again after a restart) if the
        store cannot be read."""
        if self._ordering is None:
            return True
        try:
            self._ordering.consumed()
        except Exception as exc:
            LOG.error("could not read parked keys", exc_info=exc)
            self._fatal = self._fatal or exc
            return False
        return True

    def _accept(self, records: list[InboundRecord]) -> None:
        """Hold back records not yet due, track and dispatch the rest (decoded later).

        Runs once per consumed record, so the loop reads everything it needs into locals and
        tracks offsets once per partition per batch.
        """
        runnable: list[InboundRecord] = []
        tracked: dict[TopicPartitionKey, list[int]] = {}
        now = self._clock.now_ms()
        paused, assigned = self._paused, self._assigned
        tier_by_topic = self._tier_by_topic
        # A batch holds runs of records from one partition: look a partition up once a run.
        tp: TopicPartitionKey = ("", -1)
        offsets: list[int] = []
        tier: RetryTier | None = None
        wanted = False
        generation = 0
        seek_backs = self._seek_backs
        sought_back = False  # the run's partition awaits its head after a seek back
        for record in records:
            if record.partition != tp[1] or record.topic != tp[0]:
                tp = (record.topic, record.partition)
                tier = tier_by_topic.get(tp[0])
                offsets = tracked.setdefault(tp, [])
                # behind a paused head (re-fetched after resume), or revoked: skipped
                wanted = tp not in paused and tp in assigned
                generation = self._ownership.generation(tp)
                sought_back = bool(seek_backs) and tp in seek_backs
            if sought_back:
                seek_backs.delivered(tp, record.offset)
                sought_back = tp in seek_backs
            if not wanted:
                continue
            if tier is not None:
                gate = due_gate(record.headers.due_at_ms, now, tier.delay_ms)
                if not isinstance(gate, Ready):
                    self._pause_until(tp, record.offset, now + gate.ms)
                    wanted = False  # the rest of this partition's run waits behind it
                    continue
            offsets.append(record.offset)
            record.generation = generation
            runnable.append(record)
        for partition_key, consumed in tracked.items():
            if consumed:
                self._book.track(partition_key, consumed)
        if runnable:
            self._dispatch(runnable)

    def _dispatch(self, runnable: list[InboundRecord]) -> None:
        """Hand records to the lanes, which may process some on this thread at once.

        Processing turns every ``Exception`` into a fate or a lane failure, so what escapes
        here is a ``BaseException`` (a ``KeyboardInterrupt``, say): the records it was
        processing can never finish, and a drain waiting for them would wait out its whole
        timeout. So it stops as after a second signal: only calls already in progress on
        lane threads finish, and unfinished records are redelivered after a restart.
        """
        try:
            self._lanes.dispatch(runnable)
        except BaseException:
            self.stop(hurry=True)
            raise

    def _pause_until(self, tp: TopicPartitionKey, head_offset: int, due_at_ms: int) -> None:
        self._consumer.pause([tp])
        self._consumer.seek(tp, head_offset)
        self._seek_backs.sought(tp, head_offset)
        self._paused.hold(tp, due_at_ms)

    def _resume_due(self) -> None:
        if not self._paused:
            return
        due = self._paused.take_due(self._clock.now_ms())
        if due and not self._all_held():
            self._consumer.resume(due)

    def _poll_timeout_s(self) -> float:
        """Until the earliest paused head is due, at most ``IDLE_POLL_S``; while workers
        have events in hand, at most ``OUTCOME_WAIT_S``, so an outcome they hand back is
        recorded (and its offset stored) within about a tenth of a second, not when the
        next record happens to arrive."""
        wait = self._paused.wait_s(self._clock.now_ms(), IDLE_POLL_S)
        if wait > OUTCOME_WAIT_S and self._unfinished(None):
            return OUTCOME_WAIT_S
        return wait

    def _apply_backpressure(self) -> int:
        """Hold fetching while too many records are in flight; fetch again below half.

        Two limits. First attempts (the main topic) are held at the lanes' ``in_flight_limit``:
        ``max_in_flight``, or less when the handler is slow (about a second of work), so a
        slow downstream never builds minutes of queued work. Retry tiers are held only at
        ``max_in_flight``: a retry record is fetched when it is due, and must not wait
        behind first attempts (the lanes also take it before them). Returns how many more
        records may be taken now.
        """
        in_flight = self._book.in_flight()
        ceiling = self._max_in_flight
        limit = self._lanes.in_flight_limit(ceiling)
        hold_all = in_flight >= (ceiling // 2 if self._throttled else ceiling)
        if hold_all != self._throttled:
            self._throttled = hold_all
            self._hold(list(self._assigned), self._all_held())
        share = self._share_main(in_flight, limit)
        if share is None:  # every main partition is held: only retry records come in
            return ceiling - in_flight
        return min(limit - in_flight, share)

    def _share_main(self, in_flight: int, limit: int) -> int | None:
        """Share the lanes' limit among the main partitions with work; hold those at their
        share. Returns the share, or None when every main partition is held.

        Why: librdkafka drops a paused partition's prefetched records and fetches it again
        at the back of its queue, and otherwise hands records out in the order it fetched
        them, a partition's chunk at a time. Holding the whole main topic at the limit let
        the partition at the queue's head fill the room at every resume while the others
        stood still for minutes. Near the limit (half of it in flight or more), each main
        partition with records in flight or waiting gets an equal share of the limit: one
        that reaches it is held until it is down to half of it, which moves the next
        partition's records to the head of the queue. A lone busy partition's share is the
        whole limit. Far from the limit every partition fetches.
        """
        main = self._partitions(tiers=False)
        if in_flight < limit // 2:
            self._release_main(list(self._main_held))
            return limit
        try:
            waiting = self._consumer.backlog(main)
        except BrokerError as exc:
            LOG.debug("could not read the main partitions' backlog: %s", exc)
            waiting = {}
        counts = {tp: self._book.in_flight(tp) for tp in main}
        busy = sum(1 for tp in main
                   if counts[tp] or waiting.get(tp, 0) or tp in self._main_held)
        share = max(1, limit // max(1, busy))
        held = [tp for tp in main if tp not in self._main_held and counts[tp] >= share]
        self._main_held.update(held)
        if held and not self._all_held():
            self._consumer.pause(held)
        self._release_main([tp for tp in self._main_held if counts.get(tp, 0) <= share // 2])
        if main and len(self._main_held) >= len(main):
            return None
        return share

    def _release_main(self, partitions: list[TopicPartitionKey]) -> None:
        if not partitions:
            return
        self._main_held.difference_update(partitions)
        if not self._all_held():
            self._consumer.resume(partitions)

    def _partitions(self, *, tiers: bool) -> list[TopicPartitionKey]:
        """The assigned partitions of the retry tiers, or of the main topic."""
        return [tp for tp in self._assigned if (tp[0] in self._tier_by_topic) == tiers]

    def _all_held(self) -> bool:
        """Every partition is held: back-pressure at ``max_in_flight``, an outage, a halt."""
        return self._throttled or self._system_held

    def _hold(self, partitions: list[TopicPartitionKey], hold: bool) -> None:
        """Pause ``partitions``, or resume those neither waiting for a due head nor over
        their share."""
        if hold:
            self._consumer.pause(partitions)
        else:
            self._consumer.resume([tp for tp in partitions
                                   if tp not in self._paused and tp not in self._main_held])

    def _watch_the_system(self) -> None:
        """Hold everything while the downstream is down or dead letters are halted; probe
        the downstream with one waiting event at a time; go on when it answers.

        While the breaker is open and no event waits (a rebalance took them away), fetching
        goes on: the next events wait without a call, and one of them is the probe.
        """
        halted = self._guard is not None and self._guard.halted
        outage = self._breaker is not None and self._breaker.is_open
        if halted and not self._told_halt:
            self._told_halt = True
            halt = self._guard.halt if self._guard is not None else None
            LOG.error("dead letters halted: %s; every partition is held and nothing more is "
                      "dead-lettered until the consumer is restarted (the events not decided "
                      "are processed then)", halt.reason if halt else "")
        self._state_condition(halted, outage)
        hold = halted or (outage and bool(self._held))
        if hold != self._system_held:
            self._system_held = hold
            self._hold(list(self._assigned), self._all_held())
        if halted or not self._held:
            return
        if outage:
            if self._breaker is not None and self._breaker.probe_due():
                probe = self._held.pop(0)
                probe.probe = True
                self._dispatch([probe])
            return
        records, self._held = self._held, []
        LOG.warning("downstream available again: %d waiting event(s) go on", len(records))
        for record in records:
            record.probe = False
        self._dispatch(records)

    def _service(self, wait_s: float = 0.0) -> None:
        """Serve lane results and hops; store offsets that advanced (or commit them, with
        the hops that settle them, when transactions are on)."""
        self._producer.serve(0)
        advanced: dict[TopicPartitionKey, int] = {}
        self._finish_lane_results(advanced, wait_s)
        if self._outbox is not None:
            self._take_hops(advanced)
        else:
            self._finish_acked(advanced)
        if advanced:
            self._store_offsets(advanced)
        if self._transactions is not None and (
                self._in_doubt is not None or any(self._settles(hop) for hop in self._unsent)
                or (self._settled and self._clock.monotonic() - self._committed_at
                    >= OFFSETS_EVERY_S)):
            self._commit()
        self._resume_due()

    def _finish_acked(self, advanced: dict[TopicPartitionKey, int]) -> None:
        """Complete the hops the broker acknowledged (at-least-once)."""
        with self._acks_lock:
            acks, self._acks = self._acks, []
        for fate, error in acks:
            if error is not None:
                self._fatal = self._fatal or FatalError(
                    f"broker refused a record republished to {fate.destination.topic}: {error}")
                continue
            self._note_durable(fate)
            record = fate.record
            self._complete((record.topic, record.partition), (record.offset,), advanced)

    def _take_hops(self, advanced: dict[TopicPartitionKey, int]) -> None:
        """Take the workers' hops for the next transaction, completing their records now:
        the offsets the transaction commits then include the records its hops settle.
        Hops of partitions no longer owned are dropped, never produced."""
        for hop in self._outbox.take() if self._outbox is not None else ():
            record = hop.fate.record
            if not self._ownership.owns(record):
                self._drop_hop(hop)
                continue
            self._unsent.append(hop)
            self._complete((record.topic, record.partition), (record.offset,), advanced)

    def _drop_hop(self, hop: Hop) -> None:
        """Forget a hop of a partition this instance lost: its new owner decides afresh."""
        record = hop.fate.record
        if hop.fate.kind == "dead_lettered" and record.event_id is not None:
            self._outcomes.unstage_dead_lettered(record.event_id)
        self.stats["dropped"] += 1

    def _step_over_undelivered(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Store idle partitions' positions past offsets never delivered (transaction markers).

        See ``consumer.pipeline.undelivered`` for why and when this is safe.
        """
        self._undelivered_checked_at = self._clock.monotonic()
        if self._fatal is not None:
            return  # the loop may have stopped between a consume and tracking its records
        idle = [tp for tp in partitions
                if tp in self._assigned and tp not in self._paused
                and tp not in self._seek_backs and self._book.in_flight(tp) == 0]
        if not idle:
            return
        try:
            positions = self._consumer.positions(idle)
        except BrokerError as exc:
            LOG.debug("could not read consumer positions: %s", exc)
            return
        advanced = {tp: position for tp, position in positions.items()
                    if self._book.step_over(tp, position)}
        if advanced:
            self._store_offsets(advanced)

    def _finish_lane_results(self, advanced: dict[TopicPartitionKey, int], wait_s: float) -> None:
        results = self._lanes.results
        fates: list[Fate] = []
        first = True
        while True:
            try:
                result = results.get(timeout=wait_s) if first and wait_s else results.get_nowait()
            except queue.Empty:
                break
            first = False
            if isinstance(result, LaneFailure):
                self._lane_failed(result.error)
                continue
            fates.extend(result)
        if fates:
            self._finish_many(fates, advanced)

    def _lane_failed(self, error: BaseException) -> None:
        """Stop on a lane's failure; log each distinct cause once, with its traceback.

        Why once: a store or a library that fails fails every lane that calls it, and 16
        identical tracebacks hide the one line that says what happened.
        """
        self._fatal = self._fatal or error
        cause = f"{type(error).__name__}: {error}"
        if cause in self._lane_failures:
            LOG.debug("another worker lane failed: %s", cause)
            return
        self._lane_failures.add(cause)
        LOG.error("a worker lane failed", exc_info=error)

    def _finish_many(self, fates: list[Fate], advanced: dict[TopicPartitionKey, int]) -> None:
        """Record delivered outcomes in one write, then count, log and complete the fates.

        Per pass, not per record, where possible: one loop gathers the ids, counts and
        offsets; nothing is completed unless the write succeeded.
        """
        counts: Counter[tuple[EventOutcome, str]] = Counter()
        completed: dict[TopicPartitionKey, list[int]] = {}
        delivered: list[InboundRecord] = []
        undecided = [fate for fate in fates if fate.kind in ("held", "dropped")]
        if undecided:
            held = [fate for fate in undecided if fate.kind == "held"]
            if held:
                self._hold_back(held)
            fates = [fate for fate in fates if fate.kind not in ("held", "dropped")]
        # Fates come in runs of one partition (a lane's chunk keeps consumption order):
        # look the partition's list up once a run.
        run: tuple[str, int] = ("", -1)
        offsets: list[int] = []
        for fate in fates:
            record = fate.record
            if record.partition != run[1] or record.topic != run[0]:
                run = (record.topic, record.partition)
                offsets = completed.setdefault(run, [])
            offsets.append(record.offset)
            if fate.kind == "delivered":
                delivered.append(record)
            elif isinstance(fate, Duplicate | Republished):
                counts[(fate.kind, record.topic)] += 1
        for topic, count in Counter(map(_TOPIC_OF, delivered)).items():
            counts[("delivered", topic)] = count
        try:
            self._outcomes.record_delivered(
                [eid for eid in map(_EVENT_ID_OF, delivered) if eid is not None])
            if self._ordering is not None:  # only now: a follower may go once this is durable
                self._ordering.settle(fates)
        except Exception as exc:
            LOG.error("could not record delivered outcomes", exc_info=exc)
            self._fatal = self._fatal or exc
            return
        if outcome_logging_enabled(OUTCOME_LEVEL["delivered"]):
            for fate in fates:
                log_outcome(fate.kind, fate.record)
        for (kind, topic), count in counts.items():
            self.stats[kind] += count
            self._summary.note(kind, count)
            self._telemetry.count_event(kind, tier=self._tier_labels.get(topic, "main"),
                                        count=count)
        for tp, offsets in completed.items():
            self._complete(tp, offsets, advanced)

    def _state_condition(self, halted: bool, outage: bool, *, stopping: bool = False) -> None:
        """Tell the status board when the condition changes, and again every
        ``RESTATE_MS`` while it is not ``ok`` (a stopping instance states ``ok``: it no
        longer holds anything); tell the notifier when it changes (not when stopping)."""
        if self._status is None and self._notifier is None:
            return
        now = self._clock.now_ms()
        condition: Condition = "ok"
        since, reason = now, ""
        if halted and not stopping and self._guard is not None and self._guard.halt:
            condition, reason = "halted", self._guard.halt.reason
        elif outage and not stopping and self._breaker is not None:
            downstream = self._breaker.status()
            condition, reason = "outage", downstream.reason
            since = downstream.since_ms or now
        elif not stopping and self._stated is not None and self._stated.condition == "outage":
            reason = RECOVERED
        if condition != self._noted and self._notifier is not None and not stopping:
            self._noted = condition
            self._notifier.condition(SystemState(
                instance=self._instance, condition=condition, since_ms=since, reason=reason,
                stated_at_ms=now, waiting=len(self._held)))
        if self._status is None:
            return
        last = self._stated
        if last is not None and last.condition == condition and (
                condition == "ok" or now - last.stated_at_ms < RESTATE_MS):
            return
        if last is None and condition == "ok" and not stopping:
            return  # nothing to say yet: a healthy instance states nothing until it is not
        if last is not None and last.condition == condition:
            since = last.since_ms
        self._stated = SystemState(instance=self._instance, condition=condition, since_ms=since,
                                   reason=reason, stated_at_ms=now, waiting=len(self._held))
        self._status.state(self._stated)

    def _hold_back(self, held: list[Held]) -> None:
        """Keep held events, in order, to go on when the breaker closes; a probe that found
        the downstream still down goes back to the front."""
        was_open = bool(self._held) or self._system_held
        probes = [fate.record for fate in held if fate.record.probe]
        waiting = [fate.record for fate in held if not fate.record.probe]
        for record in probes:
            record.probe = False
        self._held = [*probes, *self._held, *waiting]
        if not was_open and self._breaker is not None and self._breaker.is_open:
            status = self._breaker.status()
            LOG.warning("downstream unavailable: %s; holding every partition, probing with "
                        "one waiting event at most every %d s", status.reason,
                        max(1, round(self._breaker.probe_cap_ms() / 1000)))

    def _note_durable(self, fate: Republished) -> None:
        """A hop is durable: record a dead letter's outcome, then tell, count and log it.

        If the dedup store fails to record it, the run stops, naming the store; the hop is
        told, counted and logged all the same (it is in the DLQ), and later hops are not
        recorded (each would wait on the failed store again). A restart confirms their
        chain links from the committed offsets (``EntityOrder.confirm_durable``).
        """
        if not isinstance(self._fatal, DedupStoreError):
            try:
                self._record_durable(fate)
            except DedupStoreError as exc:
                self._fatal = self._fatal or exc
        self._announce_durable(fate)

    def _record_durable(self, fate: Republished) -> None:
        """A dead letter's outcome, and its link in its key's chain, in the dedup store."""
        record = fate.record
        if fate.kind == "dead_lettered" and record.event_id is not None:
            self._outcomes.record_dead_lettered(record.event_id)
            if self._ordering is not None:
                self._ordering.dead_lettered(fate)  # held in its chain, or released

    def _announce_durable(self, fate: Republished) -> None:
        """Tell the notifier of a dead letter; count and log the hop."""
        record = fate.record
        destination = fate.destination
        if self._notifier is not None and isinstance(destination, DeadLetter):
            self._notifier.dead_lettered(
                reason=destination.reason, error_class=fate.error_class,
                event_type=record.stated_identity()[1], clinic_id=record.clinic_id)
        key = f"retried:{destination.tier.index}" \
            if isinstance(destination, RetryTo) and fate.kind == "retried" else fate.kind
        self.stats[fate.kind] += 1
        self._summary.note(fate.kind)
        self._telemetry.count_event(fate.kind, tier=self._tier_labels.get(record.topic, "main"))
        if key != fate.kind:
            self.stats[key] += 1
        log_outcome(fate.kind, record, error_class=fate.error_class,
                    destination=destination.topic, behind=fate.behind)

    def _complete(self, tp: TopicPartitionKey, offsets: Sequence[int],
                  advanced: dict[TopicPartitionKey, int]) -> None:
        """Complete records of ``tp``; note the next offset to store if it advanced."""
        moved = self._book.complete(tp, offsets)
        if moved is not None:
            advanced[tp] = moved

    def _store_offsets(self, advanced: dict[TopicPartitionKey, int]) -> None:
        offsets = {tp: offset for tp, offset in advanced.items() if tp in self._assigned}
        if not offsets:
            return
        if self._transactions is not None:
            self._settled.update(offsets)  # committed by the next transaction
            return
        try:
            self._consumer.store_offsets(offsets)
        except BrokerError as exc:
            LOG.warning("could not store offsets (partition revoked?): %s", exc)

    def _on_republished(self, fate: Republished, error: str | None) -> None:
        """Producer callback (runs inside producer.poll on the poll thread, or in flush)."""
        with self._acks_lock:
            self._acks.append((fate, error))

    # -- rebalancing and shutdown -----------------------------------------------------------

    def on_assign(self, partitions: list[Partition]) -> None:
        """Take the partitions on, fetching unless back-pressure holds them.

        librdkafka keeps an application's pause on a partition across a revoke and a later
        assignment of the same partition to the same client. A retry partition that was
        waiting for its head when a rebalance took it away would come back paused, with no
        due time left to resume it (``on_revoke`` forgets it): its records would wait until
        the process restarted. So every assigned partition is resumed here, or paused while
        back-pressure holds it (see ``_apply_backpressure``).
        """
        self._assigned.update(partitions)
        self._ownership.claim(partitions)
        held = partitions if self._all_held() else []
        if held:
            self._consumer.pause(held)
        if len(held) < len(partitions):
            self._consumer.resume([tp for tp in partitions if tp not in held])
        LOG.info("assigned %d partitions", len(partitions))

    def on_revoke(self, partitions: list[Partition]) -> None:
        revoked = set(partitions)
        for tp in revoked:
            self._paused.forget(tp)  # never resume a partition that is going away
        if not self._drained:  # at shutdown the drain has run already (and said what is left)
            self._drain(revoked, self._drain_timeout_s)
        self._step_over_undelivered(revoked)
        self._commit()
        self._forget(revoked)
        LOG.info("revoked %d partitions", len(partitions))

    def on_lost(self, partitions: list[Partition]) -> None:
        self._forget(set(partitions))
        LOG.warning("lost %d partitions", len(partitions))

    def _forget(self, partitions: set[TopicPartitionKey]) -> None:
        self._ownership.release(partitions)
        self._held = [r for r in self._held if (r.topic, r.partition) not in partitions]
        for tp in partitions:
            self._paused.forget(tp)
            self._seek_backs.forget(tp)
            self._main_held.discard(tp)
            self._book.forget(tp)
            self._assigned.discard(tp)

    def _drain(self, partitions: set[TopicPartitionKey] | None, timeout_s: float) -> None:
        """Finish in-flight records (of ``partitions``, or all) within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._fatal is None:
            if self._unfinished(partitions) == 0:
                break
            if self._hurry and self._lanes.idle():
                break  # queued chunks were discarded: nothing more will finish
            self._producer.serve(0.01)
            self._service(wait_s=0.05)
        self._service()
        pending = self._unfinished(partitions)
        if pending:
            LOG.warning("%d records still in flight when the drain ended; they will be "
                        "redelivered (at-least-once)", pending)
        held = [r for r in self._held
                if partitions is None or (r.topic, r.partition) in partitions]
        if held:
            LOG.warning("%d event(s) waiting out the outage or the halt are left undecided; "
                        "they are processed again at the next start", len(held))

    def _unfinished(self, partitions: set[TopicPartitionKey] | None) -> int:
        """Records in flight (of ``partitions``, or all) that may still finish: not those
        held for an outage or a halt, which wait for a probe, or for a restart."""
        in_flight = sum(self._book.in_flight(tp) for tp in (partitions or self._book.tracked()))
        held = sum(1 for r in self._held
                   if partitions is None or (r.topic, r.partition) in partitions)
        return in_flight - held

    def _commit(self) -> None:
        if self._transactions is not None:
            self._commit_transaction(self._transactions)
            return
        try:
            self._consumer.commit()
        except BrokerError as exc:
            LOG.warning("commit failed: %s", exc)

    def _settles(self, hop: Hop) -> bool:
        """Whether the next transaction commits an offset past the hop's source record."""
        record = hop.fate.record
        return record.offset < self._settled.get((record.topic, record.partition), -1)

    def _commit_transaction(self, transactions: Transactions) -> None:
        """Commit the offsets settled since the last commit, and the hops they settle, in
        one transaction; then those hops' fates count.

        A hop whose source offset cannot be committed yet (an earlier record of its
        partition is still in a worker's hands) waits for a later transaction: committed
        without it, a kill would leave the hop in its tier and the source record to be
        processed again, a second hop. Aborted, the transaction is tried again at the next
        pass with what this instance still owns; in doubt (its commit timed out), the same
        batch is brought again until the broker says whether it committed. Either way the
        poll thread goes on meanwhile: a rebalance (which may be why the commit failed) is
        served by the next ``consume``.
        """
        if self._in_doubt is not None:
            hops, offsets = self._in_doubt
        else:
            owned = []
            for hop in self._unsent:
                if self._ownership.owns(hop.fate.record):
                    owned.append(hop)
                else:
                    self._drop_hop(hop)
            offsets = {tp: offset for tp, offset in self._settled.items()
                       if tp in self._assigned}
            self._unsent, self._settled = owned, offsets
            hops = [hop for hop in owned if self._settles(hop)]
            if not offsets:
                return
        try:
            transactions.commit(hops, offsets)
        except TransactionInDoubt as exc:
            self._note_commit_trouble("in doubt", exc)
            self._in_doubt = (hops, offsets)
            return
        except TransactionAborted as exc:
            self._note_commit_trouble("aborted", exc)
            self._in_doubt = None
            return
        except BrokerError as exc:
            self._fatal = self._fatal or FatalError(f"cannot commit hops and offsets: {exc}")
            return
        if self._troubled:
            LOG.info("transactions commit again, after %d failed", self._troubled)
            self._troubled = 0
        self._in_doubt = None
        committed = {id(hop) for hop in hops}
        self._unsent = [hop for hop in self._unsent if id(hop) not in committed]
        self._settled = {tp: offset for tp, offset in self._settled.items()
                         if offset > offsets.get(tp, -1)}
        self._committed_at = self._clock.monotonic()
        for hop in hops:
            self._note_durable(hop.fate)

    def _note_commit_trouble(self, what: str, error: BrokerError) -> None:
        """Say once that transactions fail; stop the run if they fail for too long."""
        self._troubled += 1
        now = self._clock.monotonic()
        if self._troubled == 1:
            self._troubled_since = now
            LOG.warning("a transaction was %s (%s); trying again", what, error)
        elif now - self._troubled_since > TROUBLED_LIMIT_S:
            self._fatal = self._fatal or FatalError(
                f"no transaction committed for {TROUBLED_LIMIT_S:.0f} s ({self._troubled} "
                f"tries); the last was {what}: {error}")

    def _shutdown(self) -> None:
        self._drain(None, self._drain_timeout_s)
        self._drained = True
        if self._stated is not None:
            self._state_condition(False, False, stopping=True)
        self._producer.flush(self._drain_timeout_s)
        self._service()
        self._step_over_undelivered(self._assigned)
        self._commit()
        self._consumer.close()
        self._summary.tick(self._clock.monotonic(), final=True)
        self._lanes.stop()
        self._linger_watch.stop()
        self._producer.close()
        if self._transactions is not None:
            self._transactions.close()
