"""Avro single-object encoding of clinic events, with schema resolution on read.

Wire format (Avro specification, "Single object encoding")::

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema | Avro binary body

The fingerprint identifies the writer schema without a registry service: a reader looks it up
among every version shipped in ``schemas/`` and resolves the body into the newest version, so
records written with older schemas stay readable (fields added later take their defaults).
Anything else (wrong marker, unknown fingerprint, truncated or corrupt body) raises
``UndecodableRecord`` carrying the raw bytes, so it can be dead-lettered unchanged.
"""

from __future__ import annotations

import io
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from consumer.errors import InvalidEvent, UndecodableRecord
from consumer.events.schema_store import SchemaStore, default_store

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8

#: event_type value -> the full name of the payload record that must carry it.
PAYLOAD_RECORD_BY_EVENT_TYPE: dict[str, str] = {
    "intake.submitted": "clinic.events.IntakeSubmitted",
    "appointment.scheduled": "clinic.events.AppointmentScheduled",
    "appointment.rescheduled": "clinic.events.AppointmentRescheduled",
    "appointment.cancelled": "clinic.events.AppointmentCancelled",
    "eligibility.check_requested": "clinic.events.EligibilityCheckRequested",
}
EVENT_TYPES = tuple(PAYLOAD_RECORD_BY_EVENT_TYPE)

EventRecord = dict[str, Any]
"""A decoded event: envelope fields with Avro-native values, ``payload`` a plain dict."""


class EventCodec:
    """Encodes events with the newest schema and decodes any known version into it."""

    def __init__(self, store: SchemaStore | None = None) -> None:
        self._store = store or default_store()
        current = self._current = self._store.current
        self._writer = current.parsed
        self._prefix = MAGIC + current.fingerprint
        # decode runs once per consumed record: the fingerprint lookup is one dict get
        self._by_fingerprint = self._store.by_fingerprint()

    @property
    def store(self) -> SchemaStore:
        return self._store

    def encode(self, event: EventRecord) -> bytes:
        """Encode ``event``; its ``payload`` branch is chosen by ``event_type``."""
        event_type = event.get("event_type")
        record_name = PAYLOAD_RECORD_BY_EVENT_TYPE.get(str(event_type))
        if record_name is None:
            raise InvalidEvent(
                f"unknown event type {event_type!r}; valid: {', '.join(EVENT_TYPES)}",
                field="event_type",
            )
        datum = dict(event)
        datum["payload"] = (record_name, event.get("payload"))
        out = io.BytesIO()
        out.write(self._prefix)
        try:
            schemaless_writer(out, self._writer, datum)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidEvent(f"does not fit schema: {exc}") from exc
        return out.getvalue()

    def decode(self, data: bytes | None) -> EventRecord:
        """Decode one record value, resolving older writer schemas into the newest."""
        if data is None:
            raise UndecodableRecord("record has no value (tombstone)", data)
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise UndecodableRecord("not Avro single-object encoding (bad marker)", data)
        writer = self._by_fingerprint.get(data[2:HEADER_SIZE])
        if writer is None:
            raise UndecodableRecord(
                f"unknown schema fingerprint {data[2:HEADER_SIZE].hex()}", data
            )
        body = io.BytesIO(data)
        body.seek(HEADER_SIZE)
        reader = None if writer is self._current else self._current.parsed
        try:
            decoded = schemaless_reader(body, writer.parsed, reader, return_record_name=True)
        except Exception as exc:
            reason = f"corrupt Avro body: {type(exc).__name__}: {exc}"
            raise UndecodableRecord(reason, data) from exc
        if body.tell() != len(data):
            raise UndecodableRecord("trailing bytes after the Avro body", data)
        if not isinstance(decoded, dict):
            raise UndecodableRecord("Avro body is not a record", data)
        return _unwrap_payload(decoded, data)


def _unwrap_payload(decoded: dict[str, Any], raw: bytes) -> EventRecord:
    """Replace the ``(record name, payload)`` pair by the payload, checking it fits the type."""
    name, payload = decoded["payload"]
    expected = PAYLOAD_RECORD_BY_EVENT_TYPE.get(decoded["event_type"])
    if expected is not None and expected != name:
        raise UndecodableRecord(
            f"event_type {decoded['event_type']!r} does not match payload {name}", raw
        )
    decoded["payload"] = payload
    return decoded
