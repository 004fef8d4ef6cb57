"""Line parsing and reporting, the token bucket, and the publisher over a fake producer."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message
from opentelemetry.sdk.trace import TracerProvider

from consumer.config.settings import load_settings
from consumer.errors import ConfigError, InvalidEvent
from consumer.events.codec import EventCodec
from consumer.events.model import entity_key, event_to_json
from consumer.kafka.provisioning import TopicLayoutError
from consumer.kafka.publishing import (
    DeliveryTimeoutTooShort,
    EventPublisher,
    LineError,
    PublishSummary,
    TokenBucket,
    parse_event,
    parse_line,
    settings_for_topic,
)
from consumer.observability.telemetry import Telemetry
from retry_topics.clock import ManualClock
from retry_topics.headers import EVENT_ID, EVENT_TYPE, TRACEPARENT
from tests.unit.sample_events import sample_event, sample_events


def _line(event_type: str = "appointment.scheduled", event_id: str = "evt-1",
          **payload_changes: Any) -> str:
    event = event_to_json(sample_event(event_type, event_id))
    event["payload"].update(payload_changes)
    return json.dumps(event)


def test_a_valid_line_parses_into_the_codec_form() -> None:
    parsed = parse_line(_line(), 1)
    assert isinstance(parsed, dict)
    assert parsed == sample_event("appointment.scheduled", "evt-1")


def test_blank_lines_are_skipped() -> None:
    assert parse_line("   \n", 4) is None
    assert parse_line(b"\n", 5) is None


def test_bad_json_is_reported_with_its_line_number_and_no_field() -> None:
    error = parse_line('{"event_id": "x",', 3)
    assert isinstance(error, LineError)
    assert (error.line, error.field) == (3, None)
    assert error.message.startswith("not valid JSON")


def test_a_schema_problem_names_the_field_at_fault() -> None:
    error = parse_line(_line(starts_at="tomorrow"), 7)
    assert isinstance(error, LineError)
    assert (error.line, error.field) == (7, "payload.starts_at")


@pytest.mark.parametrize(("event_type", "field"), [
    ("intake.submitted", "intake_id"),
    ("appointment.scheduled", "appointment_id"),
    ("appointment.cancelled", "appointment_id"),
    ("eligibility.check_requested", "check_id"),
])
def test_an_empty_entity_id_is_rejected_like_an_empty_event_id(
    event_type: str, field: str
) -> None:
    """The entity id is the record key: an empty one would key unrelated events alike."""
    error = parse_line(_line(event_type, **{field: ""}), 4)
    assert error == LineError(4, f"payload.{field}", "must not be empty")
    no_event_id = json.dumps({**json.loads(_line(event_type)), "event_id": ""})
    assert parse_line(no_event_id, 5) == LineError(5, "event_id", "must not be empty")


def test_payload_values_never_appear_in_a_report() -> None:
    event = event_to_json(sample_event("intake.submitted"))
    event["payload"]["demographics"]["date_of_birth"] = "2 March 1984"
    error = parse_line(json.dumps(event), 2)
    assert isinstance(error, LineError)
    assert error.field == "payload.demographics.date_of_birth"
    assert "1984" not in error.message
    assert "March" not in error.message


def test_envelope_values_are_kept_in_a_report() -> None:
    error = parse_line(json.dumps({**json.loads(_line()), "event_type": "visit.done"}), 1)
    assert isinstance(error, LineError)
    assert error.field == "event_type"
    assert "visit.done" in error.message


def test_invalid_utf8_and_a_leading_bom_are_handled() -> None:
    error = parse_line(b'{"event_id": "\xff"}', 9)
    assert isinstance(error, LineError)
    assert error.message == "not valid UTF-8"
    assert isinstance(parse_line("\ufeff" + _line(), 1), dict)


def test_parse_event_accepts_text_json_dicts_and_decoded_records() -> None:
    record = sample_event("eligibility.check_requested")
    assert parse_event(record) == record
    assert parse_event(event_to_json(record)) == record
    assert parse_event(json.dumps(event_to_json(record))) == record
    with pytest.raises(InvalidEvent):
        parse_event("[1, 2]")


def test_summary_json_shape_and_ok() -> None:
    summary = PublishSummary(sent=2, rejected=1, failed=0,
                             errors=(LineError(3, "payload.starts_at", "bad"),))
    assert summary.to_json() == {
        "sent": 2, "rejected": 1, "failed": 0,
        "errors": [{"line": 3, "field": "payload.starts_at", "message": "bad"}],
        "delivery_errors": {},
    }
    assert not summary.ok
    assert PublishSummary(sent=2, rejected=0, failed=0).ok


def test_token_bucket_spaces_events_at_the_rate_without_busy_waiting() -> None:
    clock = ManualClock()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.sleep(seconds)

    bucket = TokenBucket(10, clock=clock, sleep=sleep)
    start = clock.monotonic()
    for _ in range(21):
        bucket.acquire()
    assert clock.monotonic() - start == pytest.approx(2.0)
    assert len(sleeps) == 20  # one sleep per wait, never a spin
    assert all(s == pytest.approx(0.1) for s in sleeps)


def test_token_bucket_allows_a_burst_after_idling_then_the_rate() -> None:
    clock = ManualClock()
    bucket = TokenBucket(2, burst=4, clock=clock, sleep=clock.sleep)
    clock.advance(10_000)
    start = clock.monotonic()
    for _ in range(4):
        bucket.acquire()
    assert clock.monotonic() == start
    bucket.acquire()
    assert clock.monotonic() - start == pytest.approx(0.5)


def test_token_bucket_terminates_with_rates_that_do_not_divide_a_millisecond() -> None:
    clock = ManualClock()
    bucket = TokenBucket(3, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        bucket.acquire()
    assert 2.99 <= clock.monotonic() <= 3.01


def test_token_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0)


def test_topic_override_moves_the_whole_layout() -> None:
    settings = settings_for_topic(load_settings(env={}), "other.events")
    assert settings.topics.main == "other.events"
    assert settings.retry.dlq_topic == "other.events.dlq"
    with pytest.raises(ConfigError):
        settings_for_topic(load_settings(env={}), "bad topic")


@pytest.mark.parametrize(("topic", "what"), [
    ("clinic.events.dlq", "a dead-letter topic"), ("clinic.events.audit", "an audit topic"),
    ("clinic.events.dlq-ledger", "a dead-letter ledger"),
    ("clinic.events.retry.5s", "a retry tier"), ("scratch.retry.1m30s", "a retry tier"),
])
def test_a_derived_topic_is_refused_as_the_publish_target(topic: str, what: str) -> None:
    """Events published there would pose as dead letters or retries, and would get a second
    family of derived topics (x.dlq.dlq, x.dlq.retry.5s)."""
    with pytest.raises(ConfigError, match=rf"^--topic: {re.escape(topic)} is {what} "):
        settings_for_topic(load_settings(env={}), topic)


class FakeProducer:
    """Records produce calls; acknowledges (or fails) them on flush."""

    def __init__(self, config: dict[str, Any], fail: bool = False) -> None:
        self.config = config
        self.fail = fail
        self.records: list[dict[str, Any]] = []
        self._pending: list[Callable[[KafkaError | None, Message], None]] = []
        self.closed = False
        self.missing_topics: set[str] = set()
        self.list_timeouts: list[float] = []

    def produce(self, topic: str, *, value: bytes, key: bytes,
                headers: list[tuple[str, str | bytes | None]],
                on_delivery: Callable[[KafkaError | None, Message], None]) -> None:
        self.records.append({"topic": topic, "value": value, "key": key,
                             "headers": dict(headers)})
        self._pending.append(on_delivery)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        for callback in self._pending:
            error = KafkaError(KafkaError._MSG_TIMED_OUT) if self.fail else None
            callback(error, Message())
        self._pending.clear()
        return 0

    def purge(self, in_queue: bool, in_flight: bool, blocking: bool) -> None:
        raise AssertionError("nothing should be left to purge")

    def close(self) -> bool:
        self.closed = True
        return True

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        """Like a broker's metadata answer: a missing topic comes back with an error."""
        self.list_timeouts.append(timeout)
        missing = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
        return SimpleNamespace(topics={
            name: SimpleNamespace(error=missing if name in self.missing_topics else None)
            for name in ([topic] if topic is not None else [])})


def _publisher(fake: list[FakeProducer], *, fail: bool = False,
               missing: frozenset[str] = frozenset()) -> EventPublisher:
    def factory(config: dict[str, Any]) -> FakeProducer:
        fake.append(FakeProducer(config, fail))
        fake[-1].missing_topics = set(missing)
        return fake[-1]

    return EventPublisher(load_settings(env={}), telemetry=Telemetry(TracerProvider()),
                          create_topics=False, producer_factory=factory)


def test_publisher_sends_only_valid_lines_with_key_value_and_headers() -> None:
    made: list[FakeProducer] = []
    lines = [_line(event_id="a"), "", "not json", _line(event_id="b", starts_at=5.5),
             _line("intake.submitted", "c")]
    with _publisher(made) as publisher:
        publisher.publish_lines(lines)
        summary = publisher.flush()
    producer = made[0]
    assert producer.closed
    assert producer.config["enable.idempotence"] is True
    assert producer.config["acks"] == "all"
    assert (summary.sent, summary.rejected, summary.failed) == (2, 2, 0)
    assert [(e.line, e.field) for e in summary.errors] == [(3, None), (4, "payload.starts_at")]
    codec = EventCodec()
    for record, event_id in zip(producer.records, ["a", "c"], strict=True):
        event = codec.decode(record["value"])
        assert event["event_id"] == event_id
        assert record["key"] == entity_key(event)
        assert record["headers"][EVENT_ID] == event_id.encode()
        assert record["headers"][EVENT_TYPE] == event["event_type"].encode()
        assert len(record["headers"][TRACEPARENT].split(b"-")) == 4
        assert set(record["headers"]) == {EVENT_ID, EVENT_TYPE, TRACEPARENT}


def test_publish_raises_on_an_invalid_event_and_sends_nothing() -> None:
    made: list[FakeProducer] = []
    with _publisher(made) as publisher:
        with pytest.raises(InvalidEvent) as raised:
            publisher.publish({"event_type": "appointment.scheduled"})
        assert raised.value.field is not None
        for event in sample_events():
            publisher.publish(event)
    assert len(made[0].records) == len(sample_events())


def test_delivery_failures_are_counted_as_failed() -> None:
    made: list[FakeProducer] = []
    with _publisher(made, fail=True) as publisher:
        publisher.publish_lines([_line(event_id="a"), _line(event_id="b")])
        summary = publisher.flush()
    assert (summary.sent, summary.failed) == (0, 2)
    assert not summary.ok
    assert sum(summary.delivery_errors.values()) == 2


@pytest.mark.parametrize(("delivery_ms", "ensure_s", "check_s"), [
    (20, 5.0, 5.0), (8_000, 8.0, 8.0), (30_000, 30.0, 10.0), (120_000, 30.0, 10.0)])
def test_the_topic_waits_as_long_as_a_record_may_within_bounds(
    monkeypatch: pytest.MonkeyPatch, delivery_ms: int, ensure_s: float, check_s: float,
) -> None:
    """A delivery timeout short enough for records (``--timeout 20ms``) must not make a
    reachable broker look unreachable to the topic's creation or check."""
    ensured: list[float] = []
    monkeypatch.setattr("consumer.kafka.publishing.ensure_topics_logged",
                        lambda _settings, *, timeout_s: ensured.append(timeout_s))
    made: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(config, False))
        return made[-1]

    for create in (True, False):
        with EventPublisher(load_settings(env={}), create_topics=create,
                            delivery_timeout_ms=delivery_ms, producer_factory=factory):
            pass
    assert ensured == [ensure_s]
    assert [p.list_timeouts for p in made] == [[], [check_s]]
    assert made[0].config["message.timeout.ms"] == delivery_ms


@pytest.mark.parametrize(("client", "extra", "linger"), [
    ({}, {}, 5.0), ({"linger.ms": "50"}, {}, 50.0), ({"queue.buffering.max.ms": "40"}, {}, 40.0),
    ({}, {"linger.ms": 300}, 300.0)])
def test_a_delivery_timeout_within_linger_is_refused_before_any_producer(
    client: dict[str, str], extra: dict[str, int], linger: float,
) -> None:
    """librdkafka refuses such a producer with an error that blames the settings; a library
    user must learn it is the timeout they passed."""
    made: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(config, False))
        return made[-1]

    settings = load_settings(env={})
    settings = replace(settings, kafka=replace(settings.kafka, client=client))
    with pytest.raises(DeliveryTimeoutTooShort, match=re.escape(
            f"the delivery timeout ({int(linger)} ms) must be longer than the producer's "
            f"linger.ms ({linger:g} ms)")) as refused:
        EventPublisher(settings, delivery_timeout_ms=int(linger), producer_config=extra,
                       producer_factory=factory)
    assert refused.value.linger_ms == linger
    assert isinstance(refused.value, ConfigError)
    assert made == []
    EventPublisher(settings, delivery_timeout_ms=int(linger) + 1, producer_config=extra)


def test_a_missing_topic_is_named_when_topics_are_not_created() -> None:
    """--no-create-topics: a topic the broker does not know is refused before any send,
    instead of every event failing later as "Message timed out"."""
    made: list[FakeProducer] = []
    publisher = _publisher(made, missing=frozenset({"clinic.events"}))
    with pytest.raises(TopicLayoutError, match=r"topic clinic.events does not exist; create "
                                               r"it with `clinic-events topics ensure`"):
        publisher.__enter__()
    assert made[0].closed
    assert made[0].records == []
