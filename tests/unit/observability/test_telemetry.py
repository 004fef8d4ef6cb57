"""Telemetry: trace context across retry hops, span attributes, errors, metrics, env config."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, SpanKind, StatusCode

from consumer.errors import ConfigError, TransientError
from consumer.observability.telemetry import (
    INVALID_SPAN,
    NO_SPAN,
    Telemetry,
    configure_metrics,
    configure_tracing,
    exports,
    shutdown_providers,
)
from tests.unit.sample_events import sample_event

UPSTREAM_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
UPSTREAM = f"00-{UPSTREAM_TRACE_ID}-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(exporter: InMemorySpanExporter) -> Iterator[Telemetry]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Telemetry(provider)
    provider.shutdown()


def _process(
    telemetry: Telemetry, headers: list[tuple[str, bytes | None]], topic: str = "clinic.events"
) -> AbstractContextManager[Span]:
    return telemetry.process_span(topic, 2, 41, b"appt-2001", headers, "evt-7", 1, "clinic-events")


def test_trace_survives_two_hops(telemetry: Telemetry, exporter: InMemorySpanExporter) -> None:
    incoming: list[tuple[str, bytes | None]] = [("traceparent", UPSTREAM.encode())]
    with _process(telemetry, incoming) as first, telemetry.send_span(
        "clinic.events.retry.5s", "evt-7"
    ) as send:
        hop_headers = telemetry.headers_with_traceparent(incoming)
        assert trace.get_current_span() is send
    assert first.get_span_context().trace_id == int(UPSTREAM_TRACE_ID, 16)
    with _process(telemetry, list(hop_headers), "clinic.events.retry.5s") as second:
        assert second.get_span_context().trace_id == int(UPSTREAM_TRACE_ID, 16)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    retry_span = spans["process clinic.events.retry.5s"]
    assert retry_span.parent is not None
    assert retry_span.parent.span_id == send.get_span_context().span_id
    assert spans["send clinic.events.retry.5s"].kind is SpanKind.PRODUCER
    first_parent = spans["process clinic.events"].parent
    assert first_parent is not None
    assert first_parent.span_id == 0xB7AD6B7169203331


def test_without_traceparent_a_new_root_trace_starts(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    with _process(telemetry, [("other", None)]):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


def test_process_span_is_current_and_carries_semconv_attributes(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    with telemetry.process_span("clinic.events", 2, 41, b"appt-2001", None, "evt-7", 3,
                                "clinic-events") as span:
        assert trace.get_current_span() is span
        current = telemetry.current_traceparent()
    assert current is not None
    assert current.split("-")[2] == format(span.get_span_context().span_id, "016x")
    (finished,) = exporter.get_finished_spans()
    assert finished.name == "process clinic.events"
    assert finished.kind is SpanKind.CONSUMER
    assert dict(finished.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "clinic.events",
        "messaging.destination.partition.id": "2",
        "messaging.kafka.offset": 41,
        "messaging.consumer.group.name": "clinic-events",
        "messaging.message.id": "evt-7",
        "messaging.kafka.message.key": "appt-2001",
        "clinic_events.attempt": 3,
    }


def test_a_key_that_is_not_utf8_is_left_out_rather_than_mangled(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """Two binary keys must not collapse into one replacement-character string."""
    with telemetry.process_span("clinic.events", 0, 1, b"\xff\xfe-key", None, "e", 1, "g"):
        pass
    (finished,) = exporter.get_finished_spans()
    assert "messaging.kafka.message.key" not in (finished.attributes or {})


def test_traceparent_is_replaced_not_appended(telemetry: Telemetry) -> None:
    headers: list[tuple[str, bytes | None]] = [
        ("clinic.attempts", b"1"), ("traceparent", UPSTREAM.encode()), ("x-upstream", None),
        ("traceparent", b"00-stale"), ("tracestate", b"vendor=stale"),
    ]
    with _process(telemetry, [("traceparent", UPSTREAM.encode())]):
        stamped = telemetry.headers_with_traceparent(headers)
        expected = telemetry.current_traceparent()
    assert expected is not None
    assert [name for name, _ in stamped] == ["clinic.attempts", "traceparent", "x-upstream"]
    assert dict(stamped)["traceparent"] == expected.encode()
    assert dict(stamped)["x-upstream"] == b""
    incoming: list[tuple[str, bytes | None]] = [
        ("traceparent", UPSTREAM.encode()), ("tracestate", b"vendor=abc")]
    with _process(telemetry, incoming):  # the tracestate travels with its trace
        restamped = telemetry.headers_with_traceparent(stamped)
    assert [name for name, _ in restamped] == [
        "clinic.attempts", "traceparent", "x-upstream", "tracestate"]
    assert dict(restamped)["tracestate"] == b"vendor=abc"


def test_outside_a_span_there_is_nothing_to_stamp(telemetry: Telemetry) -> None:
    assert telemetry.current_traceparent() is None
    headers: list[tuple[str, bytes | None]] = [("traceparent", UPSTREAM.encode())]
    assert telemetry.headers_with_traceparent(headers) == [("traceparent", UPSTREAM.encode())]


def test_escaping_exception_sets_error_type_without_its_message(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(TransientError), _process(telemetry, []):
        raise TransientError("patient Maria Okafor unreachable", error_class="http.429")
    (finished,) = exporter.get_finished_spans()
    assert (finished.attributes or {})["error.type"] == "http.429"
    assert finished.status.status_code is StatusCode.ERROR
    assert finished.status.description == "http.429"  # the type, never the message
    assert finished.events == ()
    with pytest.raises(KeyError), telemetry.send_span("clinic.events.dlq", None):
        raise KeyError("pat-501")
    send = exporter.get_finished_spans()[-1]
    assert (send.attributes or {})["error.type"] == "builtins.KeyError"
    assert "messaging.message.id" not in (send.attributes or {})


def _leaves(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for inner in value.values():
            yield from _leaves(inner)
    elif value is not None:
        yield str(value)


def _handle_and_fail(telemetry: Telemetry, event: dict[str, Any]) -> None:
    """Process an event, republish it, then fail with its payload in the error message."""
    with telemetry.process_span("clinic.events", 0, 5, b"intake-1001", None, event["event_id"],
                                1, "clinic-events"):
        with telemetry.send_span("clinic.events.dlq", event["event_id"]):
            pass
        raise ValueError(f"bad payload {event['payload']}")


def test_no_payload_values_in_span_attributes(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    event = sample_event("intake.submitted", "evt-9")
    with pytest.raises(ValueError, match="Maria"):
        _handle_and_fail(telemetry, event)
    payload_values = set(_leaves(event["payload"])) - {"intake-1001"}  # the key is an id
    for finished in exporter.get_finished_spans():
        texts = [str(v) for v in (finished.attributes or {}).values()]
        texts.append(finished.status.description or "")
        for text in texts:
            leaked = [value for value in payload_values if value in text]
            assert leaked == [], (finished.name, text)


def test_metrics_count_outcomes_and_durations() -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    telemetry = Telemetry(TracerProvider(), meters)
    telemetry.count_event("delivered", tier="main")
    telemetry.count_event("delivered", tier="main")
    telemetry.count_event("retried", tier="30s")
    telemetry.record_delivery_duration(12.5, tier="main")
    telemetry.record_delivery_duration(40.0, tier="30s", error_type="http.503")
    data = reader.get_metrics_data()
    assert data is not None
    metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
               for m in sm.metrics}
    counts = {(p.attributes or {}).get("outcome"): p.value
              for p in metrics["clinic_events.events"].data.data_points
              if isinstance(p, NumberDataPoint)}
    assert counts == {"delivered": 2, "retried": 1}
    durations = metrics["clinic_events.delivery.duration"]
    assert durations.unit == "ms"
    histogram = [p for p in durations.data.data_points if isinstance(p, HistogramDataPoint)]
    assert sum(p.count for p in histogram) == 2
    assert {(p.attributes or {}).get("error.type") for p in histogram} == {None, "http.503"}
    meters.shutdown()


def test_configure_tracing_samples_as_the_otel_sampler_variables_say(
    clean_otel_env: pytest.MonkeyPatch,
) -> None:
    """Production runs sample traces (a recorded span costs ~100 us): the standard variables."""
    clean_otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    clean_otel_env.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    clean_otel_env.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    provider = configure_tracing()
    assert provider.sampler.get_description().startswith(
        "ParentBased{root:TraceIdRatioBased{0.1}")
    provider.shutdown()


def test_configure_tracing_names_the_service(clean_otel_env: pytest.MonkeyPatch) -> None:
    clean_otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    provider = configure_tracing()
    assert provider.resource.attributes["service.name"] == "clinic-events"
    provider.shutdown()
    clean_otel_env.setenv("OTEL_SERVICE_NAME", "clinic-events-eu")
    renamed = configure_tracing()
    assert renamed.resource.attributes["service.name"] == "clinic-events-eu"
    renamed.shutdown()


def test_configure_tracing_refuses_unknown_exporters_unless_disabled(
    clean_otel_env: pytest.MonkeyPatch,
) -> None:
    clean_otel_env.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigError, match=r"OTEL_TRACES_EXPORTER.*zipkin"):
        configure_tracing()
    clean_otel_env.setenv("OTEL_SDK_DISABLED", "true")
    provider = configure_tracing()
    with Telemetry(provider).send_span("t", None) as span:
        assert not span.is_recording()
    provider.shutdown()


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str]]] = []

    def do_POST(self) -> None:  # the name http.server dispatches to
        self.rfile.read(int(self.headers["Content-Length"]))
        _Collector.received.append((self.path, self.headers["Content-Type"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


def test_otlp_exporter_is_the_default_and_honours_the_endpoint(
    clean_otel_env: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        clean_otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT",
                              f"http://127.0.0.1:{server.server_address[1]}")
        provider = configure_tracing()
        assert capfd.readouterr() == ("", "")  # nothing printed at start-up
        with Telemetry(provider).send_span("clinic.events.retry.5s", "evt-1"):
            pass
        assert provider.force_flush()
        provider.shutdown()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert ("/v1/traces", "application/x-protobuf") in _Collector.received


def test_no_collector_prints_nothing_at_start_up(
    clean_otel_env: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    provider = configure_tracing()
    provider.shutdown()
    assert capfd.readouterr() == ("", "")


def test_shutdown_never_holds_up_an_exit_on_a_stuck_exporter() -> None:
    """A provider whose flush hangs (no collector) is abandoned after the bound."""
    release = threading.Event()
    finished: list[str] = []

    class StuckProvider(TracerProvider):
        def shutdown(self) -> None:
            release.wait(10)
            finished.append("stuck")

    class QuickProvider(TracerProvider):
        def shutdown(self) -> None:
            finished.append("quick")

    shutdown_providers(QuickProvider(shutdown_on_exit=False), StuckProvider(shutdown_on_exit=False),
                       timeout_s=0.05)
    assert finished == ["quick"]
    release.set()


def test_a_stuck_traces_exporter_does_not_cost_the_metrics_their_last_export(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Providers shut down side by side: the metrics one, listed after a stuck tracer,
    still finishes; the stuck one is named in a warning."""
    release = threading.Event()
    finished: list[str] = []

    class StuckTracer(TracerProvider):
        def shutdown(self) -> None:
            release.wait(10)

    class Metrics(MeterProvider):
        def shutdown(self, timeout_millis: float = 30_000) -> None:
            time.sleep(0.05)  # an export that takes a moment
            finished.append("metrics")

    try:
        shutdown_providers(StuckTracer(shutdown_on_exit=False), Metrics(shutdown_on_exit=False),
                           timeout_s=0.5)
    finally:
        release.set()
    assert finished == ["metrics"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "clinic_events.telemetry"]
    assert warnings == ["telemetry: the traces exporter did not finish within 0.5 s (is the "
                        "collector reachable?); its last spans are dropped"]


def test_the_console_exporters_write_to_stderr_so_json_answers_stay_parsable(
    clean_otel_env: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    clean_otel_env.setenv("OTEL_TRACES_EXPORTER", "console")
    clean_otel_env.setenv("OTEL_METRICS_EXPORTER", "console")
    tracer_provider, meter_provider = configure_tracing(), configure_metrics()
    tracer_provider.get_tracer("t").start_span("send t").end()
    meter_provider.get_meter("m").create_counter("c").add(1)
    shutdown_providers(tracer_provider, meter_provider)
    out, err = capfd.readouterr()
    assert out == ""
    assert '"name": "send t"' in err


def test_without_an_sdk_tracer_incoming_trace_context_is_still_passed_on() -> None:
    """No SDK: no span is made for untraced records; a traced record keeps its trace."""
    telemetry = Telemetry(trace.NoOpTracerProvider())
    with telemetry.process_span("t", 0, 1, None, [], "e1", 1, "g") as span:
        assert not span.get_span_context().is_valid
        assert telemetry.current_traceparent() is None
    upstream = f"00-{UPSTREAM_TRACE_ID}-b7ad6b7169203331-01"
    headers = [("traceparent", upstream.encode())]
    with telemetry.process_span("t", 0, 2, None, headers, "e2", 1, "g"):
        assert telemetry.current_traceparent() == upstream


@pytest.mark.parametrize(("value", "disabled", "expected"), [
    (None, False, True), ("otlp", False, True), ("console,none", False, True),
    ("none", False, False), ("otlp", True, False),
])
def test_exports_tells_whether_any_exporter_is_selected(
    clean_otel_env: pytest.MonkeyPatch, value: str | None, disabled: bool, expected: bool,
) -> None:
    """``run`` leaves a provider that exports nothing out of the hot path."""
    if value is not None:
        clean_otel_env.setenv("OTEL_TRACES_EXPORTER", value)
    if disabled:
        clean_otel_env.setenv("OTEL_SDK_DISABLED", "true")
    assert exports("OTEL_TRACES_EXPORTER") is expected


def test_without_sdk_providers_nothing_is_recorded_and_no_span_is_built() -> None:
    quiet = Telemetry(trace.NoOpTracerProvider())
    assert not quiet.tracing_live
    assert not quiet.metrics_live
    assert quiet.process_span("t", 0, 1, None, [], "evt", 1, "g") is NO_SPAN
    with quiet.process_span("t", 0, 1, None, [], "evt", 1, "g") as span:
        assert span is INVALID_SPAN
    with quiet.process_span("t", 0, 1, None, [("traceparent", UPSTREAM.encode())], "evt", 1,
                            "g") as carried:
        assert carried.get_span_context().trace_id == int(UPSTREAM_TRACE_ID, 16)
    metered = Telemetry(trace.NoOpTracerProvider(), MeterProvider())
    assert metered.metrics_live


@pytest.mark.parametrize("incoming", [
    [("traceparent", UPSTREAM.encode())],
    [("traceparent", UPSTREAM.encode()), ("tracestate", b"vendor=a,other=b")],
    [("traceparent", UPSTREAM.upper().encode()), ("tracestate", b"vendor=a")],  # invalid
    [("traceparent", b"00-" + b"0" * 32 + b"-b7ad6b7169203331-01")],  # all-zero trace id
    [("traceparent", b"garbage"), ("tracestate", b"vendor=a")],
    [("tracestate", b"vendor=a")],
    [("Traceparent", UPSTREAM.encode())],  # not the header name: nothing to propagate
])
def test_without_an_sdk_a_trace_context_travels_as_under_the_apis_no_op_tracer(
    incoming: list[tuple[str, bytes | None]],
) -> None:
    """Handler context, hop headers and spans inside: the same as a no-op tracer's span."""
    telemetry = Telemetry(trace.NoOpTracerProvider())
    hop: list[tuple[str, bytes | None]] = [("clinic.attempts", b"1"), *incoming]

    def observed() -> tuple[str | None, list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        traceparent = telemetry.current_traceparent()
        outer = telemetry.headers_with_traceparent(hop)
        with telemetry.send_span("clinic.events.dlq", "evt-7"):
            inner = telemetry.headers_with_traceparent(hop)
        return traceparent, outer, inner

    with trace.NoOpTracer().start_as_current_span(
            "process clinic.events", context=telemetry._extract(incoming)):
        expected = observed()
    with _process(telemetry, incoming):
        got = observed()
    assert got == expected
    assert trace.get_current_span() is INVALID_SPAN  # the scope is left again
    if incoming[0][0] != "traceparent":
        assert got[0] is None




def test_the_breaker_and_flood_guard_states_are_gauges() -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(meter_provider=MeterProvider(metric_readers=[reader]))
    state = {"open": False, "halted": False}
    telemetry.watch_the_system(lambda: state["open"], lambda: state["halted"])

    def values() -> dict[str, float]:
        data = reader.get_metrics_data()
        assert data is not None
        found = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    point = m.data.data_points[0]
                    if m.name.startswith(("clinic_events.breaker", "clinic_events.flood")):
                        assert isinstance(point, NumberDataPoint)
                        found[m.name] = point.value
        return found

    assert values() == {"clinic_events.breaker.state": 0, "clinic_events.flood_guard.halted": 0}
    state.update(open=True, halted=True)
    assert values() == {"clinic_events.breaker.state": 2, "clinic_events.flood_guard.halted": 1}
