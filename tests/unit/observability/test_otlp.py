"""OTLP transport selection: the protocol variables, and export over gRPC to a real receiver."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from consumer.errors import ConfigError
from consumer.observability.otlp import otlp_metric_exporter, otlp_protocol, otlp_span_exporter
from consumer.observability.telemetry import Telemetry, configure_metrics, configure_tracing


@pytest.mark.parametrize(("environ", "traces", "metrics"), [
    ({}, "http/protobuf", "http/protobuf"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc", "grpc"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": " GRPC "}, "grpc", "grpc"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": ""}, "http/protobuf", "http/protobuf"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
      "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"}, "grpc", "http/protobuf"),
    ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "grpc", "http/protobuf"),
])
def test_the_signal_variable_wins_over_the_general_one_and_http_is_the_default(
    environ: dict[str, str], traces: str, metrics: str
) -> None:
    assert otlp_protocol("traces", environ) == traces
    assert otlp_protocol("metrics", environ) == metrics


def test_exporters_are_built_for_the_chosen_transport() -> None:
    grpc_env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert isinstance(otlp_span_exporter(grpc_env), GrpcSpanExporter)
    assert isinstance(otlp_metric_exporter(grpc_env), GrpcMetricExporter)
    assert isinstance(otlp_span_exporter({}), HttpSpanExporter)
    assert isinstance(otlp_metric_exporter({}), HttpMetricExporter)


@pytest.mark.parametrize(("value", "message"), [
    ("http/json", r"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: http/json is not supported.*"
                  r"valid: http/protobuf, grpc"),
    ("thrift", r"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: unknown OTLP protocol 'thrift'; "
               r"valid: http/protobuf, grpc"),
])
def test_a_protocol_the_exporters_cannot_speak_is_refused_naming_the_variable(
    value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        otlp_protocol("traces", {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": value})


def test_configure_tracing_refuses_a_bad_protocol_at_start_up(
    clean_otel_env: pytest.MonkeyPatch,
) -> None:
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL: http/json"):
        configure_tracing()


def test_no_protocol_is_consulted_when_nothing_exports_over_otlp(
    clean_otel_env: pytest.MonkeyPatch,
) -> None:
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    clean_otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    configure_tracing().shutdown()


@dataclass
class _Received:
    span_names: list[str] = field(default_factory=list)
    metric_names: list[str] = field(default_factory=list)


class _TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: _Received) -> None:
        self._received = received

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method name
        self._received.span_names.extend(
            span.name for resource in request.resource_spans
            for scope in resource.scope_spans for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsReceiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, received: _Received) -> None:
        self._received = received

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method name
        self._received.metric_names.extend(
            metric.name for resource in request.resource_metrics
            for scope in resource.scope_metrics for metric in scope.metrics)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
def grpc_collector() -> Iterator[tuple[str, _Received]]:
    """An OTLP/gRPC receiver on a free local port: its endpoint and what it received."""
    received = _Received()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceReceiver(received), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
        _MetricsReceiver(received), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.stop(grace=None)


def test_spans_and_metrics_reach_a_grpc_collector_when_grpc_is_asked_for(
    clean_otel_env: pytest.MonkeyPatch, grpc_collector: tuple[str, _Received],
    capfd: pytest.CaptureFixture[str],
) -> None:
    endpoint, received = grpc_collector
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    tracer_provider = configure_tracing()
    meter_provider = configure_metrics()
    assert capfd.readouterr() == ("", "")  # nothing printed at start-up
    telemetry = Telemetry(tracer_provider, meter_provider)
    with telemetry.send_span("clinic.events.retry.5s", "evt-1"):
        telemetry.count_event("retried", tier="main")
    assert tracer_provider.force_flush(10_000)
    assert meter_provider.force_flush(10_000)
    tracer_provider.shutdown()
    meter_provider.shutdown()
    assert received.span_names == ["send clinic.events.retry.5s"]
    assert "clinic_events.events" in received.metric_names
