"""The lag report as gauges: per-partition lag and age, retries, DLQ, members, staleness."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from consumer.observability import messaging
from consumer.ops.lag.gauges import LagGauges
from consumer.ops.lag.model import (
    GroupSample,
    LagRules,
    PartitionSample,
    TopicSample,
    evaluate,
)
from retry_topics.clock import ManualClock

Points = dict[str, list[tuple[dict[str, object], float]]]


def _sample(now_ms: int) -> GroupSample:
    main = TopicSample(topic="clinic.events", kind="main", partitions=(
        PartitionSample(partition=0, committed=10, beginning=0, end=14,
                        oldest_timestamp_ms=now_ms - 8_000),
        PartitionSample(partition=1, committed=5, beginning=0, end=5)))
    tier = TopicSample(topic="clinic.events.retry.30s", kind="retry", partitions=(
        PartitionSample(partition=0, committed=0, beginning=0, end=5,
                        oldest_timestamp_ms=now_ms - 100_000, waiting=2, overdue=3,
                        oldest_due_at_ms=now_ms - 70_000),))
    missing = TopicSample(topic="clinic.events.retry.2m", kind="retry", exists=False)
    dlq = TopicSample(topic="clinic.events.dlq", kind="dlq", partitions=(
        PartitionSample(partition=0, committed=None, beginning=2, end=9,
                        oldest_timestamp_ms=now_ms - 3_600_000),))
    return GroupSample(group="clinic-events", taken_at_ms=now_ms, members=2,
                       topics=(main, tier, missing, dlq))


def _points(reader: InMemoryMetricReader) -> Points:
    data = reader.get_metrics_data()
    found: Points = {}
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = [(dict(p.attributes or {}), p.value)
                                      for p in metric.data.data_points
                                      if isinstance(p, NumberDataPoint)]
    return found


def _gauges() -> tuple[LagGauges, InMemoryMetricReader, ManualClock, MeterProvider]:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    clock = ManualClock()
    gauges = LagGauges(meters.get_meter("test"), clock=clock, stale_after_ms=45_000)
    return gauges, reader, clock, meters


def test_a_report_becomes_lag_retry_dlq_and_member_gauges() -> None:
    gauges, reader, clock, meters = _gauges()
    gauges.update(evaluate(_sample(clock.now_ms()), [], LagRules()))
    points = _points(reader)

    lag = {(a["messaging.destination.name"], a["messaging.destination.partition.id"],
            a["clinic_events.topic.kind"]): v for a, v in points[messaging.CONSUMER_LAG_MESSAGES]}
    assert lag == {("clinic.events", "0", "main"): 4, ("clinic.events", "1", "main"): 0,
                   ("clinic.events.retry.30s", "0", "retry"): 5}
    age = {(a["messaging.destination.name"], a["messaging.destination.partition.id"]): v
           for a, v in points[messaging.CONSUMER_LAG_AGE]}
    assert age == {("clinic.events", "0"): 8.0, ("clinic.events", "1"): 0.0,
                   ("clinic.events.retry.30s", "0"): 100.0}
    assert [v for _, v in points[messaging.RETRY_WAITING_MESSAGES]] == [2]
    assert [v for _, v in points[messaging.RETRY_OVERDUE_MESSAGES]] == [3]
    assert [v for _, v in points[messaging.RETRY_OVERDUE_AGE]] == [70.0]
    assert points[messaging.DLQ_MESSAGES] == [
        ({"messaging.system": "kafka", "messaging.consumer.group.name": "clinic-events",
          "messaging.destination.name": "clinic.events.dlq"}, 7)]
    assert [v for _, v in points[messaging.DLQ_OLDEST_AGE]] == [3600.0]
    assert points[messaging.GROUP_MEMBERS] == [
        ({"messaging.system": "kafka", "messaging.consumer.group.name": "clinic-events"}, 2)]
    assert points[messaging.LAG_SAMPLES] == [({"outcome": "ok"}, 1)]
    meters.shutdown()


def test_stale_figures_are_not_shown_and_failed_samples_are_counted() -> None:
    """A sampler that cannot reach Kafka must not keep reporting the last lag as current."""
    gauges, reader, clock, meters = _gauges()
    assert messaging.CONSUMER_LAG_MESSAGES not in _points(reader)  # nothing sampled yet
    gauges.update(evaluate(_sample(clock.now_ms()), [], LagRules()))
    clock.advance(40_000)
    gauges.failed()
    assert _points(reader)[messaging.GROUP_MEMBERS]  # still fresh enough
    clock.advance(10_000)
    gauges.failed()
    points = _points(reader)
    assert not points.get(messaging.GROUP_MEMBERS)
    assert not points.get(messaging.CONSUMER_LAG_MESSAGES)
    assert dict((a["outcome"], v) for a, v in points[messaging.LAG_SAMPLES]) == {
        "ok": 1, "failed": 2}
    meters.shutdown()
