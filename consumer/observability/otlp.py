"""The OTLP exporters, over the transport the standard ``OTEL_*`` variables ask for.

Why: collectors listen for OTLP on gRPC (port 4317), on HTTP/protobuf (port 4318), or on
both, and the OpenTelemetry specification lets the deployment choose with
``OTEL_EXPORTER_OTLP_PROTOCOL``, overridden per signal by
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL``. Ignoring it
would send HTTP requests to a gRPC-only collector, and the spans would be lost with only a
warning at export time. Values are ``http/protobuf`` (the specification's default) and
``grpc``. ``http/json`` is valid in the specification but the Python exporters cannot send
it, so it is refused at start-up rather than silently replaced.

The chosen exporter reads its endpoint, headers, timeout, compression and TLS settings
(``OTEL_EXPORTER_OTLP_[SIGNAL_]ENDPOINT`` and friends) itself. Each transport's package is
imported only when chosen, so start-up does not pay for the one left unused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace.export import SpanExporter

from consumer.errors import ConfigError

__all__ = ["DEFAULT_PROTOCOL", "PROTOCOLS", "otlp_metric_exporter", "otlp_protocol",
           "otlp_span_exporter"]

Protocol = Literal["http/protobuf", "grpc"]
Signal = Literal["traces", "metrics"]

PROTOCOLS: tuple[Protocol, ...] = ("http/protobuf", "grpc")
DEFAULT_PROTOCOL: Protocol = "http/protobuf"


def otlp_protocol(signal: Signal, environ: Mapping[str, str] = os.environ) -> Protocol:
    """The OTLP transport for ``signal``: its own variable, else the general one, else HTTP.

    Values are matched case-insensitively, as the specification asks of enum values; an
    empty variable counts as unset.
    """
    for variable in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL",
                     "OTEL_EXPORTER_OTLP_PROTOCOL"):
        raw = environ.get(variable, "").strip()
        if not raw:
            continue
        value = raw.lower()
        if value == "grpc":
            return "grpc"
        if value == "http/protobuf":
            return "http/protobuf"
        if value == "http/json":
            raise ConfigError(f"{variable}: http/json is not supported by the OpenTelemetry "
                              f"Python exporters; valid: {', '.join(PROTOCOLS)}")
        raise ConfigError(f"{variable}: unknown OTLP protocol {raw!r}; "
                          f"valid: {', '.join(PROTOCOLS)}")
    return DEFAULT_PROTOCOL


def otlp_span_exporter(environ: Mapping[str, str] = os.environ) -> SpanExporter:
    """An OTLP span exporter over the transport ``otlp_protocol("traces")`` names."""
    if otlp_protocol("traces", environ) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def otlp_metric_exporter(environ: Mapping[str, str] = os.environ) -> MetricExporter:
    """An OTLP metric exporter over the transport ``otlp_protocol("metrics")`` names."""
    if otlp_protocol("metrics", environ) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter()
