"""The JSON shape of clinic events, as people and upstream tools write and read them.

One event per JSON object (``examples/events.jsonl`` holds one per line)::

    {"event_id": "...", "event_type": "appointment.scheduled",
     "occurred_at": "2026-11-29T08:00:00Z", "source_system": "scheduling",
     "clinic_id": "clinic-001", "correlation_id": null,
     "payload": {"appointment_id": "...", "starts_at": "2026-12-01T09:00:00Z", ...}}

Timestamps are ISO 8601 strings with a zone (or epoch milliseconds), dates ``YYYY-MM-DD``,
enums their symbol. ``event_from_json`` converts to the Avro-native form the codec writes and
reports the first problem with the path of the field at fault (``payload.starts_at``), which
is what ``clinic-events publish`` shows next to a line number.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

from consumer.errors import InvalidEvent
from consumer.events.codec import EVENT_TYPES, PAYLOAD_RECORD_BY_EVENT_TYPE, EventRecord
from consumer.events.schema_store import default_store

#: The payload field that names the entity an event is about; it is the Kafka record key,
#: so one appointment's (or intake's, or check's) events stay in order on one partition.
ENTITY_KEY_FIELD: dict[str, str] = {
    "intake.submitted": "intake_id",
    "appointment.scheduled": "appointment_id",
    "appointment.rescheduled": "appointment_id",
    "appointment.cancelled": "appointment_id",
    "eligibility.check_requested": "check_id",
}


def entity_key(event: Mapping[str, Any]) -> bytes:
    """The Kafka record key of ``event``: the id of the entity it is about."""
    field = ENTITY_KEY_FIELD[event["event_type"]]
    return str(event["payload"][field]).encode("utf-8")


@cache
def _envelope_fields() -> tuple[dict[str, Any], ...]:
    return tuple(default_store().current.raw["fields"])


@cache
def _payload_schemas() -> dict[str, dict[str, Any]]:
    """Payload record schema (JSON form) by its full name."""
    payload_field = next(f for f in _envelope_fields() if f["name"] == "payload")
    return {f"clinic.events.{record['name']}": record for record in payload_field["type"]}


def event_from_json(obj: object) -> EventRecord:
    """Validate a JSON event and convert it to the codec's Avro-native form."""
    if not isinstance(obj, Mapping):
        raise InvalidEvent("an event must be a JSON object")
    event_type = obj.get("event_type")
    if event_type not in PAYLOAD_RECORD_BY_EVENT_TYPE:
        raise InvalidEvent(
            f"must be one of {', '.join(EVENT_TYPES)} (got {event_type!r})", field="event_type"
        )
    payload_schema = _payload_schemas()[PAYLOAD_RECORD_BY_EVENT_TYPE[event_type]]
    out: EventRecord = {}
    for field in _envelope_fields():
        name = field["name"]
        if name == "payload":
            out[name] = _convert_record(payload_schema, obj.get("payload"), "payload")
        else:
            out[name] = _convert_field(field, obj, name)
    _reject_unknown(obj, {f["name"] for f in _envelope_fields()}, "")
    if not out["event_id"]:
        raise InvalidEvent("must not be empty", field="event_id")
    _reject_empty_entity_id(event_type, out["payload"])
    return out


def _reject_empty_entity_id(event_type: str, payload: Mapping[str, Any]) -> None:
    """The entity id is the record key: an empty one would key every such event alike."""
    field = ENTITY_KEY_FIELD[event_type]
    if not payload[field]:
        raise InvalidEvent("must not be empty", field=f"payload.{field}")


def event_to_json(event: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON form of a decoded event (the inverse of ``event_from_json``)."""
    return {key: _to_json_value(value) for key, value in event.items()}


def _to_json_value(value: Any) -> Any:
    if isinstance(value, str):  # most values: answered before the slower Mapping check
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {key: _to_json_value(inner) for key, inner in value.items()}
    return value


def _reject_unknown(obj: Mapping[str, Any], known: set[str], prefix: str) -> None:
    for key in obj:
        if key not in known:
            raise InvalidEvent("unknown field", field=f"{prefix}{key}")


def _convert_record(schema: dict[str, Any], value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidEvent("must be an object", field=path)
    converted = {
        f["name"]: _convert_field(f, value, f"{path}.{f['name']}") for f in schema["fields"]
    }
    _reject_unknown(value, set(converted), f"{path}.")
    return converted


def _convert_field(field: dict[str, Any], container: Mapping[str, Any], path: str) -> Any:
    name = field["name"]
    if name not in container:
        if "default" in field:
            return field["default"]
        raise InvalidEvent("is required", field=path)
    return _convert(field["type"], container[name], path)


def _convert(schema: Any, value: object, path: str) -> Any:
    if isinstance(schema, list):  # union: we only use ["null", T]
        if value is None and "null" in schema:
            return None
        (branch,) = [s for s in schema if s != "null"]
        return _convert(branch, value, path)
    if isinstance(schema, str):
        return _convert_primitive(schema, value, path)
    kind = schema["type"]
    logical = schema.get("logicalType")
    if logical == "timestamp-millis":
        return _parse_timestamp(value, path)
    if logical == "date":
        return _parse_date(value, path)
    if kind == "record":
        return _convert_record(schema, value, path)
    if kind == "enum":
        if value not in schema["symbols"]:
            raise InvalidEvent(f"must be one of {', '.join(schema['symbols'])}", field=path)
        return value
    return _convert_primitive(kind, value, path)


def _convert_primitive(kind: str, value: object, path: str) -> Any:
    if kind == "string":
        if not isinstance(value, str):
            raise InvalidEvent("must be a string", field=path)
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidEvent("must be true or false", field=path)
        return value
    if kind in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidEvent("must be an integer", field=path)
        return value
    if kind == "null":
        if value is not None:
            raise InvalidEvent("must be null", field=path)
        return None
    raise InvalidEvent(f"unsupported schema type {kind}", field=path)


def _parse_timestamp(value: object, path: str) -> datetime:
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if not isinstance(value, str):
        raise InvalidEvent("must be an ISO 8601 timestamp string", field=path)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        # The value is not quoted: it may be a date of birth or other PHI.
        raise InvalidEvent("not an ISO 8601 timestamp", field=path) from exc
    if parsed.tzinfo is None:
        raise InvalidEvent("timestamp needs a zone (e.g. Z or +01:00)", field=path)
    return parsed.astimezone(UTC)


def _parse_date(value: object, path: str) -> date:
    if not isinstance(value, str):
        raise InvalidEvent("must be a date string YYYY-MM-DD", field=path)
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidEvent("not a date YYYY-MM-DD", field=path) from exc
