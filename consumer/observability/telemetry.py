"""Tracing and metrics for the consumer, in one place.

**Traces.** Every record handled gets a CONSUMER span ``process <topic>`` whose parent is the
W3C ``traceparent`` (and ``tracestate``) carried in the record's headers, so an event keeps
one trace from the upstream publisher through every retry tier to the DLQ. Republishing opens
a PRODUCER span ``send <topic>`` and re-stamps the record's trace headers with that span's
context; the headers are *replaced*, never appended, so a record that hops ten times still
carries exactly one ``traceparent``. Attributes follow the OpenTelemetry messaging semantic
conventions (``messaging.*``) plus ``clinic_events.attempt``; given a
:class:`~consumer.observability.messaging.MessagingClient`, both kinds also carry
``server.address``, ``server.port`` and ``messaging.client.id``.

**No patient data in telemetry.** Span attributes hold topic, partition, offset, consumer
group, the event id and the record key (both are opaque ids: the record key is the entity's
id, ``intake_id``, ``appointment_id`` or ``check_id``, never a patient or member id, see
``consumer.events.model.ENTITY_KEY_FIELD``); a ``send`` span carries the key too when its
caller passes it. Failures set ``error.type`` and
an ERROR status described by that type only; exception messages are never recorded (not as
span events, not as status), because they may quote payload fields.

**Metrics** use the OpenTelemetry metrics API. The messaging conventions' counter
``messaging.client.consumed.messages`` (one per record whose fate is settled) and histogram
``messaging.process.duration`` (seconds, one point per handler call) carry ``messaging.*``
attributes; clinic-events' own counter ``clinic_events.events`` (attributes ``outcome`` =
delivered | duplicate | retried | dead_lettered, and ``tier``) and histogram
``clinic_events.delivery.duration`` (milliseconds) come from the same calls, for the OTLP
users who already chart them. Names are in ``consumer.observability.messaging``. Instruments
are created once, when :class:`Telemetry` is built. With the API's default providers every
call is a cheap no-op, so telemetry needs no separate "disabled" code path.

:func:`configure_tracing` builds the SDK tracer provider from the standard ``OTEL_*``
environment variables; the caller shuts it down at exit so the last spans are flushed.
:func:`configure_metrics` does the same for metrics, with any further readers (the Prometheus
endpoint's, ``consumer.observability.prometheus``) beside the OTLP one.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import Token
from typing import Literal

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import INVALID_SPAN, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from consumer.errors import ConfigError, HandlerError
from consumer.observability.messaging import (
    BREAKER_STATE,
    CONSUMED_MESSAGES,
    DELIVERY_DURATION,
    EVENTS,
    FLOOD_GUARD_HALTED,
    PARKED_KEYS,
    PROCESS_DURATION,
    PROCESS_DURATION_BUCKETS_S,
    MessagingClient,
)
from consumer.observability.otlp import otlp_metric_exporter, otlp_span_exporter
from retry_topics.classification import qualified_name
from retry_topics.durations import parse_duration_ms
from retry_topics.errors import RetryTopicsError
from retry_topics.headers import TRACEPARENT, TRACESTATE, replace_header
from retry_topics.naming import retry_topic_name

__all__ = [
    "EXPORTERS", "INVALID_SPAN", "NO_SPAN", "EventOutcome", "Telemetry", "configure_metrics",
    "configure_tracing", "exports", "shutdown_providers",
]

LOG = logging.getLogger("clinic_events.telemetry")

INSTRUMENTATION_NAME = "clinic-events"
EXPORTERS = ("otlp", "console", "none")

EventOutcome = Literal["delivered", "duplicate", "retried", "parked", "dead_lettered"]
KafkaHeaders = Sequence[tuple[str, bytes | None]] | None


def _resource(service_name: str) -> Resource:
    """The SDK resource from OTEL_* variables, named ``service_name`` unless they name it."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    return resource


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _exporter_names(variable: str) -> list[str]:
    """The distinct exporter names a comma-separated OTEL_*_EXPORTER variable asks for."""
    raw = os.environ.get(variable, "otlp")
    names = [name.strip().lower() for name in raw.split(",") if name.strip()] or ["otlp"]
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise ConfigError(f"{variable}: unknown exporter {unknown[0]!r}; "
                          f"valid: {', '.join(EXPORTERS)}")
    return list(dict.fromkeys(names))


def exports(variable: str) -> bool:
    """Whether ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` selects any exporter.

    With ``none`` (or ``OTEL_SDK_DISABLED=true``) the caller can leave the SDK provider out of
    the hot path altogether: trace context still travels, nothing is recorded.
    """
    return not _sdk_disabled() and _exporter_names(variable) != ["none"]


def configure_tracing(service_name: str = "clinic-events") -> TracerProvider:
    """An SDK tracer provider configured from ``OTEL_*`` environment variables.

    ``OTEL_TRACES_EXPORTER`` (comma-separated) picks ``otlp`` (the default: OTLP over the
    transport ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` names, see
    ``consumer.observability.otlp``; the exporter reads ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``
    and friends itself), ``console`` or ``none``. ``OTEL_SERVICE_NAME`` /
    ``OTEL_RESOURCE_ATTRIBUTES`` override ``service_name``. With ``OTEL_SDK_DISABLED=true``
    the provider hands out no-op tracers.
    Nothing connects at start-up: an absent collector only causes warnings at export time.
    """
    provider = TracerProvider(resource=_resource(service_name), shutdown_on_exit=False)
    if _sdk_disabled():
        return provider
    names = _exporter_names("OTEL_TRACES_EXPORTER")
    for name in names:
        exporter: SpanExporter | None = None
        if name == "otlp":
            exporter = otlp_span_exporter()
        elif name == "console":
            # stderr: stdout is the command's answer (``--json`` documents scripts parse)
            exporter = ConsoleSpanExporter(service_name=service_name, out=sys.stderr)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def configure_metrics(service_name: str = "clinic-events",
                      readers: Sequence[MetricReader] = ()) -> MeterProvider:
    """An SDK meter provider from ``OTEL_METRICS_EXPORTER``: ``otlp`` (default), console, none.

    Readers export every ``OTEL_METRIC_EXPORT_INTERVAL`` ms (SDK default 60 s); the OTLP
    exporter's transport comes from ``OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL`` (see
    ``consumer.observability.otlp``) and it reads ``OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT``
    itself. ``readers`` are added beside them whatever the variable says (the Prometheus
    endpoint's reader: ``none`` turns OTLP off, not the scrape). The caller shuts the
    provider down at exit so the last figures are exported.
    """
    resource = _resource(service_name)
    if _sdk_disabled():
        return MeterProvider(resource=resource, shutdown_on_exit=False)
    names = _exporter_names("OTEL_METRICS_EXPORTER")
    readers = list(readers)
    for name in names:
        if name == "otlp":
            readers.append(PeriodicExportingMetricReader(otlp_metric_exporter()))
        elif name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stderr)))
    return MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)


def shutdown_providers(*providers: TracerProvider | MeterProvider, timeout_s: float = 3.0) -> None:
    """Flush and shut down telemetry providers, but never hold up an exit for long.

    With no collector listening, the OTLP exporters retry for up to their timeout (10 s by
    default) on shutdown; a consumer asked to stop should not wait on that. Each provider
    shuts down in its own thread, all within ``timeout_s``: a traces endpoint that does not
    answer must not cost the last metrics a healthy metrics endpoint would take. A provider
    not done by then is left behind, with a warning that what it held is dropped.
    """
    workers = [(provider, threading.Thread(target=provider.shutdown, daemon=True,
                                           name=f"telemetry-shutdown-{_kind(provider)}"))
               for provider in providers]
    for _, worker in workers:
        worker.start()
    deadline = time.monotonic() + timeout_s
    for provider, worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            LOG.warning("telemetry: the %s exporter did not finish within %g s (is the "
                        "collector reachable?); its last %s are dropped", _kind(provider),
                        timeout_s, "spans" if _kind(provider) == "traces" else "figures")


def _kind(provider: TracerProvider | MeterProvider) -> str:
    return "traces" if isinstance(provider, TracerProvider) else "metrics"


def _format_traceparent(context: SpanContext) -> str | None:
    """W3C ``traceparent`` of ``context`` (version 00), or ``None`` if it is not valid."""
    if not context.is_valid:
        return None
    return (f"00-{context.trace_id:032x}-{context.span_id:016x}-"
            f"{int(context.trace_flags):02x}")


class _NoSpan(AbstractContextManager[Span]):
    """``with`` over nothing: yields ``INVALID_SPAN``; stateless, so one instance is shared."""

    def __enter__(self) -> Span:
        return INVALID_SPAN

    def __exit__(self, *_exc: object) -> None:
        return None


NO_SPAN: AbstractContextManager[Span] = _NoSpan()
"""The scope of a span not made: records nothing, carries no context."""


class PropagatedContext(AbstractContextManager[Span]):
    """``with``: a record's incoming trace context made current, with no span of our own.

    Inside it, the current span is the parent's non-recording span, exactly as under the
    API's no-op tracer: ``current_traceparent`` and ``headers_with_traceparent`` hand the
    upstream trace on, and spans started inside are no-ops too.
    """

    __slots__ = ("_context", "_token")

    def __init__(self, parent: Context) -> None:
        self._context = parent
        self._token: Token[Context] | None = None

    def __enter__(self) -> Span:
        self._token = otel_context.attach(self._context)
        return trace.get_current_span(self._context)

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None


def _process_attributes(topic: str, partition: int, offset: int, key: bytes | None,
                        event_id: str | None, attempt: int,
                        group: str) -> dict[str, str | int]:
    """The messaging semantic-convention attributes of a record's ``process`` span."""
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
        "messaging.consumer.group.name": group,
        "clinic_events.attempt": attempt,
    }
    if event_id is not None:
        attributes["messaging.message.id"] = event_id
    if key is not None:
        # A key with no unambiguous string form is left out (semantic conventions); a plain
        # try costs less than contextlib.suppress on this per-record path.
        try:  # noqa: SIM105
            attributes["messaging.kafka.message.key"] = key.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return attributes


def _send_attributes(topic: str, event_id: str | None,
                     key: bytes | None = None) -> dict[str, str | int]:
    """The messaging semantic-convention attributes of a ``send`` span."""
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": topic,
    }
    if event_id is not None:
        attributes["messaging.message.id"] = event_id
    if key is not None:
        try:  # noqa: SIM105 - as in _process_attributes
            attributes["messaging.kafka.message.key"] = key.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return attributes


def _error_type(exc: BaseException) -> str:
    """``error.type`` for an exception: a handler's error class, else the dotted class path."""
    return exc.error_class if isinstance(exc, HandlerError) else qualified_name(type(exc))


class Telemetry:
    """Spans and metrics for consuming and republishing; built once, shared by all workers."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        client: MessagingClient | None = None,
    ) -> None:
        tracers = tracer_provider or trace.get_tracer_provider()
        meters = meter_provider or metrics.get_meter_provider()
        self._tracer = tracers.get_tracer(INSTRUMENTATION_NAME)
        # Decided once: asking the global provider per record reads the environment each
        # time. A provider installed globally after this object was built is not seen.
        self.tracing_live = isinstance(self._tracer, SdkTracer) or (
            isinstance(self._tracer, trace.ProxyTracer)
            and isinstance(trace.get_tracer_provider(), TracerProvider))
        # Same for metrics: without an SDK meter provider nothing is recorded, so the
        # processor does not even time handler calls.
        self.metrics_live = isinstance(meters, MeterProvider)
        self._propagator = TraceContextTextMapPropagator()
        self._client = client
        self._span_extras = client.span_attributes() if client is not None else {}
        self._metric_base = (client.metric_attributes() if client is not None
                             else {"messaging.system": "kafka"})
        # tier label -> the messaging attributes of its points; built on first use
        self._consumed_by_tier: dict[str, dict[str, str | int]] = {}
        meter = meters.get_meter(INSTRUMENTATION_NAME)
        self._events = meter.create_counter(
            EVENTS, unit="{event}", description="Events handled, by outcome and tier")
        self._duration = meter.create_histogram(
            DELIVERY_DURATION, unit="ms",
            description="Time spent in the delivery handler per attempt")
        self._consumed = meter.create_counter(
            CONSUMED_MESSAGES, unit="{message}",
            description="Records of the main topic and the retry tiers whose fate is settled")
        self._process_duration = meter.create_histogram(
            PROCESS_DURATION, unit="s", description="Time spent in the handler per call",
            explicit_bucket_boundaries_advisory=PROCESS_DURATION_BUCKETS_S)
        self._meter = meter

    def watch_the_system(self, breaker_open: Callable[[], bool],
                         halted: Callable[[], bool]) -> None:
        """Gauges of the downstream breaker (0 closed, 2 open) and the flood guard (1 while
        halted), read when a reader collects."""
        attributes = {key: value for key, value in self._metric_base.items()
                      if key in ("messaging.system", "messaging.consumer.group.name")}

        def breaker(_options: CallbackOptions) -> Iterator[Observation]:
            yield Observation(2 if breaker_open() else 0, attributes)

        def guard(_options: CallbackOptions) -> Iterator[Observation]:
            yield Observation(1 if halted() else 0, attributes)

        self._meter.create_observable_gauge(
            BREAKER_STATE, callbacks=[breaker],
            description="The downstream breaker: 0 closed, 2 open (only probes are sent)")
        self._meter.create_observable_gauge(
            FLOOD_GUARD_HALTED, callbacks=[guard],
            description="1 while the flood guard holds the stream after too many dead letters")

    def watch_parked(self, parked_keys: Callable[[], int]) -> None:
        """A gauge of the record keys whose later events wait parked behind one in a retry
        tier (or a held dead letter), read from the dedup store when a reader collects.

        Every instance reports the store's count, which is shared: aggregate with ``max``,
        not ``sum``. A store that cannot answer skips the point rather than fail the export.
        """
        attributes = {key: value for key, value in self._metric_base.items()
                      if key in ("messaging.system", "messaging.consumer.group.name")}

        def parked(_options: CallbackOptions) -> Iterator[Observation]:
            try:
                count = parked_keys()
            except Exception as exc:  # noqa: BLE001 - a metric never stops the consumer
                LOG.debug("could not count parked keys: %s", exc)
                return
            yield Observation(count, attributes)

        self._meter.create_observable_gauge(
            PARKED_KEYS, callbacks=[parked], unit="{key}",
            description="Record keys whose later events wait behind one in a retry tier")

    def process_span(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        headers: KafkaHeaders,
        event_id: str | None,
        attempt: int,
        group: str,
        traced: bool | None = None,
    ) -> AbstractContextManager[Span]:
        """A CONSUMER span, child of the record's trace context and current inside ``with``.

        ``traced`` says whether ``headers`` carry a trace context, when the caller knows.

        Without an SDK tracer nothing is recorded, so no span is made at all:

        * no trace context on the record: nothing to propagate either; a shared context
          manager yielding ``INVALID_SPAN`` is returned (a span cost ~20 us per record, a
          generator-based context manager ~2 us);
        * a trace context: it is made current as it came (``PropagatedContext``), which is
          all the API's no-op tracer would have done, for a third of the cost (measured
          ~12 us against ~36 us with ``current_traceparent``). The handler's context and
          every republished record's headers carry it on exactly as before.
        """
        if not self.tracing_live:
            if traced is None:
                traced = any(name in (TRACEPARENT, TRACESTATE) for name, _ in headers or ())
            if not traced:
                return NO_SPAN
            return PropagatedContext(self._extract(headers))
        return self._span(self.start_process_span(
            topic, partition, offset, key, headers, event_id, attempt, group))

    def start_process_span(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        headers: KafkaHeaders,
        event_id: str | None,
        attempt: int,
        group: str,
    ) -> Span:
        """``process_span``'s span, started but neither current nor ended.

        For a topic attempt that may go on in another thread: the poll thread makes a
        record's first call and, if it fails, hands the record (and this span) to a lane for
        the quick retries, so one attempt stays one span. Use it with ``current_span``; the
        caller ends it.
        """
        attributes = _process_attributes(topic, partition, offset, key, event_id, attempt, group)
        if self._span_extras:
            attributes.update(self._span_extras)
        return self._start(f"process {topic}", SpanKind.CONSUMER, attributes,
                           self._extract(headers))

    @contextmanager
    def current_span(self, span: Span) -> Iterator[Span]:
        """``span`` made current, not ended on the way out unless an exception ends it."""
        with trace.use_span(span, end_on_exit=False, record_exception=False,
                            set_status_on_exception=False):
            try:
                yield span
            except Exception as exc:
                self.record_error(span, _error_type(exc))
                span.end()
                raise

    def _extract(self, headers: KafkaHeaders) -> Context:
        """The W3C trace context in ``headers`` (an empty context if none is valid).

        Kafka header names are case-sensitive: only ``traceparent`` and ``tracestate``, as
        written by OpenTelemetry's Kafka instrumentations and by clinic-events, count.
        """
        carrier: dict[str, str] = {}
        for name, value in headers or ():
            if name in (TRACEPARENT, TRACESTATE) and value is not None:
                carrier[name] = value.decode("utf-8", errors="replace")
        return self._propagator.extract(carrier)

    @contextmanager
    def send_span(self, topic: str, event_id: str | None,
                  key: bytes | None = None) -> Iterator[Span]:
        """A PRODUCER span for republishing, child of the current span.

        ``key`` is the record key, recorded as ``messaging.kafka.message.key`` (when it is
        UTF-8 text): pass it only for keys that are entity ids by the wire contract, as
        ``consumer.events.model.entity_key`` makes them, never a patient identifier.
        """
        with self._span(self._start(f"send {topic}", SpanKind.PRODUCER,
                                    self._send(topic, event_id, key), None)) as span:
            yield span

    @contextmanager
    def replay_span(self, topic: str, event_id: str | None,
                    headers: KafkaHeaders, key: bytes | None = None) -> Iterator[Span]:
        """A PRODUCER span for a DLQ record an operator replays, continuing its trace.

        The parent is the trace context in the dead-lettered record's ``headers`` (its DLQ
        ``send`` span), so the replay, maybe days later, is a hop of the event's one trace;
        inside, ``headers_with_traceparent`` stamps the replayed record with this span.
        ``key`` as for ``send_span``.
        """
        with self._span(self._start(f"send {topic}", SpanKind.PRODUCER,
                                    self._send(topic, event_id, key),
                                    self._extract(headers))) as span:
            yield span

    def _send(self, topic: str, event_id: str | None,
              key: bytes | None) -> dict[str, str | int]:
        attributes = _send_attributes(topic, event_id, key)
        if self._span_extras:
            attributes.update(self._span_extras)
        return attributes

    def _start(self, name: str, kind: SpanKind, attributes: dict[str, str | int],
               parent: Context | None) -> Span:
        """A span started (child of ``parent``, or of the current span), not yet current.

        The SDK's own exception recording would copy the exception message into a span
        event; it is switched off and replaced by record_error (type + redacted status).
        """
        return self._tracer.start_span(
            name, context=parent, kind=kind, attributes=attributes,
            record_exception=False, set_status_on_exception=False)

    @contextmanager
    def _span(self, span: Span) -> Iterator[Span]:
        """``span`` current inside ``with`` and ended after it (marked failed on an error)."""
        with self.current_span(span):
            yield span
        span.end()

    def current_traceparent(self) -> str | None:
        """The ``traceparent`` of the current span, or ``None`` outside any valid span."""
        return _format_traceparent(trace.get_current_span().get_span_context())

    def current_tracestate(self) -> str | None:
        """The ``tracestate`` of the current span (its parent's, passed on), or ``None``."""
        context = trace.get_current_span().get_span_context()
        return (context.trace_state.to_header() or None) if context.is_valid else None

    def headers_with_traceparent(self, headers: KafkaHeaders) -> list[tuple[str, bytes]]:
        """``headers`` with ``traceparent``/``tracestate`` replaced by the current span's.

        Outside a valid span the headers are returned unchanged. A ``tracestate`` the current
        context does not carry is removed, so it cannot be paired with the wrong trace.
        """
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        result = [(name, value if value is not None else b"") for name, value in headers or ()]
        traceparent = carrier.get(TRACEPARENT)
        if traceparent is None:
            return result
        result = replace_header(result, TRACEPARENT, traceparent)
        tracestate = carrier.get(TRACESTATE)
        if tracestate:
            return replace_header(result, TRACESTATE, tracestate)
        return [(name, value) for name, value in result if name != TRACESTATE]

    def record_error(self, span: Span, error_type: str) -> None:
        """Mark ``span`` failed: ``error.type`` and an ERROR status described by that type.

        Deliberately no message: redaction catches credentials and numbers but not names or
        addresses, and an error message may quote any payload field.
        """
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, error_type))

    def count_event(self, outcome: EventOutcome, *, tier: str, count: int = 1) -> None:
        """Count ``count`` events' outcome; ``tier`` is ``main`` or the retry tier (``30s``).

        Each is one record consumed from that tier's topic, so the messaging counter grows
        by as many.
        """
        self._events.add(count, {"outcome": outcome, "tier": tier})
        self._consumed.add(count, self._tier_attributes(tier, "poll"))

    def record_delivery_duration(
        self, duration_ms: float, *, tier: str, error_type: str | None = None
    ) -> None:
        """Record how long one handler call took; ``error_type`` is set when it failed."""
        attributes = {"tier": tier} if error_type is None else {"tier": tier,
                                                                "error.type": error_type}
        self._duration.record(duration_ms, attributes)
        process = self._tier_attributes(tier, "process")
        if error_type is not None:
            process = {**process, "error.type": error_type}
        self._process_duration.record(duration_ms / 1000, process)

    def _tier_attributes(self, tier: str, operation: str) -> dict[str, str | int]:
        """The messaging attributes of a point about ``tier``'s topic, for ``operation``."""
        cache_key = f"{operation} {tier}"
        attributes = self._consumed_by_tier.get(cache_key)
        if attributes is None:
            attributes = {**self._metric_base, "messaging.operation.name": operation}
            topic = self._tier_topic(tier)
            if topic is not None:
                attributes["messaging.destination.name"] = topic
            self._consumed_by_tier[cache_key] = attributes
        return attributes

    def _tier_topic(self, tier: str) -> str | None:
        """The topic of a tier label (``main``, ``30s``), when the main topic is known."""
        main = self._client.main_topic if self._client is not None else None
        if main is None:
            return None
        if tier == "main":
            return main
        try:
            return retry_topic_name(main, parse_duration_ms(tier))
        except RetryTopicsError:
            return None
