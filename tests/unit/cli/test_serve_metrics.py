"""serve exposes /metrics when [metrics] prometheus_port is set, and stops it after."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import replace

import pytest

from consumer.cli.serve import _lag_metrics
from consumer.config.settings import load_settings
from consumer.dev.local_kafka import free_port


def test_serve_serves_metrics_on_the_configured_port_and_stops_with_the_page() -> None:
    base = load_settings(None, env={"CLINIC_EVENTS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    port = free_port()
    settings = replace(base, metrics=replace(base.metrics, prometheus_port=port,
                                             lag_interval_ms=60_000))
    with _lag_metrics(settings, say=False), \
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        assert page.status == 200
        assert b"process_cpu_seconds_total" in page.read()
    with pytest.raises(urllib.error.URLError, match="refused"):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
