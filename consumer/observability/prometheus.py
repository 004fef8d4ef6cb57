"""``/metrics`` for Prometheus to scrape: a metric reader on the meter provider, served over HTTP.

The figures are those the OTLP exporter sends (one meter provider, two readers):
``opentelemetry-exporter-prometheus``'s ``PrometheusMetricReader`` collects from the provider
on every scrape and ``prometheus-client`` serves the result in the text exposition format,
with names translated as the OpenTelemetry specification says (dots to underscores, the unit
as a suffix, ``_total`` on counters). A scrape also runs the observable gauges' callbacks,
which read the lag sampler's latest figures and never Kafka itself.

The reader has a registry of its own, not ``prometheus_client``'s global one, so two endpoints
in one process (tests) do not collide, and the page holds clinic-events' metrics, the
``target_info`` of its resource (``service.name``) and the standard ``process_*`` figures.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from consumer.errors import ConfigError

__all__ = ["PrometheusEndpoint"]


class PrometheusEndpoint:
    """``http://<host>:<port>/metrics``; add ``reader`` to the meter provider, then ``start``."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        # Scope labels (otel_scope_name="clinic-events", ...) would repeat on every series.
        self.reader = PrometheusMetricReader(scope_info_enabled=False, registry=self.registry)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        """Listen; a port that cannot be bound is a ``ConfigError`` (exit code 2)."""
        try:
            self._server, self._thread = start_http_server(
                self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"[metrics]: cannot serve /metrics on "
                              f"{self.host}:{self.port}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        """Stop serving (the reader is shut down with the meter provider)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
