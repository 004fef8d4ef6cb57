"""The lag report as metrics: observable gauges over the latest sample ``run`` took.

``run`` samples the group every ``[metrics] lag_interval`` in a thread of its own
(``consumer.cli.metrics``) and hands each report to :class:`LagGauges`; a scrape (or an OTLP
export) only reads the last report, so it never waits on Kafka. A report older than
``stale_after_ms`` (Kafka unreachable for several intervals) is not shown: the series
disappear rather than repeat figures nobody measured, and ``clinic_events.lag.samples``
counts the failed samples.

Every point carries ``messaging.system`` and ``messaging.consumer.group.name``; per-topic
points ``messaging.destination.name``; per-partition points also
``messaging.destination.partition.id`` and ``clinic_events.topic.kind`` (``main`` or
``retry``). The figures are those of ``clinic-events lag`` (``consumer.ops.lag.model``): lag
counts from the committed offset (from the beginning where the group never committed), the
DLQ's from its beginning; ages are in seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from consumer.observability.messaging import (
    CONSUMER_LAG_AGE,
    CONSUMER_LAG_MESSAGES,
    DLQ_MESSAGES,
    DLQ_OLDEST_AGE,
    GROUP_MEMBERS,
    LAG_SAMPLES,
    RETRY_OVERDUE_AGE,
    RETRY_OVERDUE_MESSAGES,
    RETRY_WAITING_MESSAGES,
)
from consumer.ops.lag.model import GroupReport, TopicReport
from retry_topics.clock import Clock

__all__ = ["LagGauges"]

Attributes = dict[str, str | int]


class LagGauges:
    """Observable gauges over the latest :class:`GroupReport`; ``update`` from any thread."""

    def __init__(self, meter: Meter, *, clock: Clock, stale_after_ms: int) -> None:
        self._clock = clock
        self._stale_after_ms = stale_after_ms
        self._lock = threading.Lock()
        self._report: GroupReport | None = None
        self._samples = meter.create_counter(
            LAG_SAMPLES, unit="{sample}",
            description="Lag samples run took from Kafka, by outcome (ok, failed)")
        gauges: tuple[tuple[str, str, str, Callable[[GroupReport], Iterator[Observation]]],
                      ...] = (
            (CONSUMER_LAG_MESSAGES, "{message}",
             "Records of a main or retry partition after the group's committed offset",
             _lag_messages),
            (CONSUMER_LAG_AGE, "s",
             "Age of a partition's oldest unconsumed record (0 without lag)", _lag_age),
            (RETRY_WAITING_MESSAGES, "{message}",
             "Unconsumed records of a retry tier whose due time is still ahead", _waiting),
            (RETRY_OVERDUE_MESSAGES, "{message}",
             "Unconsumed records of a retry tier whose due time has passed", _overdue),
            (RETRY_OVERDUE_AGE, "s",
             "How long past its due time a retry tier's oldest overdue record is",
             _overdue_age),
            (DLQ_MESSAGES, "{message}", "Records the dead-letter topic holds", _dlq_messages),
            (DLQ_OLDEST_AGE, "s", "Age of the oldest record the dead-letter topic holds",
             _dlq_age),
            (GROUP_MEMBERS, "{member}", "Members of the consumer group", _members),
        )
        for name, unit, description, observe in gauges:
            meter.create_observable_gauge(name, callbacks=[self._callback(observe)],
                                          unit=unit, description=description)

    def update(self, report: GroupReport) -> None:
        """A new sample succeeded: its figures replace the last ones."""
        with self._lock:
            self._report = report
        self._samples.add(1, {"outcome": "ok"})

    def failed(self) -> None:
        """A sample failed: the last figures stay until they are stale."""
        self._samples.add(1, {"outcome": "failed"})

    def current(self) -> GroupReport | None:
        """The latest report, or None if there is none or it is stale."""
        with self._lock:
            report = self._report
        if report is None or self._clock.now_ms() - report.taken_at_ms > self._stale_after_ms:
            return None
        return report

    def _callback(self, observe: Callable[[GroupReport], Iterator[Observation]]
                  ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            report = self.current()
            return [] if report is None else list(observe(report))
        return callback


def _group(report: GroupReport) -> Attributes:
    return {"messaging.system": "kafka", "messaging.consumer.group.name": report.group}


def _topic(report: GroupReport, topic: TopicReport) -> Attributes:
    return {**_group(report), "messaging.destination.name": topic.topic}


def _consumed_topics(report: GroupReport) -> Iterator[TopicReport]:
    return (t for t in report.topics if t.exists and t.kind != "dlq")


def _lag_messages(report: GroupReport) -> Iterator[Observation]:
    for topic in _consumed_topics(report):
        for part in topic.partitions:
            yield Observation(part.lag, _partition(report, topic, part.partition))


def _lag_age(report: GroupReport) -> Iterator[Observation]:
    for topic in _consumed_topics(report):
        for part in topic.partitions:
            if part.lag == 0:
                yield Observation(0, _partition(report, topic, part.partition))
            elif part.time_lag_ms is not None:  # else: the record could not be read in time
                yield Observation(part.time_lag_ms / 1000,
                                  _partition(report, topic, part.partition))


def _partition(report: GroupReport, topic: TopicReport, partition: int) -> Attributes:
    return {**_topic(report, topic), "messaging.destination.partition.id": str(partition),
            "clinic_events.topic.kind": topic.kind}


def _retry_topics(report: GroupReport) -> Iterator[TopicReport]:
    return (t for t in report.topics if t.exists and t.kind == "retry")


def _waiting(report: GroupReport) -> Iterator[Observation]:
    for topic in _retry_topics(report):
        yield Observation(topic.waiting, _topic(report, topic))


def _overdue(report: GroupReport) -> Iterator[Observation]:
    for topic in _retry_topics(report):
        yield Observation(topic.overdue, _topic(report, topic))


def _overdue_age(report: GroupReport) -> Iterator[Observation]:
    for topic in _retry_topics(report):
        yield Observation((topic.max_overdue_ms or 0) / 1000, _topic(report, topic))


def _dlq_topics(report: GroupReport) -> Iterator[TopicReport]:
    return (t for t in report.topics if t.exists and t.kind == "dlq")


def _dlq_messages(report: GroupReport) -> Iterator[Observation]:
    for topic in _dlq_topics(report):
        yield Observation(topic.lag, _topic(report, topic))


def _dlq_age(report: GroupReport) -> Iterator[Observation]:
    for topic in _dlq_topics(report):
        age = topic.max_time_lag_ms
        if topic.lag == 0 or age is not None:
            yield Observation((age or 0) / 1000, _topic(report, topic))


def _members(report: GroupReport) -> Iterator[Observation]:
    yield Observation(report.members, _group(report))
