"""The ``clinic_events.parked.keys`` gauge: the dedup store's count of parked keys, read when
a reader collects (``Telemetry.watch_parked``, wired by ``run`` over its store)."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from consumer.dedup.store import MemoryDedupStore
from consumer.observability.messaging import PARKED_KEYS, MessagingClient
from consumer.observability.prometheus import PrometheusEndpoint
from consumer.observability.telemetry import Telemetry, configure_metrics
from retry_topics.clock import ManualClock
from retry_topics.ordering import Link

CLIENT = MessagingClient.of("kafka-1.example:9093", client_id="ce-1", group="clinic-events",
                            main_topic="clinic.events")
TIER = "clinic.events.retry.5s"


def _gauge(reader: InMemoryMetricReader) -> list[tuple[float, dict[str, object]]]:
    """The parked-keys points of one collection: (value, attributes)."""
    data = reader.get_metrics_data()
    points: list[tuple[float, dict[str, object]]] = []
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != PARKED_KEYS:
                    continue
                assert metric.unit == "{key}"
                for point in metric.data.data_points:
                    assert isinstance(point, NumberDataPoint)
                    points.append((point.value, dict(point.attributes or {})))
    return points


def _watched(count: Callable[[], int]) -> InMemoryMetricReader:
    reader = InMemoryMetricReader()
    Telemetry(meter_provider=MeterProvider(metric_readers=[reader]),
              client=CLIENT).watch_parked(count)
    return reader


def test_the_gauge_follows_the_stores_parked_keys_at_each_collection() -> None:
    clock = ManualClock(start_ms=1_700_000_000_000)
    store = MemoryDedupStore(clock)
    reader = _watched(lambda: store.parked_summary().keys)  # as cli.wiring wires it
    group = {"messaging.system": "kafka", "messaging.consumer.group.name": "clinic-events"}
    assert _gauge(reader) == [(0, group)]
    for key, event_id in (("appt-1", "e1"), ("appt-1", "e2"), ("appt-2", "e3")):
        store.join(key, Link(event_id=event_id, topic=TIER, parked_at_ms=clock.now_ms()))
    assert _gauge(reader) == [(1, group)]  # keys, not events; appt-2's lone e3 waits for none
    store.join("appt-2", Link(event_id="e4", topic=TIER, parked_at_ms=clock.now_ms()))
    assert _gauge(reader) == [(2, group)]
    store.leave("appt-1", "e1")
    assert _gauge(reader) == [(1, group)]


def test_a_store_that_cannot_answer_skips_the_point_and_the_export_goes_on() -> None:
    def broken() -> int:
        raise ConnectionError("redis is restarting")

    assert _gauge(_watched(broken)) == []


@pytest.fixture
def endpoint(clean_otel_env: pytest.MonkeyPatch) -> Iterator[PrometheusEndpoint]:
    clean_otel_env.setenv("OTEL_METRICS_EXPORTER", "none")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    served = PrometheusEndpoint("127.0.0.1", port)
    yield served
    served.close()


def test_prometheus_scrapes_it_as_clinic_events_parked_keys(endpoint: PrometheusEndpoint) -> None:
    meters = configure_metrics(readers=[endpoint.reader])
    endpoint.start()
    Telemetry(None, meters, CLIENT).watch_parked(lambda: 3)
    with urllib.request.urlopen(endpoint.url, timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    meters.shutdown()
    samples = [line for line in text.splitlines() if line.startswith("clinic_events_parked_keys")]
    assert samples == ['clinic_events_parked_keys{messaging_consumer_group_name="clinic-events",'
                       'messaging_system="kafka"} 3.0']
