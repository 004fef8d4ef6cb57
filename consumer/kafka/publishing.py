"""Publishing clinic events to the main topic, for operators (``clinic-events publish``) and code.

Why this exists beside the consumer: upstream systems and operators need one way to put events
on the main topic that the consumer is guaranteed to accept. So every event is validated
against the schema *before* it is sent (``consumer.events.model.event_from_json``), and a line that
does not fit is reported with its number and the field at fault instead of being sent.

How records are written, matching what the consumer expects:

* key: the entity id (``consumer.events.model.entity_key``), so one appointment's events stay in
  order on one partition; value: ``EventCodec().encode(event)``;
* headers: ``traceparent`` of a PRODUCER span ``send <topic>`` (so the trace starts here),
  ``clinic.event-id`` and ``clinic.event-type`` (opaque ids, not patient data). No payload
  field goes into a header, span or message: validation messages about payload fields have
  quoted values removed, since a date of birth or a name may be among them;
* an idempotent producer (``enable.idempotence``, ``acks=all``) and ``message.timeout.ms``,
  so a broker that is down turns into counted failures instead of a hang; ``flush`` waits for
  every delivery report up to a deadline and counts what is left as failed.

``TokenBucket`` caps the send rate with an injected clock: it computes how long to wait and
sleeps exactly that long (the publisher serves delivery reports while it waits).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from consumer.config.settings import Settings
from consumer.errors import ConfigError, InvalidEvent
from consumer.events.codec import EventCodec, EventRecord
from consumer.events.model import entity_key, event_from_json, event_to_json
from consumer.kafka.admin_session import ensure_topics_logged
from consumer.kafka.clients import PRODUCER_DEFAULTS
from consumer.kafka.provisioning import TopicLayoutError
from consumer.observability.telemetry import Telemetry
from retry_topics.clock import Clock, SystemClock
from retry_topics.errors import PolicyError
from retry_topics.headers import RecordHeaders, encode_headers
from retry_topics.naming import derived_kind
from retry_topics.policy import RetryPolicy

DEFAULT_DELIVERY_TIMEOUT_MS = 30_000
_EPSILON = 1e-6  # float error in token arithmetic must not cost an extra millisecond's sleep
_QUOTED = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""")


@dataclass(frozen=True, slots=True)
class LineError:
    """An input line that was not sent: its 1-based number, the field at fault, why."""

    line: int
    field: str | None
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishSummary:
    """Counts after every delivery report arrived (or the deadline passed)."""

    sent: int
    rejected: int
    failed: int
    errors: tuple[LineError, ...] = ()
    delivery_errors: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rejected == 0 and self.failed == 0

    def to_json(self) -> dict[str, Any]:
        return {"sent": self.sent, "rejected": self.rejected, "failed": self.failed,
                "errors": [{"line": e.line, "field": e.field, "message": e.message}
                           for e in self.errors],
                "delivery_errors": dict(self.delivery_errors)}


def safe_message(error: InvalidEvent) -> str:
    """The reason without the field prefix; quoted values removed unless it is an envelope field."""
    text = str(error)
    if error.field and text.startswith(f"{error.field}: "):
        text = text[len(error.field) + 2:]
    if error.field is None or error.field.startswith("payload"):
        text = _QUOTED.sub("<redacted>", text)
    return text


def _json(text: str | bytes) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid JSON: {exc.msg} (column {exc.colno})") from exc


def parse_event(source: str | bytes | Mapping[str, Any]) -> EventRecord:
    """A validated event from JSON text, a JSON-shaped dict, or a decoded (Avro-native) record."""
    if isinstance(source, str | bytes):
        return event_from_json(_json(source))
    return event_from_json(event_to_json(source))  # datetimes to ISO strings; JSON unchanged


def parse_line(raw: str | bytes, number: int) -> EventRecord | LineError | None:
    """One JSON Lines line: the event, a :class:`LineError`, or ``None`` for a blank line."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return LineError(number, None, "not valid UTF-8")
    text = raw.strip().lstrip("\ufeff") if number == 1 else raw.strip()
    if not text:
        return None
    try:
        obj = _json(text)
    except InvalidEvent as exc:
        return LineError(number, None, str(exc))  # the parser's words, never the line's content
    try:
        return event_from_json(obj)
    except InvalidEvent as exc:
        return LineError(number, exc.field, safe_message(exc))


class TokenBucket:
    """At most ``rate`` events per second on average, bursts of at most ``burst``."""

    def __init__(self, rate: float, *, burst: float = 1.0, clock: Clock | None = None,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError(f"rate must be > 0 and burst >= 1 (got {rate}, {burst})")
        self._rate, self._burst = rate, burst
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._tokens = burst
        self._last = self._clock.monotonic()

    def wait_s(self) -> float:
        """Seconds until a token is available (0 if one is), rounded up to whole milliseconds."""
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1 - _EPSILON:
            return 0.0
        return math.ceil((1 - self._tokens) / self._rate * 1000 - _EPSILON) / 1000

    def acquire(self, sleep: Callable[[float], object] | None = None) -> None:
        """Take one token, sleeping (with ``sleep``, else the constructor's) until there is one."""
        while (wait := self.wait_s()) > 0:
            (sleep or self._sleep)(wait)
        self._tokens -= 1


def settings_for_topic(settings: Settings, topic: str | None) -> Settings:
    """``settings`` with another main topic (and so other retry, DLQ and audit topics).

    A retry, dead-letter or audit topic (by the form of its name) is refused: events
    published there would reach the DLQ as if dead-lettered, or be read as retries without
    their headers, and would get a second family of topics derived from that name.
    """
    if topic is None or topic == settings.topics.main:
        return settings
    kind = derived_kind(topic)
    if kind is not None:
        what = {"retry": "a retry tier", "dlq": "a dead-letter topic",
                "ledger": "a dead-letter ledger", "audit": "an audit topic",
                "status": "a status topic"}[kind]
        raise ConfigError(f"--topic: {topic} is {what} (by its name), not a main topic; "
                          f"publish to a main topic such as {settings.topics.main}")
    try:
        policy = RetryPolicy(main_topic=topic, delays_ms=settings.retry.delays_ms,
                             in_process=settings.retry.in_process)
    except PolicyError as exc:
        raise ConfigError(f"--topic: {exc}") from exc
    return replace(settings, topics=replace(settings.topics, main=topic), retry=policy)


class ProducerPort(Protocol):
    """The part of ``confluent_kafka.Producer`` the publisher uses (a fake in unit tests)."""

    def produce(self, topic: str, *, value: bytes, key: bytes,
                headers: list[tuple[str, str | bytes | None]],
                on_delivery: Callable[[KafkaError | None, Message], None]) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def flush(self, timeout: float) -> int: ...
    def purge(self, in_queue: bool, in_flight: bool, blocking: bool) -> None: ...
    def close(self) -> bool: ...
    # ClusterMetadata, which confluent-kafka's stubs type as Any for producers
    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...


def published_headers(event: EventRecord,
                      traceparent: str | None) -> list[tuple[str, str | bytes | None]]:
    """The headers a published event carries: its (non-PHI) id and type, and its trace."""
    return [*encode_headers(RecordHeaders(event_id=event["event_id"],
                                          event_type=event["event_type"],
                                          traceparent=traceparent))]


TOPIC_CHECK_FLOOR_S = 5.0
"""The least time creating or checking the topic may take, whatever the delivery timeout.

Why: that timeout is for records, and one short enough for a record (``--timeout 20ms``) is
too short for an admin round trip: it would report a reachable broker as unreachable."""


def publisher_linger_ms(settings: Settings,
                        producer_config: Mapping[str, Any] | None = None) -> float:
    """How long the publisher's producer lets a record wait for its batch (``linger.ms``),
    with ``producer_config`` as :class:`EventPublisher` layers it over the settings.

    A delivery timeout must be longer: librdkafka refuses a producer whose
    ``message.timeout.ms`` is not.
    """
    config = {**settings.producer_config(PRODUCER_DEFAULTS), **(producer_config or {})}
    # librdkafka's other name for it, when ``[kafka.client]`` uses it, is set after the
    # default ``linger.ms`` and wins.
    return float(config.get("queue.buffering.max.ms", config["linger.ms"]))


class DeliveryTimeoutTooShort(ConfigError):
    """A delivery timeout within the producer's ``linger.ms``: a record could time out
    waiting for its batch, so librdkafka refuses such a producer."""

    def __init__(self, timeout_ms: int, linger_ms: float) -> None:
        super().__init__(f"the delivery timeout ({timeout_ms} ms) must be longer than the "
                         f"producer's linger.ms ({linger_ms:g} ms), which a record may wait "
                         "for its batch")
        self.linger_ms = linger_ms


class EventPublisher:
    """Validates and sends events to the main topic; a context manager that flushes on exit.

    ``delivery_timeout_ms`` must be longer than the producer's ``linger.ms`` (5 ms unless
    ``[kafka.client]`` or ``producer_config`` sets it): :class:`DeliveryTimeoutTooShort`.
    """

    def __init__(self, settings: Settings, *, topic: str | None = None,
                 telemetry: Telemetry | None = None, create_topics: bool = True,
                 delivery_timeout_ms: int = DEFAULT_DELIVERY_TIMEOUT_MS,
                 producer_config: Mapping[str, Any] | None = None,
                 producer_factory: Callable[[dict[str, Any]], ProducerPort] = Producer) -> None:
        linger_ms = publisher_linger_ms(settings, producer_config)
        if delivery_timeout_ms <= linger_ms:  # librdkafka's refusal would blame the settings
            raise DeliveryTimeoutTooShort(delivery_timeout_ms, linger_ms)
        self._settings = settings_for_topic(settings, topic)
        self.topic = self._settings.topics.main
        self._telemetry = telemetry or Telemetry()
        self._create_topics = create_topics
        self._timeout_ms = delivery_timeout_ms
        self._extra = dict(producer_config or {})
        self._factory = producer_factory
        self._codec = EventCodec()
        self._producer: ProducerPort | None = None
        self._sent = self._failed = 0
        self._errors: list[LineError] = []
        self._delivery_errors: dict[str, int] = {}

    def __enter__(self) -> EventPublisher:
        if self._create_topics:
            ensure_topics_logged(self._settings, timeout_s=self._topic_check_timeout_s(30.0))
        try:
            self._producer = self._factory(self._settings.producer_config(
                PRODUCER_DEFAULTS, **{"enable.idempotence": True, "acks": "all",
                                      "message.timeout.ms": self._timeout_ms, **self._extra}))
        except KafkaException as exc:
            raise ConfigError(f"Kafka producer settings: {exc}") from exc
        if not self._create_topics:
            self._require_topic(self._producer)
        return self

    def _require_topic(self, producer: ProducerPort) -> None:
        """Refuse a topic the broker says does not exist (topics are not created here).

        Without this, every event would wait out the delivery timeout and fail as "Message
        timed out", which does not say why. An unreachable broker is not judged here: the
        deliveries fail and are counted as usual.
        """
        try:
            metadata = producer.list_topics(self.topic, timeout=self._topic_check_timeout_s(10.0))
        except KafkaException:
            return
        topic = metadata.topics.get(self.topic)
        error = topic.error if topic is not None else None
        if topic is None or (error is not None
                             and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            producer.close()
            self._producer = None
            raise TopicLayoutError(
                f"topic {self.topic} does not exist; create it with `clinic-events topics "
                "ensure` (or publish without --no-create-topics)")

    def _topic_check_timeout_s(self, most_s: float) -> float:
        """As long as a record may wait, within ``TOPIC_CHECK_FLOOR_S`` and ``most_s``."""
        return min(most_s, max(TOPIC_CHECK_FLOOR_S, self._timeout_ms / 1000))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._producer is not None:
            self.flush()
            self._producer.close()
            self._producer = None

    def _require_producer(self) -> ProducerPort:
        if self._producer is None:
            raise RuntimeError("use EventPublisher as a context manager (with ...)")
        return self._producer

    def publish(self, event: str | bytes | Mapping[str, Any]) -> None:
        """Validate and send one event; raise ``InvalidEvent`` (nothing sent) if it is invalid."""
        self._send(parse_event(event))

    def _send(self, record: EventRecord) -> None:
        producer = self._require_producer()
        value = self._codec.encode(record)
        key = entity_key(record)
        with self._telemetry.send_span(self.topic, record["event_id"]):
            headers = published_headers(record, self._telemetry.current_traceparent())
            while True:
                try:
                    producer.produce(self.topic, value=value, key=key, headers=headers,
                                     on_delivery=self._on_delivery)
                    break
                except BufferError:
                    producer.poll(0.1)  # local queue full: serve delivery reports, then retry
                except KafkaException as exc:  # refused locally (e.g. too large): not sent
                    self._count_failure(str(exc.args[0]) if exc.args else repr(exc))
                    break
        producer.poll(0)

    def publish_lines(self, lines: Iterable[str | bytes], *,
                      limiter: TokenBucket | None = None) -> None:
        """Send every valid line; invalid ones are recorded for the summary, blank ones skipped."""
        for number, raw in enumerate(lines, start=1):
            parsed = parse_line(raw, number)
            if parsed is None:
                continue
            if isinstance(parsed, LineError):
                self._errors.append(parsed)
                continue
            if limiter is not None:
                limiter.acquire(self._serve_while_waiting)
            try:
                self._send(parsed)
            except InvalidEvent as exc:
                self._errors.append(LineError(number, exc.field, safe_message(exc)))

    def flush(self, timeout_s: float | None = None) -> PublishSummary:
        """Wait for every delivery report (up to the deadline) and return the counts so far."""
        producer = self._require_producer()
        deadline = timeout_s if timeout_s is not None else self._timeout_ms / 1000 + 5
        if producer.flush(deadline) > 0:  # still queued: give up on them, they count as failed
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.flush(5)
        return PublishSummary(sent=self._sent, rejected=len(self._errors), failed=self._failed,
                              errors=tuple(self._errors),
                              delivery_errors=dict(self._delivery_errors))

    def _serve_while_waiting(self, seconds: float) -> None:
        self._require_producer().poll(seconds)

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self._sent += 1
            return
        self._count_failure(error.str())

    def _count_failure(self, reason: str) -> None:
        self._failed += 1
        self._delivery_errors[reason] = self._delivery_errors.get(reason, 0) + 1


def publish_lines(lines: Iterable[str | bytes], settings: Settings, *, topic: str | None = None,
                  rate: float | None = None, telemetry: Telemetry | None = None,
                  create_topics: bool = True,
                  delivery_timeout_ms: int = DEFAULT_DELIVERY_TIMEOUT_MS) -> PublishSummary:
    """Validate and send JSON Lines events; return the counts once every report arrived."""
    limiter = TokenBucket(rate) if rate else None
    with EventPublisher(settings, topic=topic, telemetry=telemetry, create_topics=create_topics,
                        delivery_timeout_ms=delivery_timeout_ms) as publisher:
        publisher.publish_lines(lines, limiter=limiter)
        return publisher.flush()
