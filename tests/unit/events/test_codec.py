"""Avro single-object encoding: round trips, schema evolution, undecodable records."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any

import pytest
from fastavro import schemaless_writer

from consumer.errors import InvalidEvent, UndecodableRecord
from consumer.events.codec import EVENT_TYPES, MAGIC, EventCodec
from consumer.events.schema_store import default_store, load_version
from tests.unit.sample_events import sample_event, sample_events


def test_every_event_type_round_trips() -> None:
    codec = EventCodec()
    for event in sample_events():
        assert codec.decode(codec.encode(event)) == event


def test_samples_cover_every_event_type() -> None:
    assert {e["event_type"] for e in sample_events()} == set(EVENT_TYPES)


def test_record_carries_marker_and_current_fingerprint() -> None:
    data = EventCodec().encode(sample_event("appointment.scheduled"))
    assert data[:2] == MAGIC
    assert data[2:10] == default_store().current.fingerprint


def test_store_holds_every_shipped_version_with_distinct_fingerprints() -> None:
    store = default_store()
    assert [v.version for v in store.versions] == [1, 2]
    assert len({v.fingerprint for v in store.versions}) == 2


def _encode_with_v1(event: dict[str, Any]) -> bytes:
    raw = json.loads(resources.files("schemas").joinpath("clinic_event.v1.avsc").read_text())
    v1 = load_version(1, raw)
    names = {
        "appointment.scheduled": "clinic.events.AppointmentScheduled",
        "intake.submitted": "clinic.events.IntakeSubmitted",
    }
    datum = {k: v for k, v in event.items() if k != "correlation_id"}
    datum["payload"] = (names[event["event_type"]], dict(event["payload"]))
    datum["payload"][1].pop("telehealth", None)
    out = io.BytesIO()
    out.write(MAGIC + v1.fingerprint)
    schemaless_writer(out, v1.parsed, datum)
    return out.getvalue()


def test_v1_record_is_read_with_v2_schema_and_new_fields_take_defaults() -> None:
    event = sample_event("appointment.scheduled")
    decoded = EventCodec().decode(_encode_with_v1(event))
    assert decoded["correlation_id"] is None
    assert decoded["payload"]["telehealth"] is False
    assert decoded["payload"]["appointment_id"] == event["payload"]["appointment_id"]
    assert decoded["occurred_at"] == event["occurred_at"]


def test_v1_intake_with_phi_reads_unchanged() -> None:
    event = sample_event("intake.submitted")
    decoded = EventCodec().decode(_encode_with_v1(event))
    assert decoded["payload"]["demographics"] == event["payload"]["demographics"]
    assert decoded["payload"]["demographics"]["date_of_birth"] == date(1984, 3, 2)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "bad marker"),
        (b"not avro at all", "bad marker"),
        (MAGIC + b"\x00" * 8 + b"\x02a", "unknown schema fingerprint"),
        (None, "tombstone"),
    ],
)
def test_undecodable_records_raise_one_error_type_with_raw_bytes(
    raw: bytes | None, reason: str
) -> None:
    with pytest.raises(UndecodableRecord, match=reason) as caught:
        EventCodec().decode(raw)
    assert caught.value.raw == raw


def test_truncated_body_is_undecodable() -> None:
    data = EventCodec().encode(sample_event("appointment.cancelled"))
    with pytest.raises(UndecodableRecord) as caught:
        EventCodec().decode(data[:-5])
    assert caught.value.raw == data[:-5]


def test_trailing_garbage_is_undecodable() -> None:
    data = EventCodec().encode(sample_event("appointment.cancelled")) + b"\xff\xff"
    with pytest.raises(UndecodableRecord, match="trailing"):
        EventCodec().decode(data)


def test_encoding_rejects_unknown_event_type() -> None:
    event = sample_event("appointment.cancelled")
    event["event_type"] = "appointment.teleported"
    with pytest.raises(InvalidEvent, match="unknown event type"):
        EventCodec().encode(event)


def test_encoding_rejects_payload_missing_fields() -> None:
    event = sample_event("appointment.cancelled")
    del event["payload"]["reason_code"]
    with pytest.raises(InvalidEvent):
        EventCodec().encode(event)


def test_timestamps_decode_as_aware_utc_datetimes() -> None:
    codec = EventCodec()
    decoded = codec.decode(codec.encode(sample_event("appointment.rescheduled")))
    assert decoded["occurred_at"].tzinfo is not None
    assert decoded["occurred_at"] == datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
