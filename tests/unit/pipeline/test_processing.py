"""The per-record pipeline with fakes: dedup, quick retries, routing, republishing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from consumer.dedup.store import MemoryDedupStore
from consumer.delivery.handlers import DeliveryContext, HttpDelivery
from consumer.errors import PermanentError, TransientError, UndecodableRecord
from consumer.events.codec import EventCodec
from consumer.observability.telemetry import Telemetry
from consumer.pipeline.breaker import OutageBreaker
from consumer.pipeline.outbox import AckedHops, OnAck
from consumer.pipeline.outcome_buffer import PendingOutcomes
from consumer.pipeline.processing import RecordProcessor
from consumer.pipeline.records import Delivered, Duplicate, Held, InboundRecord, Republished
from retry_topics.classification import ExceptionRules
from retry_topics.clock import ManualClock
from retry_topics.headers import REPLAY_FORCE, RecordHeaders, decode_headers
from retry_topics.limits import BreakerPolicy
from retry_topics.policy import InProcessRetry, RetryPolicy
from tests.unit.sample_events import sample_event

MAIN = "clinic.events"


class ScriptedHandler:
    """Raises the scripted errors in turn, then succeeds; records every call."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls: list[DeliveryContext] = []

    def deliver(self, event: dict[str, Any], context: DeliveryContext) -> None:
        self.calls.append(context)
        if self.errors:
            raise self.errors.pop(0)

    def close(self) -> None:
        pass


class CapturingPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.acks: list[OnAck] = []

    def publish(self, topic: str, key: bytes | None, value: bytes | None,
                headers: list[tuple[str, bytes]], on_ack: OnAck) -> None:
        self.sent.append((topic, key, value, headers))
        self.acks.append(on_ack)


class SleepRecordingClock(ManualClock):
    """A manual clock that notes every wait asked of it, in seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds)


class Fixture:
    def __init__(self, handler: ScriptedHandler, *, quick_attempts: int = 1,
                 rules: ExceptionRules | None = None,
                 telemetry: Telemetry | None = None,
                 in_process: InProcessRetry | None = None,
                 breaker: OutageBreaker | None = None) -> None:
        self.clock = SleepRecordingClock()
        self.store = MemoryDedupStore(self.clock)
        self.outcomes = PendingOutcomes(self.store)
        self.publisher = CapturingPublisher()
        self.handler = handler
        self.acked: list[tuple[Republished, str | None]] = []
        self.policy = RetryPolicy(
            main_topic=MAIN, delays_ms=(5_000, 30_000, 120_000),
            in_process=in_process or InProcessRetry(attempts=quick_attempts, first_wait_ms=100,
                                                    backoff="fixed", max_wait_ms=1_000),
        )
        self.processor = RecordProcessor(
            policy=self.policy, handler=handler, outcomes=self.outcomes,
            hops=AckedHops(self.publisher, lambda fate, err: self.acked.append((fate, err))),
            telemetry=telemetry or Telemetry(), clock=self.clock,
            rules=rules or ExceptionRules(), group_id="g", breaker=breaker,
        )

    def run(self, *records: InboundRecord) -> list[Any]:
        return list(self.processor.process_chunk(records))


def record(event: dict[str, Any] | None = None, *, topic: str = MAIN, offset: int = 0,
           headers: RecordHeaders | None = None, value: bytes | None = None,
           raw_headers: tuple[tuple[str, bytes | None], ...] = ()) -> InboundRecord:
    codec = EventCodec()
    event = event if event is not None or value is not None else sample_event(
        "appointment.scheduled")
    raw = value if value is not None else codec.encode(event or {})
    decode_error = None
    decoded = None
    try:
        decoded = codec.decode(raw)
    except UndecodableRecord as exc:
        decode_error = exc
    return InboundRecord(topic=topic, partition=0, offset=offset, timestamp_ms=1_000,
                         key=b"appt-2001", value=raw, raw_headers=raw_headers,
                         decoded_headers=headers, event=decoded,
                         decode_error=decode_error)


def test_success_is_staged_as_delivered_until_the_poll_thread_records_it() -> None:
    fx = Fixture(ScriptedHandler())
    (fate,) = fx.run(record())
    assert isinstance(fate, Delivered)
    event_id = "evt-appointment.scheduled"
    assert fx.store.lookup([event_id]) == {}
    assert fx.outcomes.lookup([event_id]) == {event_id: "delivered"}
    assert isinstance(fx.run(record(offset=1))[0], Duplicate)  # staged counts already
    fx.outcomes.record_delivered([event_id])
    assert fx.store.lookup([event_id]) == {event_id: "delivered"}
    assert fx.handler.calls[0].attempt == 1


def test_the_handler_is_told_where_the_event_came_from() -> None:
    fx = Fixture(ScriptedHandler())
    fx.run(record(offset=7))
    assert fx.handler.calls == [DeliveryContext(
        event_id="evt-appointment.scheduled", event_type="appointment.scheduled", topic=MAIN,
        partition=0, offset=7, attempt=1, traceparent=None, tracestate=None)]


def test_same_event_twice_in_one_chunk_is_delivered_once() -> None:
    fx = Fixture(ScriptedHandler())
    fates = fx.run(record(offset=0), record(offset=1))
    assert [type(f) for f in fates] == [Delivered, Duplicate]
    assert len(fx.handler.calls) == 1


def test_recorded_dead_letter_is_skipped_unless_replayed_or_forced() -> None:
    fx = Fixture(ScriptedHandler())
    fx.store.record("evt-appointment.scheduled", "dead_lettered")
    assert isinstance(fx.run(record())[0], Duplicate)
    replayed = record(headers=RecordHeaders(replay_count=1), offset=1)
    assert isinstance(fx.run(replayed)[0], Delivered)
    assert isinstance(fx.run(record(offset=2))[0], Duplicate)  # now delivered
    forced = record(headers=RecordHeaders(other=((REPLAY_FORCE, b"1"),)), offset=3)
    assert isinstance(fx.run(forced)[0], Delivered)
    assert len(fx.handler.calls) == 2


def test_quick_retries_recover_a_brief_outage_without_a_retry_topic() -> None:
    fx = Fixture(ScriptedHandler(TransientError("503"), TransientError("503")), quick_attempts=3)
    start = fx.clock.monotonic()
    (fate,) = fx.run(record())
    assert isinstance(fate, Delivered)
    assert len(fx.handler.calls) == 3
    assert fx.clock.monotonic() - start == pytest.approx(0.2)  # two fixed 100 ms waits
    assert fx.publisher.sent == []


@pytest.mark.parametrize(("errors", "expected"), [
    ([], {None: 1}),
    ([TransientError("503", error_class="http.503")], {"http.503": 1, None: 1}),
    ([ValueError("bug")] * 3, {"builtins.ValueError": 3}),
])
def test_every_handler_call_is_timed_by_its_error_type(
    errors: list[Exception], expected: dict[str | None, int],
) -> None:
    """Quick retries included: one delivery-duration point per call, ``error.type`` set
    when it failed, whether spans are recorded or not."""
    for tracer in (None, TracerProvider()):
        reader = InMemoryMetricReader()
        telemetry = Telemetry(tracer, MeterProvider(metric_readers=[reader]))
        fx = Fixture(ScriptedHandler(*errors), quick_attempts=3, telemetry=telemetry)
        fx.run(record())
        assert _duration_counts(reader) == expected


def _duration_counts(reader: InMemoryMetricReader) -> dict[str | None, int]:
    """Recorded handler calls by ``error.type`` (None: succeeded)."""
    data = reader.get_metrics_data()
    assert data is not None
    counts: dict[str | None, int] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "clinic_events.delivery.duration":
                    continue
                for point in metric.data.data_points:
                    assert isinstance(point, HistogramDataPoint)
                    error_type = (point.attributes or {}).get("error.type")
                    counts[None if error_type is None else str(error_type)] = point.count
    return counts


UPSTREAM_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_publishers_identity_headers_are_never_decoded_and_need_no_span() -> None:
    """``clinic.event-id``/``-type`` headers: delivered without decoding them, no trace
    context."""
    fx = Fixture(ScriptedHandler())
    identity = (("clinic.event-id", b"evt-appointment.scheduled"),
                ("clinic.event-type", b"appointment.scheduled"))
    got = record(raw_headers=identity)
    (fate,) = fx.run(got)
    assert isinstance(fate, Delivered)
    assert fx.handler.calls[0].traceparent is None
    assert fx.handler.calls[0].attempt == 1
    assert got.decoded_headers is None  # processing never needed them
    assert got.headers.event_id == "evt-appointment.scheduled"  # decoded when read


def test_an_upstream_trace_context_reaches_the_handler_without_an_sdk() -> None:
    """A ``traceparent`` header is propagated even when nothing records spans."""
    fx = Fixture(ScriptedHandler())
    (fate,) = fx.run(record(raw_headers=(("traceparent", UPSTREAM_TRACEPARENT.encode()),)))
    assert isinstance(fate, Delivered)
    assert fx.handler.calls[0].traceparent == UPSTREAM_TRACEPARENT


@pytest.mark.parametrize("quick_attempts", [1, 2], ids=["first call", "quick retry"])
def test_an_upstream_tracestate_reaches_the_handler_beside_its_traceparent(
    quick_attempts: int,
) -> None:
    """W3C: vendors' ``tracestate`` travels with ``traceparent``, with an SDK or without."""
    for telemetry in (None, Telemetry(TracerProvider())):
        fx = Fixture(ScriptedHandler(*[TransientError("503")] * (quick_attempts - 1)),
                     quick_attempts=quick_attempts, telemetry=telemetry)
        fx.run(record(raw_headers=(("traceparent", UPSTREAM_TRACEPARENT.encode()),
                                   ("tracestate", b"vendor=a,other=1"))))
        assert [call.tracestate for call in fx.handler.calls] == ["vendor=a,other=1"] * \
            quick_attempts
    fx = Fixture(ScriptedHandler())
    fx.run(record(raw_headers=(("tracestate", b"vendor=a"),)))  # no traceparent: meaningless
    assert fx.handler.calls[0].tracestate is None


def test_without_an_sdk_every_quick_retry_carries_the_upstream_trace() -> None:
    """The first call and the retries alike."""
    fx = Fixture(ScriptedHandler(TransientError("503"), TransientError("503")),
                 quick_attempts=3)
    (fate,) = fx.run(record(raw_headers=(("traceparent", UPSTREAM_TRACEPARENT.encode()),)))
    assert isinstance(fate, Delivered)
    assert [call.traceparent for call in fx.handler.calls] == [UPSTREAM_TRACEPARENT] * 3


def test_without_an_sdk_a_dead_lettered_record_keeps_its_upstream_trace() -> None:
    fx = Fixture(ScriptedHandler(PermanentError("422")))
    fx.run(record(raw_headers=(("traceparent", UPSTREAM_TRACEPARENT.encode()),
                               ("tracestate", b"vendor=a"))))
    (topic, _key, _value, headers) = fx.publisher.sent[0]
    assert topic == f"{MAIN}.dlq"
    assert [value for name, value in headers if name in ("traceparent", "tracestate")] == [
        UPSTREAM_TRACEPARENT.encode(), b"vendor=a"]


def test_exhausted_quick_retries_go_to_the_first_tier_with_due_time_and_headers() -> None:
    fx = Fixture(ScriptedHandler(*[TransientError("503", error_class="http.503")] * 3),
                 quick_attempts=3)
    assert fx.run(record()) == []  # final only on ack
    (topic, key, value, headers) = fx.publisher.sent[0]
    assert topic == "clinic.events.retry.5s"
    assert key == b"appt-2001"
    assert value == record().value
    decoded = decode_headers(headers)
    assert decoded.attempts == 1
    assert decoded.due_at_ms == fx.clock.now_ms() + 5_000
    assert decoded.error_class == "http.503"
    assert decoded.original_topic == MAIN
    assert decoded.event_id == "evt-appointment.scheduled"
    fx.publisher.acks[0](None)
    assert fx.acked[0][0].kind == "retried"


def test_a_short_retry_after_is_honoured_by_the_quick_waits() -> None:
    fx = Fixture(ScriptedHandler(TransientError("429", retry_after_ms=700)), quick_attempts=3)
    start = fx.clock.monotonic()
    assert isinstance(fx.run(record())[0], Delivered)
    assert fx.clock.monotonic() - start == pytest.approx(0.7)  # not the 100 ms fixed wait


def test_quick_waits_follow_the_policys_backoff() -> None:
    """tenacity makes every wait, the first one too: exponential from the first wait."""
    quick = InProcessRetry(attempts=4, first_wait_ms=100, backoff="exponential",
                           max_wait_ms=1_000)
    fx = Fixture(ScriptedHandler(*[TransientError("503")] * 3), in_process=quick)
    assert isinstance(fx.run(record())[0], Delivered)
    assert len(fx.handler.calls) == 4
    assert fx.clock.sleeps == pytest.approx([0.1, 0.2, 0.4])


def test_full_jitter_waits_stay_under_the_exponential_ceiling() -> None:
    quick = InProcessRetry(attempts=6, first_wait_ms=100, backoff="exponential_jitter",
                           max_wait_ms=500)
    for _ in range(20):
        fx = Fixture(ScriptedHandler(*[TransientError("503")] * 5), in_process=quick)
        assert isinstance(fx.run(record())[0], Delivered)
        ceilings = [0.1, 0.2, 0.4, 0.5, 0.5]
        assert len(fx.clock.sleeps) == len(ceilings)
        assert all(0 <= wait <= ceiling for wait, ceiling in zip(fx.clock.sleeps, ceilings,
                                                                  strict=True))


def test_a_retry_after_on_a_quick_retry_is_honoured_too() -> None:
    fx = Fixture(ScriptedHandler(TransientError("503"), TransientError("429", retry_after_ms=700)),
                 quick_attempts=3)
    assert isinstance(fx.run(record())[0], Delivered)
    assert fx.clock.sleeps == pytest.approx([0.1, 0.7])


def test_a_long_retry_after_on_a_quick_retry_ends_them_and_picks_a_tier() -> None:
    fx = Fixture(ScriptedHandler(TransientError("503"),
                                 TransientError("429", retry_after_ms=20_000)),
                 quick_attempts=3)
    assert fx.run(record()) == []
    assert len(fx.handler.calls) == 2
    assert fx.clock.sleeps == pytest.approx([0.1])
    assert fx.publisher.sent[0][0] == "clinic.events.retry.30s"


@pytest.mark.parametrize(("retry_after", "calls", "sleeps", "topic"), [
    ("1", 2, [1.0], None),  # fits one quick wait (max 1 s): waited out in process
    ("60", 1, [], "clinic.events.retry.2m"),  # too long: the first tier of at least 60 s
])
def test_an_http_429_with_retry_after_waits_in_process_or_picks_a_tier(
    retry_after: str, calls: int, sleeps: list[float], topic: str | None,
) -> None:
    fx = Fixture(ScriptedHandler(), quick_attempts=3)
    answers = [httpx.Response(429, headers={"Retry-After": retry_after}), httpx.Response(200)]
    requests: list[httpx.Request] = []

    def downstream(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return answers.pop(0)

    http = HttpDelivery("http://downstream.test/events", 1_000,
                        transport=httpx.MockTransport(downstream), clock=fx.clock)
    fx.processor._handler = http
    try:
        fates = fx.run(record())
    finally:
        http.close()
    assert len(requests) == calls
    assert fx.clock.sleeps == pytest.approx(sleeps)
    if topic is None:
        assert [type(fate) for fate in fates] == [Delivered]
    else:
        (sent, _key, _value, headers) = fx.publisher.sent[0]
        assert sent == topic
        decoded = decode_headers(headers)
        assert (decoded.error_class, decoded.due_at_ms) == ("http.429",
                                                            fx.clock.now_ms() + 120_000)


def test_a_long_retry_after_skips_quick_retries_and_picks_a_long_enough_tier() -> None:
    fx = Fixture(ScriptedHandler(TransientError("429", retry_after_ms=20_000)), quick_attempts=3)
    fx.run(record())
    assert len(fx.handler.calls) == 1
    assert fx.publisher.sent[0][0] == "clinic.events.retry.30s"


def test_permanent_failure_is_dead_lettered_without_retrying() -> None:
    fx = Fixture(ScriptedHandler(PermanentError("422", error_class="http.422")),
                 quick_attempts=3)
    fx.run(record())
    assert len(fx.handler.calls) == 1
    topic, _, _, headers = fx.publisher.sent[0]
    assert topic == "clinic.events.dlq"
    decoded = decode_headers(headers)
    assert (decoded.dlq_reason, decoded.classification) == ("permanent", "permanent")
    fx.publisher.acks[0](None)
    assert fx.acked[0][0].kind == "dead_lettered"


def test_copies_of_an_event_sent_to_the_dlq_are_duplicates_until_and_after_the_ack() -> None:
    """One dead letter per event: a copy in the same chunk, or in a later one before the
    DLQ write is acknowledged, is a duplicate, not a second handler call and dead letter."""
    fx = Fixture(ScriptedHandler(*[PermanentError("422", error_class="http.422")] * 3))
    fates = fx.run(record(offset=0), record(offset=1))
    assert [type(f) for f in fates] == [Duplicate]
    assert fates[0].prior == "dead_lettered"
    assert isinstance(fx.run(record(offset=2))[0], Duplicate)  # not acknowledged yet
    assert len(fx.handler.calls) == 1
    assert [sent[0] for sent in fx.publisher.sent] == ["clinic.events.dlq"]
    event_id = "evt-appointment.scheduled"
    assert fx.store.lookup([event_id]) == {}
    fx.outcomes.record_dead_lettered(event_id)  # what the poll thread does on the ack
    assert fx.store.lookup([event_id]) == {event_id: "dead_lettered"}
    assert isinstance(fx.run(record(offset=3))[0], Duplicate)
    replayed = record(headers=RecordHeaders(replay_count=1), offset=4)
    assert fx.run(replayed) == []  # an operator's replay still runs (and fails again)
    assert len(fx.handler.calls) == 2
    assert len(fx.publisher.sent) == 2


def test_a_staged_dead_letter_never_hides_a_recorded_delivery() -> None:
    outcomes = PendingOutcomes(MemoryDedupStore())
    outcomes.store.record("e1", "delivered")
    outcomes.stage_dead_lettered("e1")
    outcomes.stage_dead_lettered("e2")
    assert outcomes.lookup(["e1", "e2", "e3"]) == {"e1": "delivered", "e2": "dead_lettered"}


def test_an_abandoned_processor_starts_no_further_record() -> None:
    """The call in progress finishes; the rest of the chunk is left (redelivered later)."""
    fx: Fixture

    class AbandoningHandler(ScriptedHandler):
        def deliver(self, event: dict[str, Any], context: DeliveryContext) -> None:
            super().deliver(event, context)
            fx.processor.abandon()  # a second stop signal arrives during the first call

    fx = Fixture(AbandoningHandler())
    events = [sample_event("appointment.scheduled", event_id=f"e{n}") for n in range(3)]
    fates = fx.run(*(record(event, offset=n) for n, event in enumerate(events)))
    assert [f.record.offset for f in fates] == [0]
    assert len(fx.handler.calls) == 1


def test_last_tier_failure_is_exhausted() -> None:
    fx = Fixture(ScriptedHandler(TransientError("503")))
    fx.run(record(topic="clinic.events.retry.2m", headers=RecordHeaders(attempts=3)))
    topic, _, _, headers = fx.publisher.sent[0]
    assert topic == "clinic.events.dlq"
    assert decode_headers(headers).dlq_reason == "exhausted"
    assert decode_headers(headers).attempts == 4
    assert fx.handler.calls[0].attempt == 4


def test_undecodable_bytes_are_dead_lettered_unchanged() -> None:
    fx = Fixture(ScriptedHandler())
    fx.run(record(value=b"garbage"))
    topic, _, value, headers = fx.publisher.sent[0]
    assert (topic, value) == ("clinic.events.dlq", b"garbage")
    assert decode_headers(headers).dlq_reason == "undecodable"
    assert fx.handler.calls == []


@pytest.mark.parametrize(
    ("error", "expected_topic"),
    [(ValueError("bad"), "clinic.events.dlq"), (ConnectionError("reset"),
                                                "clinic.events.retry.5s")],
)
def test_other_exceptions_follow_the_configured_rules(error: Exception,
                                                      expected_topic: str) -> None:
    rules = ExceptionRules(permanent=("builtins.ValueError",))
    fx = Fixture(ScriptedHandler(error), rules=rules)
    fx.run(record())
    assert fx.publisher.sent[0][0] == expected_topic


def test_a_failed_record_keeps_the_outcome_staged() -> None:
    class FullDisk(MemoryDedupStore):
        def record_delivered(self, event_ids: Sequence[str]) -> None:
            raise OSError("disk full")

    outcomes = PendingOutcomes(FullDisk())
    outcomes.stage(["e1"])
    with pytest.raises(OSError, match="disk full"):
        outcomes.record_delivered(["e1"])
    assert outcomes.lookup(["e1"]) == {"e1": "delivered"}


class ClockAdvancingHandler(ScriptedHandler):
    """Each call takes ``call_ms`` on the fixture's manual clock."""

    def __init__(self, clock: ManualClock, call_ms: int) -> None:
        super().__init__()
        self.clock = clock
        self.call_ms = call_ms

    def deliver(self, event: dict[str, Any], context: DeliveryContext) -> None:
        super().deliver(event, context)
        self.clock.advance(self.call_ms)


def test_process_until_stops_after_the_first_record_past_the_deadline() -> None:
    fx = Fixture(ScriptedHandler())
    slow = ClockAdvancingHandler(fx.clock, call_ms=3)
    fx.processor._handler = slow
    records = [record(sample_event("appointment.scheduled", event_id=f"evt-{n}"), offset=n)
               for n in range(5)]
    deadline = fx.clock.monotonic() + 0.005  # 5 ms: the second call ends past it
    fates, processed = fx.processor.process_until(records, deadline)
    assert processed == 2
    assert [fate.record.offset for fate in fates] == [0, 1]
    assert len(slow.calls) == 2
    assert records[2].event is not None  # untouched: it goes to a lane as it is


def test_a_processed_record_lets_go_of_its_decoded_event() -> None:
    fx = Fixture(ScriptedHandler())
    processed = record()
    (fate,) = fx.run(processed)
    assert fate.record.event is None
    assert fate.record.event_id == sample_event("appointment.scheduled")["event_id"]


@pytest.mark.parametrize(("errors", "ok"), [
    ((TransientError("503", error_class="http.503"),), True),
    ((TransientError("503", error_class="http.503"),) * 3, False),
])
def test_a_handed_over_attempt_is_one_process_span(errors: tuple[Exception, ...],
                                                   ok: bool) -> None:
    """The poll thread's failed first call and the lane's quick retries are one topic
    attempt: one ``process`` span, whose traceparent every call carried, failed only if the
    attempt failed."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    fx = Fixture(ScriptedHandler(*errors), quick_attempts=3, telemetry=Telemetry(provider))
    handed = record(sample_event("appointment.scheduled", event_id="evt-1"),
                    topic=f"{MAIN}.retry.5s", headers=RecordHeaders(attempts=1))
    assert fx.processor.process_until([handed], fx.clock.monotonic() + 10) == ([], 0)
    assert exporter.get_finished_spans() == ()  # still open: it travels with the record
    fates = fx.run(handed)  # the lane
    if ok:
        assert [type(fate) for fate in fates] == [Delivered]
    else:  # republished to the next tier: its fate comes with the broker's ack
        assert (fates, [topic for topic, *_ in fx.publisher.sent]) == ([], [f"{MAIN}.retry.30s"])
    process = [s for s in exporter.get_finished_spans() if s.name.startswith("process ")]
    assert len(process) == 1
    assert len({call.traceparent for call in fx.handler.calls}) == 1
    assert (process[0].attributes or {}).get("error.type") == (None if ok else "http.503")
    assert handed.carried_span is None


def test_calls_failed_by_an_outage_are_failed_spans_though_their_events_wait() -> None:
    """The call that opens the breaker, and a probe the downstream still refuses, hold their
    events without spending an attempt; their spans still say the call failed, as the
    duration metric does, so an outage shows in traces."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = ManualClock()
    breaker = OutageBreaker(BreakerPolicy(window_calls=1, min_failures=1, min_keys=1), clock)
    refused = TransientError("refused", error_class="connection")
    fx = Fixture(ScriptedHandler(refused, refused), telemetry=Telemetry(provider),
                 breaker=breaker)
    first = record(sample_event("appointment.scheduled", event_id="evt-1"))
    assert [(type(f), f.reason) for f in fx.run(first) if isinstance(f, Held)] == [
        (Held, "outage")]
    assert breaker.is_open
    probe = record(sample_event("appointment.scheduled", event_id="evt-1"))
    probe.probe = True
    assert [type(fate) for fate in fx.run(probe)] == [Held]
    spans = [s for s in exporter.get_finished_spans() if s.name.startswith("process ")]
    assert [(s.attributes or {}).get("clinic_events.probe") for s in spans] == [None, True]
    for span in spans:
        assert (span.attributes or {}).get("error.type") == "connection"
        assert (span.attributes or {}).get("clinic_events.held") == "outage"
        assert span.status.status_code is StatusCode.ERROR
    assert fx.publisher.sent == []  # no tier, no dead letter: the attempt is not spent


def test_with_a_deadline_nothing_sleeps_and_quick_retries_are_handed_over() -> None:
    """The poll thread never waits out a quick retry; the lane retries without a new call."""
    fx = Fixture(ScriptedHandler(TransientError("503", error_class="http.503")),
                 quick_attempts=3)
    first, second = (record(sample_event("appointment.scheduled", event_id=f"evt-{n}"),
                            offset=n) for n in range(2))
    started = fx.clock.monotonic()
    fates, processed = fx.processor.process_until([first, second], started + 10)
    assert (fates, processed) == ([], 0)
    assert fx.clock.monotonic() == started  # no quick wait on the calling thread
    assert len(fx.handler.calls) == 1
    assert first.event is not None  # not processed yet: a lane takes it from here
    (fate, other) = fx.run(first, second)  # the lane: retries, then the rest
    assert isinstance(fate, Delivered)
    assert isinstance(other, Delivered)
    assert len(fx.handler.calls) == 3  # first call, one quick retry, the second event
    assert fx.clock.monotonic() - started == pytest.approx(0.1)  # the first quick wait
    assert first.carried_failure is None


def test_a_lane_with_a_deadline_makes_the_quick_retries_itself_and_stops_past_it() -> None:
    """A lane thread reports fates every few tens of ms: it passes a deadline but may wait,
    so a failed first call is retried in place (not handed over) and the prefix ends after
    the first record finished past the deadline."""
    fx = Fixture(ScriptedHandler(TransientError("503", error_class="http.503")),
                 quick_attempts=3)
    first, second = (record(sample_event("appointment.scheduled", event_id=f"evt-{n}"),
                            offset=n) for n in range(2))
    started = fx.clock.monotonic()
    fates, processed = fx.processor.process_until([first, second], started + 0.05,
                                                  may_wait=True)
    assert processed == 1  # the quick wait (100 ms) took it past the deadline
    assert [type(fate) for fate in fates] == [Delivered]
    assert len(fx.handler.calls) == 2  # first call and one quick retry, in place
    assert first.carried_failure is None
    assert second.event is not None  # not started: the lane goes on with it next
