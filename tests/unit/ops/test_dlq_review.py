"""The review page's plain-words reasons, grouping, filters and journeys."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from consumer.ops.dlq.ledger import Resolution
from consumer.ops.dlq.model import DlqFilter, DlqFilterError, DlqRecord
from consumer.ops.dlq.review import (
    PARKED_TEXT,
    Reason,
    ReviewFilter,
    clinic_of,
    group_records,
    journey,
    plain_reason,
    trace_id,
)
from retry_topics.headers import RecordHeaders
from tests.unit.sample_events import sample_event

TRACE = "0af7651916cd43dd8448eb211c80319c"


def _record(offset: int = 0, *, reason: str | None = "permanent", cls: str | None = "http.422",
            attempts: int = 1, event: dict[str, Any] | None = None, stamp: int = 1_000,
            resolved: bool = False, partition: int = 0) -> DlqRecord:
    event = event if event is not None else sample_event("appointment.scheduled")
    return DlqRecord(
        partition=partition, offset=offset, timestamp_ms=stamp, key=b"appt-1", value=b"",
        headers=RecordHeaders(dlq_reason=reason, error_class=cls, attempts=attempts,  # type: ignore[arg-type]
                              event_type=str(event["event_type"]) if event else None,
                              last_failure_at_ms=stamp,
                              traceparent=f"00-{TRACE}-b7ad6b7169203331-01"),
        event=event or None,
        resolution=Resolution(status="replayed") if resolved else None)


@pytest.mark.parametrize(("reason", "cls", "attempts", "key", "text"), [
    ("permanent", "http.422", 1, "permanent:http.422",
     "EHR rejected the request: 422 Unprocessable Entity"),
    ("exhausted", "http.503", 4, "exhausted:http.503:4",
     "gave up after 4 attempts: EHR unavailable (503)"),
    ("exhausted", "http.429", 3, "exhausted:http.429:3",
     "gave up after 3 attempts: EHR asked to slow down (429)"),
    ("exhausted", "http.500", 2, "exhausted:http.500:2",
     "gave up after 2 attempts: EHR answered 500 Internal Server Error"),
    ("exhausted", "timeout", 4, "exhausted:timeout:4",
     "gave up after 4 attempts: EHR did not answer in time"),
    ("exhausted", "connection", 4, "exhausted:connection:4",
     "gave up after 4 attempts: could not connect to EHR"),
    ("permanent", "billing.errors.CoverageRejected", 1,
     "permanent:billing.errors.CoverageRejected", "handler refused the event (CoverageRejected)"),
    ("undecodable", "consumer.errors.UndecodableRecord", 0, "undecodable",
     "undecodable record"),
])
def test_reasons_are_plain_words_from_the_class_and_status_only(
        reason: str, cls: str, attempts: int, key: str, text: str) -> None:
    found = plain_reason(_record(reason=reason, cls=cls, attempts=attempts))
    assert (found.key, found.text) == (key, text)
    assert ReviewFilter(reason=found.key).reason == key  # usable as a filter


def test_a_parked_dead_letter_is_held_not_failed() -> None:
    record = _record(reason="parked", cls=None)
    parked = dataclasses.replace(record, headers=dataclasses.replace(
        record.headers, parked_behind="evt-head"))
    assert plain_reason(parked) == Reason("parked", PARKED_TEXT)
    assert PARKED_TEXT.startswith("held behind an earlier dead letter of the same key")


def test_the_downstream_name_is_configurable() -> None:
    assert plain_reason(_record(), "the billing API").text.startswith(
        "the billing API rejected the request")


def test_a_record_without_event_or_class_is_undecodable() -> None:
    record = _record(reason=None, cls=None, event={})
    assert plain_reason(record).text == "undecodable record"
    assert clinic_of(record) == "(unknown)"


def test_groups_by_reason_type_and_clinic_leave_resolved_out_and_span_times() -> None:
    other_clinic = sample_event("appointment.scheduled")
    other_clinic["clinic_id"] = "clinic-009"
    records = [_record(0, stamp=3_000), _record(1, stamp=1_000), _record(2, stamp=2_000),
               _record(3, reason="exhausted", cls="http.503", attempts=4),
               _record(4, event=other_clinic), _record(5, resolved=True)]
    groups = group_records(records)
    first = groups[0]
    assert (first.reason.key, first.event_type, first.clinic, first.count) == (
        "permanent:http.422", "appointment.scheduled", "clinic-north", 3)
    assert (first.oldest_ms, first.newest_ms, first.records) == (1_000, 3_000,
                                                                 [(0, 0), (0, 1), (0, 2)])
    assert sorted(g.count for g in groups) == [1, 1, 3]
    assert all(first.filter.matches(r) for r in records[:3])
    assert not first.filter.matches(records[3])
    assert not first.filter.matches(records[4])


def test_filters_by_time_range_and_refuse_odd_input() -> None:
    record = _record(stamp=5_000)
    assert ReviewFilter(since_ms=5_000, until_ms=5_000).matches(record)
    assert not ReviewFilter(since_ms=5_001).matches(record)
    assert not ReviewFilter(until_ms=4_999).matches(record)
    assert ReviewFilter(event_type="appointment.scheduled", clinic="clinic-north").matches(record)
    with pytest.raises(DlqFilterError):
        ReviewFilter(reason="<script>")
    with pytest.raises(DlqFilterError):
        ReviewFilter(since_ms=2, until_ms=1)


def test_a_dlq_filter_of_coordinates_matches_exactly_those_records() -> None:
    flt = DlqFilter(records=frozenset({(0, 1), (2, 7)}))
    assert flt.matches(_record(1))
    assert flt.matches(_record(7, partition=2))
    assert not flt.matches(_record(2))
    assert flt.describe() == {"records": [(0, 1), (2, 7)]}


def test_trace_ids_come_from_traceparent_only_when_well_formed() -> None:
    assert trace_id(f"00-{TRACE}-b7ad6b7169203331-01") == TRACE
    assert trace_id("garbage") is None
    assert trace_id(None) is None


def test_the_journey_has_each_hop_still_held_then_the_dead_letter() -> None:
    record = _record(reason="exhausted", cls="http.503", attempts=3, stamp=9_000)
    hops = [("t.retry.2s", RecordHeaders(attempts=2, last_failure_at_ms=2_000,
                                         error_class="http.503", traceparent=None)),
            ("t.retry.1s", RecordHeaders(attempts=1, last_failure_at_ms=1_000,
                                         error_class="http.503",
                                         traceparent=f"00-{TRACE}-b7ad6b7169203331-01"))]
    steps = journey(record, hops, main="t", tiers=["t.retry.1s", "t.retry.2s"],
                    dlq_topic="t.dlq")
    assert [(s.number, s.at_ms, s.ran_in) for s in steps] == [
        (1, 1_000, "t"), (2, 2_000, "t.retry.1s"), (3, 9_000, "t.retry.2s")]
    assert steps[0].outcome == "failed: EHR unavailable (503); retried via t.retry.1s"
    assert steps[0].trace_id == TRACE
    assert steps[-1].outcome == ("dead-lettered to t.dlq: gave up after 3 attempts: EHR "
                                 "unavailable (503)")
