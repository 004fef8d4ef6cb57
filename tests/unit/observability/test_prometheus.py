"""The /metrics endpoint, the messaging-convention metrics and the client's span attributes."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consumer.errors import ConfigError
from consumer.observability.messaging import MessagingClient, first_bootstrap_server
from consumer.observability.prometheus import PrometheusEndpoint
from consumer.observability.telemetry import Telemetry, configure_metrics

CLIENT = MessagingClient.of("kafka-1.example:9093,kafka-2.example:9093", client_id="ce-1",
                            group="clinic-events", main_topic="clinic.events")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def endpoint(clean_otel_env: pytest.MonkeyPatch) -> Iterator[PrometheusEndpoint]:
    clean_otel_env.setenv("OTEL_METRICS_EXPORTER", "none")  # the scrape, and no OTLP
    served = PrometheusEndpoint("127.0.0.1", _free_port())
    yield served
    served.close()


Series = tuple[str, frozenset[tuple[str, str]]]


def _scrape(endpoint: PrometheusEndpoint) -> dict[Series, float]:
    """(name, labels) -> value, for every sample line of the page."""
    with urllib.request.urlopen(endpoint.url, timeout=5) as response:  # noqa: S310 - loopback
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: dict[Series, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        pairs = frozenset((key, raw.strip('"')) for key, _, raw in
                          (pair.partition("=") for pair in labels.rstrip("}").split(",") if pair))
        samples[(name, pairs)] = float(value)
    return samples


def _series(name: str, **labels: str) -> Series:
    return name, frozenset(labels.items())


def test_the_endpoint_serves_the_pipelines_metrics_under_prometheus_names(
    endpoint: PrometheusEndpoint,
) -> None:
    meters = configure_metrics(readers=[endpoint.reader])
    endpoint.start()
    telemetry = Telemetry(None, meters, CLIENT)
    assert telemetry.metrics_live
    telemetry.count_event("delivered", tier="main", count=3)
    telemetry.count_event("dead_lettered", tier="30s")
    telemetry.record_delivery_duration(20.0, tier="main")
    telemetry.record_delivery_duration(300.0, tier="30s", error_type="http.503")
    samples = _scrape(endpoint)
    meters.shutdown()

    common = {"messaging_consumer_group_name": "clinic-events", "messaging_system": "kafka",
              "server_address": "kafka-1.example", "server_port": "9093"}
    main = {**common, "messaging_destination_name": "clinic.events"}
    tier = {**common, "messaging_destination_name": "clinic.events.retry.30s"}
    consumed = "messaging_client_consumed_messages_total"
    assert samples[_series(consumed, **main, messaging_operation_name="poll")] == 3
    assert samples[_series(consumed, **tier, messaging_operation_name="poll")] == 1
    assert samples[_series("clinic_events_events_total", outcome="delivered", tier="main")] == 3
    assert samples[_series("clinic_events_events_total", outcome="dead_lettered",
                           tier="30s")] == 1
    process = "messaging_process_duration_seconds"
    ok = {**main, "messaging_operation_name": "process", "error_type": ""}
    failed = {**tier, "messaging_operation_name": "process", "error_type": "http.503"}
    assert samples[_series(f"{process}_count", **ok)] == 1
    assert samples[_series(f"{process}_sum", **ok)] == pytest.approx(0.02)
    assert samples[_series(f"{process}_bucket", **failed, le="0.5")] == 1
    assert samples[_series(f"{process}_bucket", **failed, le="0.25")] == 0
    assert samples[_series("clinic_events_delivery_duration_milliseconds_count",
                           error_type="", tier="main")] == 1
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)


def test_a_port_already_taken_is_a_configuration_error(endpoint: PrometheusEndpoint) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = PrometheusEndpoint("127.0.0.1", int(taken.getsockname()[1]))
        with pytest.raises(ConfigError, match=r"\[metrics\]: cannot serve /metrics"):
            busy.start()


@pytest.mark.parametrize(("servers", "expected"), [
    ("127.0.0.1:9092", ("127.0.0.1", 9092)),
    ("kafka-1:19092, kafka-2:19092", ("kafka-1", 19092)),
    ("SASL_SSL://broker.example:9093", ("broker.example", 9093)),
    ("[::1]:9094", ("::1", 9094)),
    ("broker", ("broker", 9092)),
])
def test_server_address_and_port_come_from_the_first_bootstrap_server(
    servers: str, expected: tuple[str, int],
) -> None:
    assert first_bootstrap_server(servers) == expected


def test_spans_name_the_broker_and_the_client_and_send_spans_the_entity_key() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(provider, None, CLIENT)
    with telemetry.process_span("clinic.events", 0, 7, b"appt-1", None, "evt-1", 1,
                                "clinic-events"), \
            telemetry.send_span("clinic.events.retry.30s", "evt-1", key=b"appt-1"):
        pass
    with telemetry.send_span("clinic.events.dlq", "evt-2", key=b"\xff\xfe"):
        pass
    with telemetry.send_span("clinic.events.dlq", "evt-3"):
        pass
    spans = {(s.name, (s.attributes or {}).get("messaging.message.id")): dict(s.attributes or {})
             for s in exporter.get_finished_spans()}
    for attributes in spans.values():
        assert attributes["server.address"] == "kafka-1.example"
        assert attributes["server.port"] == 9093
        assert attributes["messaging.client.id"] == "ce-1"
    assert spans[("send clinic.events.retry.30s", "evt-1")][
        "messaging.kafka.message.key"] == "appt-1"
    assert "messaging.kafka.message.key" not in spans[("send clinic.events.dlq", "evt-2")]
    assert "messaging.kafka.message.key" not in spans[("send clinic.events.dlq", "evt-3")]
    provider.shutdown()


def test_without_a_configured_client_id_each_process_has_its_own() -> None:
    client = MessagingClient.of("127.0.0.1:9092")
    assert client.client_id.startswith("clinic-events@")
    assert client.client_id.endswith(f":{__import__('os').getpid()}")
