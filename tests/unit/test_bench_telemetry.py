"""Target 1c's pass gets the telemetry ``clinic-events run`` would build in its environment."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from bench.targets import otel_environment, run_telemetry
from consumer.observability.telemetry import shutdown_providers


@pytest.fixture(autouse=True)
def _no_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)


def test_with_no_otel_variable_both_sdk_providers_are_built_as_run_builds_them() -> None:
    tracer, meters = run_telemetry()
    try:
        assert isinstance(tracer, TracerProvider)
        assert isinstance(meters, MeterProvider)
    finally:
        shutdown_providers(*(p for p in (tracer, meters) if p is not None), timeout_s=0.5)
    assert "OTEL_TRACES_EXPORTER" not in otel_environment()


def test_an_exporter_set_to_none_leaves_its_provider_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    assert run_telemetry() == (None, None)
    assert otel_environment().startswith("OTEL_METRICS_EXPORTER=none, OTEL_TRACES_EXPORTER=none")
