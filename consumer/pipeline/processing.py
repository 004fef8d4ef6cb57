"""What happens to one record between "consumed" and "its fate is decided".

For each chunk of records a lane hands it (records of one lane, in consumption order):

0. decode the chunk's values (here, not on the poll thread: a chunk's events are then still
   in the CPU cache when they are handled, rather than a whole batch's);
1. look up every event id in the dedup store at once (one round trip per chunk);
2. skip events already delivered, and events already dead-lettered unless they come back
   through a DLQ replay (``clinic.replay-count`` > 0) or a forced replay;
3. call the handler inside a ``process <topic>`` span; after a failure the pure
   ``decide_after_failure`` says whether to call again in process (tenacity runs those
   retries, with the policy's backoff), or where the record goes: a ``Retry-After`` longer
   than a quick wait goes straight to a tier;
4. republish a failed record to the retry tier or DLQ decided, with the next hop's headers
   and a fresh ``traceparent`` from a ``send`` span;
4a. with ``[ordering] mode = "per_key"``, look up the chunk's keys' chains once
   (``pipeline.ordering``): a record whose key has an earlier event outstanding in a retry
   tier is *parked* (republished behind it without a handler call), and a record routed to
   a tier joins its key's chain before the hop is published;
5. stage each delivered outcome as its call ends (``PendingOutcomes``); the poll thread
   records them durably, once per pass, before it stores any of their offsets (and a
   ``LingerWatch`` records those a busy poll thread leaves waiting);
6. drop each record's decoded event as soon as its fate is decided (only ids, offsets and
   the raw bytes are needed afterwards).

A republished record is handed to a ``HopSender`` (``consumer.pipeline.outbox``): its fate
counts once the hop is acknowledged, or committed with its source offset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from opentelemetry.trace import Span
from tenacity import RetryCallState, Retrying, retry_if_exception_type
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from consumer.dedup.store import Outcome
from consumer.delivery.handlers import DeliveryContext, DeliveryHandler
from consumer.errors import HandlerError, PermanentError, TransientError
from consumer.events.codec import EventCodec, EventRecord
from consumer.events.identifying import identifying_values
from consumer.observability.telemetry import INVALID_SPAN, Telemetry
from consumer.pipeline.breaker import OutageBreaker
from consumer.pipeline.flood_guard import DeadLetterGuard
from consumer.pipeline.ordering import PARKED_ERROR_CLASS, ChunkChains, EntityOrder
from consumer.pipeline.outbox import Hop, HopSender
from consumer.pipeline.outcome_buffer import PendingOutcomes
from consumer.pipeline.ownership import Ownership
from consumer.pipeline.records import (
    Delivered,
    Dropped,
    Duplicate,
    Fate,
    Held,
    InboundRecord,
    Republished,
)
from retry_topics.classification import Classification, ExceptionRules, qualified_name
from retry_topics.clock import Clock
from retry_topics.headers import (
    DlqReason,
    Provenance,
    RecordHeaders,
    encode_headers,
    replay_forced,
)
from retry_topics.hops import next_hop_headers, parked_hop_headers
from retry_topics.ordering import FollowToDeadLetter, ParkBehind, park_tier, parked_source
from retry_topics.policy import RetryPolicy, tier_labels
from retry_topics.redaction import mask_values
from retry_topics.routing import (
    DeadLetter,
    RetryInProcess,
    RetryTo,
    Step,
    dead_letter_undecodable,
    decide_after_failure,
)


class stop_when(stop_base):  # noqa: N801 - named like tenacity's own stop strategies
    """A tenacity stop strategy from a predicate, so it composes with ``|``."""

    def __init__(self, predicate: Callable[[RetryCallState], bool]) -> None:
        self._predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._predicate(retry_state)


class wait_at_least_retry_after(wait_base):  # noqa: N801 - named like tenacity's waits
    """``base``, or the Retry-After of the failure if that is longer (both in seconds).

    Only a Retry-After that fits in one quick wait gets here: ``decide_after_failure``
    sends a record with a longer one to a tier instead.
    """

    def __init__(self, base: wait_base) -> None:
        self._base = base

    def __call__(self, retry_state: RetryCallState) -> float:
        failure = _failure_of(retry_state)
        hint = failure.retry_after_ms if isinstance(failure, TransientError) else None
        return max(self._base(retry_state), (hint or 0) / 1000)


def _failure_of(retry_state: RetryCallState) -> BaseException:
    """The exception of the attempt tenacity just finished (only failures are retried)."""
    outcome = retry_state.outcome
    failure = outcome.exception() if outcome is not None else None
    if failure is None:
        raise RuntimeError("tenacity asked about an attempt that did not fail")
    return failure


@dataclass(frozen=True, slots=True)
class Outage:
    """The step after a failure while the downstream breaker is open: wait it out."""


OUTAGE = Outage()


@dataclass(frozen=True, slots=True)
class Failure:
    """A handler failure, normalised."""

    classification: Classification
    error_class: str
    message: str
    retry_after_ms: int | None = None


class RecordProcessor:
    """Runs chunks of records through dedup, the handler, and routing."""

    def __init__(self, *, policy: RetryPolicy, handler: DeliveryHandler,
                 outcomes: PendingOutcomes, hops: HopSender, telemetry: Telemetry,
                 clock: Clock, rules: ExceptionRules, group_id: str,
                 codec: EventCodec | None = None, breaker: OutageBreaker | None = None,
                 guard: DeadLetterGuard | None = None,
                 ownership: Ownership | None = None,
                 ordering: EntityOrder | None = None) -> None:
        self._policy = policy
        self._handler = handler
        self._outcomes = outcomes
        self._hops = hops
        self._telemetry = telemetry
        self._clock = clock
        self._rules = rules
        self._group_id = group_id
        self._tier_labels = tier_labels(policy)
        self._quick_wait = wait_at_least_retry_after(policy.in_process.wait_strategy())
        self._codec = codec or EventCodec()
        self._breaker = breaker
        self._guard = guard
        self._ownership = ownership
        self._ordering = ordering
        self._abandoned = False

    def abandon(self) -> None:
        """Start no further record, in any chunk (an operator's second stop signal).

        The record in progress finishes; the rest of its chunk is left unfinished, so those
        records' offsets are never stored and they are redelivered after a restart.
        """
        self._abandoned = True

    def process_chunk(self, records: Sequence[InboundRecord]) -> list[Fate]:
        """Decide the fate of each record; republished ones are final only on ack."""
        return self.process_until(records, None, may_wait=True)[0]

    def process_until(self, records: Sequence[InboundRecord], deadline: float | None, *,
                      may_wait: bool = False) -> tuple[list[Fate], int]:
        """``process_chunk`` that stops after the first record finished past ``deadline``.

        ``deadline`` is on the clock's monotonic scale; returns the fates and how many
        records (a prefix of ``records``) were processed. Lets the poll thread run quick
        work itself without ever being held up for more than one handler call past it, and
        a lane thread report fates as they are decided rather than at the end of a long
        chunk. Unless it ``may_wait`` (lane threads may), nothing sleeps: a record whose
        first call failed and is due for quick retries ends the prefix, carrying that
        failure, so a lane thread makes the retries (the handler is still called exactly
        ``in_process_attempts`` times).
        """
        codec = self._codec
        for record in records:
            record.decode(codec)
        ids = [r.event_id for r in records if r.event_id is not None]
        known: dict[str, Outcome] = self._outcomes.lookup(ids) if ids else {}
        chains = self._ordering.view(records) if self._ordering is not None else None
        fates: list[Fate] = []
        answered = processed = 0
        for record in records:
            if self._abandoned:
                break
            fate = self._process_one(record, known, may_wait, chains)
            if fate is None:
                break  # handed over to a lane for its quick retries
            processed += 1
            # Nothing downstream reads the decoded event again: free it now, while it is
            # still in the CPU cache, rather than a whole batch later on the poll thread.
            record.event = None
            if fate.kind in ("delivered", "duplicate"):
                answered += 1
            if fate.kind == "delivered" and record.event_id is not None:
                known[record.event_id] = "delivered"
                self._outcomes.stage_one(record.event_id)  # as the call ends, not the chunk
            if not isinstance(fate, Republished):
                fates.append(fate)
            elif fate.kind == "dead_lettered" and record.event_id is not None:
                # a later copy of the event (in this chunk or the next) is a duplicate now,
                # not a second dead letter; the poll thread records it once acknowledged
                known[record.event_id] = "dead_lettered"
                self._outcomes.stage_dead_lettered(record.event_id)
            if deadline is not None and self._clock.monotonic() > deadline:
                break
        if answered and self._guard is not None:
            self._guard.note_delivered(answered)
        return fates, processed

    def _process_one(self, record: InboundRecord, known: dict[str, Outcome],
                     may_wait: bool, chains: ChunkChains | None = None) -> Fate | None:
        """``_decide`` inside the record's ``process`` span: one span per topic attempt.

        Without an SDK tracer no span is made: a record without a trace context is decided
        with no scope at all (the commonest case, once per record), one with a context has it
        made current (``process_span``). With one, a record whose
        first call failed where retries may not wait is handed to a lane with its span
        (``carried_span``): the quick retries there continue the same span, which ends with
        the attempt's fate.
        """
        telemetry = self._telemetry
        if not telemetry.tracing_live:
            if not record.traced:
                return self._decide(record, known, INVALID_SPAN, may_wait, chains)
            with telemetry.process_span(
                record.topic, record.partition, record.offset, record.key, record.raw_headers,
                record.event_id, record.attempt, self._group_id, traced=record.traced,
            ) as current:
                return self._decide(record, known, current, may_wait, chains)
        span = record.carried_span or telemetry.start_process_span(
            record.topic, record.partition, record.offset, record.key, record.raw_headers,
            record.event_id, record.attempt, self._group_id)
        record.carried_span = None
        with telemetry.current_span(span):
            fate = self._decide(record, known, span, may_wait, chains)
        if fate is None:
            record.carried_span = span  # handed over: the lane's retries go on in it
        else:
            span.end()
        return fate

    def _decide(self, record: InboundRecord, known: dict[str, Outcome],
                span: Span, may_wait: bool, chains: ChunkChains | None = None) -> Fate | None:
        """Skip, deliver or route ``record``; ``span`` is its ``process`` span (or invalid).

        None: the record's first call failed where quick retries may not wait (see
        ``process_until``); it is not processed yet.
        """
        if record.event is None:
            reason = record.decode_error.reason if record.decode_error else "undecodable"
            self._telemetry.record_error(span, "undecodable")
            undecodable = Failure(Classification.PERMANENT, "undecodable", reason)
            return self._republish(record, dead_letter_undecodable(
                self._policy, record.attempt), undecodable, "undecodable")
        settled = self._decide_without_call(record, known, span, chains)
        if settled is not None:
            if record.probe and self._breaker is not None:
                self._breaker.probe_unused()  # no call answered it: the next event probes
            return settled
        if record.probe:
            span.set_attribute("clinic_events.probe", True)
        traceparent = tracestate = None
        if span is not INVALID_SPAN:
            traceparent = self._telemetry.current_traceparent()
            tracestate = self._telemetry.current_tracestate()
        outcome = self._deliver(record, record.event, traceparent, tracestate, may_wait)
        if outcome is None:
            if chains is not None and chains.active:
                chains.done(record)
            return Delivered(record)
        failure, step = outcome
        if isinstance(step, RetryInProcess):
            return None  # handed over: a lane makes the quick retries (in the same span)
        # The call failed even though the event's attempt is not spent: its span says so,
        # as the duration metric does, or traces would not show an outage at all.
        self._telemetry.record_error(span, failure.error_class)
        if isinstance(step, Outage):
            span.set_attribute("clinic_events.held", "outage")
            return Held(record, "outage")
        dlq_reason = step.reason if isinstance(step, DeadLetter) else None
        if chains is not None and isinstance(step, RetryTo):
            chains.join(record, step.topic)  # before the hop exists: see pipeline.ordering
        elif chains is not None and record.chained:  # a chained head to the DLQ: marked
            chains.join(record, step.topic, "dead_lettering")  # before its hop is handed over
        return self._republish(record, step, failure, dlq_reason)

    def _decide_without_call(self, record: InboundRecord, known: dict[str, Outcome],
                             span: Span, chains: ChunkChains | None) -> Fate | None:
        """The fate of a decoded ``record`` if it needs no handler call (a duplicate, no
        longer owned, held, or parked behind an earlier event of its key); else None."""
        prior = known.get(record.event_id or "") if known else None
        if prior is not None and not self._may_process_again(record, prior):
            return Duplicate(record, prior)
        if self._ownership is not None and not self._ownership.owns(record):
            return Dropped(record)
        if self._guard is not None and self._guard.halted:
            return Held(record, "flood_guard")
        if self._breaker is not None and self._breaker.is_open and not record.probe:
            return Held(record, "outage")  # the outage's calls do not count: none is made
        if chains is not None and chains.active:
            placement = chains.place(record)
            if isinstance(placement, ParkBehind | FollowToDeadLetter):
                return self._park(record, placement, chains, span)
        return None

    @staticmethod
    def _may_process_again(record: InboundRecord, prior: Outcome) -> bool:
        if replay_forced(record.headers):
            return True
        return prior == "dead_lettered" and record.replayed

    def _park(self, record: InboundRecord, placement: ParkBehind | FollowToDeadLetter,
              chains: ChunkChains, span: Span) -> Fate:
        """Move ``record`` behind the head of its key without a handler call.

        Parked: to its predecessor's tier, due after that tier's delay, its attempt count
        unchanged. Following a held dead-lettered head: to the DLQ (reason ``parked``), as
        ``dead_lettering`` until the hop is durable. Either way it joins its key's chain
        before the hop is published.
        """
        span.set_attribute("clinic_events.parked_behind", placement.head)
        attempts = record.attempt - 1  # topic attempts made so far: none is spent here
        decision: RetryTo | DeadLetter
        if isinstance(placement, ParkBehind):
            tier = park_tier(self._policy, placement.topic)
            decision = RetryTo(topic=tier.topic, due_at_ms=self._clock.now_ms() + tier.delay_ms,
                               attempts=attempts, tier=tier)
            chains.join(record, tier.topic)
            reason: DlqReason | None = None
        else:
            decision = DeadLetter(topic=self._policy.dlq_topic, reason="parked",
                                  attempts=attempts)
            chains.join(record, decision.topic, "dead_lettering")  # followable once durable
            reason = "parked"
        parked = Failure(Classification.TRANSIENT, PARKED_ERROR_CLASS,
                         f"parked behind {placement.head}")
        return self._republish(record, decision, parked, reason, behind=placement.head)

    def _parked_headers(self, record: InboundRecord, incoming: RecordHeaders,
                        decision: RetryTo | DeadLetter, behind: str) -> RecordHeaders:
        return parked_hop_headers(
            incoming,
            source=Provenance(topic=record.topic, partition=record.partition,
                              offset=record.offset, timestamp_ms=record.timestamp_ms),
            attempts=decision.attempts, behind=behind,
            due_at_ms=decision.due_at_ms if isinstance(decision, RetryTo) else None,
            dlq_reason="parked" if isinstance(decision, DeadLetter) else None)

    def _deliver(self, record: InboundRecord, event: EventRecord, traceparent: str | None,
                 tracestate: str | None, may_wait: bool = True,
                 ) -> tuple[Failure, Step | Outage] | None:
        """Call the handler, and again in process while ``decide_after_failure`` says so.

        None: delivered. Otherwise the last failure and the step that follows it: a tier or
        the DLQ, or ``RetryInProcess`` when the first call failed on a thread that may not
        wait; that failure is then kept on the record (``carried_failure``) and the lane that
        processes the record next retries from it, without calling the handler again.

        tenacity runs the retries, its stop from ``decide_after_failure`` and its waits from
        the policy's backoff. Its attempt 1 is the first call, made before tenacity is set
        up: most calls succeed, and a tenacity loop around each would cost about as much as
        the rest of the pipeline's own work per event (~10 us). Attempt 1 raises that call's
        failure again, so tenacity makes the first wait and counts the first call like any
        other. A systemic failure that finds the downstream breaker open ends it all with
        ``OUTAGE``: the event waits out the outage without spending an attempt.
        """
        # Positional (the fields' order): a named tuple built by keyword costs twice as much,
        # and one is built for every call.
        context = DeliveryContext(
            record.event_id or "", record.event_type or "", record.topic, record.partition,
            record.offset, record.attempt, traceparent, tracestate)
        first = record.carried_failure
        record.carried_failure = None
        if not isinstance(first, HandlerError):
            try:
                self._call(event, context)
            except HandlerError as exc:
                first = exc
            else:
                return None
        failure = self._normalise(first)
        if self._outage(record, failure):
            return failure, OUTAGE
        step = self._next_step(record, 1, failure)
        if not isinstance(step, RetryInProcess):
            return failure, step
        if not may_wait:
            record.carried_failure = first
            return failure, step

        def stop(state: RetryCallState) -> bool:
            failed = self._normalise(_failure_of(state))
            if state.attempt_number > 1 and self._outage(record, failed):
                return True
            return not isinstance(self._next_step(record, state.attempt_number, failed),
                                  RetryInProcess)

        retrying = Retrying(stop=stop_when(stop), wait=self._quick_wait,
                            sleep=self._clock.sleep, retry=retry_if_exception_type(HandlerError),
                            reraise=True)
        calls = 1
        try:
            for attempt in retrying:
                calls = attempt.retry_state.attempt_number
                with attempt:
                    if calls == 1:
                        raise first
                    self._call(event, context)
        except HandlerError as exc:
            failure = self._normalise(exc)
            if self._breaker is not None and self._breaker.is_open:
                return failure, OUTAGE
            return failure, self._next_step(record, calls, failure)
        return None

    def _outage(self, record: InboundRecord, failure: Failure) -> bool:
        """Tell the breaker of a failed call; True if the downstream counts as down now."""
        return self._breaker is not None and \
            self._breaker.note_failure(record.key, failure.error_class, failure.retry_after_ms)

    def _next_step(self, record: InboundRecord, calls: int, failure: Failure) -> Step:
        """``decide_after_failure`` for ``record`` after its handler call ``calls`` failed."""
        source = record.topic
        if record.topic != self._policy.main_topic and record.headers.parked_behind:
            source = parked_source(self._policy, record.attempt)  # its own attempts count
        return decide_after_failure(
            self._policy, source, record.attempt, calls, failure.classification,
            self._clock.now_ms(), failure.retry_after_ms)

    def _call(self, event: EventRecord, context: DeliveryContext) -> None:
        """One handler call; any failure is raised as a HandlerError (classified by rules)."""
        try:
            if self._telemetry.metrics_live:
                self._timed_deliver(event, context)
            else:
                self._handler.deliver(event, context)
        except HandlerError:
            raise
        except Exception as exc:
            failure = self._normalise(exc)
            cls = PermanentError if failure.classification is Classification.PERMANENT \
                else TransientError
            raise cls(failure.message, error_class=failure.error_class) from exc
        if self._breaker is not None:
            self._breaker.note_success()

    def _timed_deliver(self, event: EventRecord, context: DeliveryContext) -> None:
        """One handler call, its duration recorded in the delivery-duration histogram."""
        started = self._clock.monotonic()
        error_type = None
        try:
            self._handler.deliver(event, context)
        except HandlerError as exc:
            error_type = exc.error_class
            raise
        except Exception as exc:
            error_type = qualified_name(type(exc))
            raise
        finally:
            self._record_duration(context.topic, started, error_type)

    def _record_duration(self, topic: str, started: float, error_type: str | None) -> None:
        """A handler call that began at ``started`` (clock.monotonic), into the histogram."""
        self._telemetry.record_delivery_duration(
            (self._clock.monotonic() - started) * 1000,
            tier=self._tier_labels.get(topic, "main"), error_type=error_type)

    def _normalise(self, exc: BaseException) -> Failure:
        if isinstance(exc, TransientError):
            return Failure(Classification.TRANSIENT, exc.error_class, str(exc),
                           exc.retry_after_ms)
        if isinstance(exc, PermanentError):
            return Failure(Classification.PERMANENT, exc.error_class, str(exc))
        return Failure(self._rules.classify_exception(exc), qualified_name(type(exc)),
                       f"{type(exc).__name__}: {exc}")

    def _republish(self, record: InboundRecord, decision: RetryTo | DeadLetter,
                   failure: Failure, dlq_reason: DlqReason | None,
                   behind: str | None = None) -> Republished | Held | Dropped:
        if self._ownership is not None and not self._ownership.owns(record):
            return Dropped(record)  # lost meanwhile: its new owner routes it
        if isinstance(decision, DeadLetter) and behind is None and self._guard is not None \
                and not self._guard.admit(failure.error_class):  # a parked one is no failure
            return Held(record, "flood_guard")
        now = self._clock.now_ms()
        incoming = record.headers
        if incoming.event_id is None and record.event is not None:
            incoming = _with_event_identity(incoming, record)
        if behind is not None:  # moved without a call: attempts and failure stay as they were
            headers = self._parked_headers(record, incoming, decision, behind)
        else:
            headers = next_hop_headers(
                incoming,
                source=Provenance(topic=record.topic, partition=record.partition,
                                  offset=record.offset, timestamp_ms=record.timestamp_ms),
                attempts=decision.attempts, now_ms=now, error_class=failure.error_class,
                error_message=_without_identifying_values(failure.message, record.event),
                classification=failure.classification,
                due_at_ms=decision.due_at_ms if isinstance(decision, RetryTo) else None,
                dlq_reason=dlq_reason,
            )
        kind = "retried" if isinstance(decision, RetryTo) else "dead_lettered"
        if behind is not None and isinstance(decision, RetryTo):
            kind = "parked"
        fate = Republished(record, decision, failure.error_class, kind,  # type: ignore[arg-type]
                           behind)
        with self._telemetry.send_span(decision.topic, record.event_id, key=record.key):
            wire = self._telemetry.headers_with_traceparent(encode_headers(headers))
            self._hops.send(Hop(fate, decision.topic, record.key, record.value, wire))
        return fate


def _with_event_identity(headers: RecordHeaders, record: InboundRecord) -> RecordHeaders:
    """Stamp the (non-PHI) event id and type, so DLQ tools can filter without decoding."""
    return replace(headers, event_id=record.event_id, event_type=record.event_type)


def _without_identifying_values(message: str, event: EventRecord | None) -> str:
    """``message`` with the event's own names, birth date, phone and ids masked.

    Handler text may quote any payload field ("no plan for Ada Testperson, member
    TEST-MBR-000101"), and the generic redaction rules cannot know a name. This is the one
    place a failure's text leaves the process (the next hop's ``clinic.error-message``);
    spans and log lines carry only the error class.
    """
    return mask_values(message, identifying_values(event)) if event is not None else message
