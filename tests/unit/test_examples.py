"""``examples/events.jsonl``: every line is a valid event the README demo can publish."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from consumer.events.codec import EVENT_TYPES, EventCodec
from consumer.events.model import entity_key, event_from_json, event_to_json

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "events.jsonl"


def _lines() -> list[dict[str, Any]]:
    objects = []
    for number, line in enumerate(EXAMPLES.read_text(encoding="utf-8").splitlines(), start=1):
        assert line.strip(), f"line {number} is blank"
        obj = json.loads(line)
        assert isinstance(obj, dict), f"line {number} is not a JSON object"
        objects.append(obj)
    return objects


LINES = _lines()


@pytest.mark.parametrize("obj", LINES, ids=[str(o.get("event_id")) for o in LINES])
def test_line_parses_encodes_and_round_trips(obj: dict[str, Any]) -> None:
    codec = EventCodec()
    event = event_from_json(obj)
    assert codec.decode(codec.encode(event)) == event
    # The file is written exactly as event_to_json prints, so it is also the output shape.
    assert event_to_json(event) == obj


def test_every_event_type_appears_at_least_twice() -> None:
    counts = Counter(obj["event_type"] for obj in LINES)
    assert set(counts) == set(EVENT_TYPES)
    assert min(counts.values()) >= 2, counts


def test_event_ids_are_unique() -> None:
    ids = [obj["event_id"] for obj in LINES]
    assert len(ids) == len(set(ids))


def test_several_clinics_and_source_systems() -> None:
    assert len({obj["clinic_id"] for obj in LINES}) >= 3
    assert len({obj["source_system"] for obj in LINES}) >= 3


def test_an_appointment_is_scheduled_rescheduled_then_cancelled_in_file_order() -> None:
    types_by_key: dict[bytes, list[str]] = defaultdict(list)
    for obj in LINES:
        types_by_key[entity_key(obj)].append(obj["event_type"])
    assert ["appointment.scheduled", "appointment.rescheduled", "appointment.cancelled"] in (
        types_by_key.values()
    )


def test_events_of_one_entity_are_in_time_order() -> None:
    occurred: dict[bytes, list[float]] = defaultdict(list)
    for obj in LINES:
        occurred[entity_key(obj)].append(event_from_json(obj)["occurred_at"].timestamp())
    for key, times in occurred.items():
        assert times == sorted(times), key
