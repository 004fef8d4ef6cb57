"""An event's identifying values, and error text masked against them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from consumer.events.identifying import PATIENT_IDENTIFYING_FIELDS, identifying_values
from consumer.ops.dlq.model import PATIENT_IDENTIFYING_FIELDS as MASKED_BY_DLQ_SHOW
from retry_topics.redaction import mask_values, redact_message
from tests.unit.sample_events import sample_event

#: Each identifying value of ``_intake()`` as someone might quote it.
QUOTED = ("Ada", "Testperson", "TEST-MBR-000101", "000101", "PAT-770011", "770011",
          "1985-04-12", "+15550100101", "5550100101")


def _intake() -> dict[str, Any]:
    event = sample_event("intake.submitted")
    event["payload"].update(patient_id="PAT-770011", insurance_member_id="TEST-MBR-000101")
    event["payload"]["demographics"].update(first_name="Ada", last_name="Testperson",
                                            date_of_birth=date(1985, 4, 12),
                                            phone="+15550100101")
    return event


def _masked(text: str, event: dict[str, Any] | None = None) -> str:
    return redact_message(mask_values(text, identifying_values(event or _intake())))


def _leaks(text: str) -> list[str]:
    lowered = text.lower()
    return [value for value in QUOTED if value.lower() in lowered]


def test_the_fields_are_those_the_schema_marks_as_phi_and_dlq_show_masks() -> None:
    assert {"first_name", "last_name", "date_of_birth", "phone", "insurance_member_id",
            "patient_id"} == PATIENT_IDENTIFYING_FIELDS == MASKED_BY_DLQ_SHOW


def _fields_documented_as_phi(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for field in schema.get("fields", ()):
            if str(field.get("doc", "")).startswith("PHI"):
                yield field["name"]
            yield from _fields_documented_as_phi(field["type"])
    elif isinstance(schema, list):
        for branch in schema:
            yield from _fields_documented_as_phi(branch)


def test_every_field_a_schema_marks_as_phi_is_masked() -> None:
    schemas = sorted((Path(__file__).parents[3] / "schemas").glob("*.avsc"))
    assert schemas
    for path in schemas:
        documented = set(_fields_documented_as_phi(json.loads(path.read_text())))
        assert "first_name" in documented
        assert documented <= PATIENT_IDENTIFYING_FIELDS, path.name


def test_values_are_found_at_any_depth_and_nothing_else_is() -> None:
    values = identifying_values(_intake())
    assert {"Ada", "Testperson", "TEST-MBR-000101", "PAT-770011", "+15550100101",
            "1985 04 12"} <= set(values)
    assert not {"intake-1001", "clinic-north", "loc-main", "evt-intake.submitted"} & set(values)
    assert identifying_values(sample_event("appointment.cancelled")) == ["pat-501"]


def test_absent_optional_values_are_skipped() -> None:
    event = _intake()
    event["payload"]["insurance_member_id"] = None
    event["payload"]["demographics"]["phone"] = None
    values = identifying_values(event)
    assert "None" not in values
    assert not [v for v in values if "MBR" in v]


@pytest.mark.parametrize("text", [
    "ValueError: no plan for Ada Testperson, member TEST-MBR-000101 (dob 1985-04-12)",
    "NO PLAN FOR ADA TESTPERSON / test-mbr-000101",
    "first name ada, ..., member id 000101, ..., surname TESTPERSON",
    "Testperson,Ada;TEST_MBR_000101;PAT770011",
    "patient 770011 born 4/12/85, call +1 (555) 010-0101",
    "born 12.04.1985 or April 12, 1985 or 12 Apr 1985 or 04/12/1985 or 19850412",
    "lookup(member='xxTEST-MBR-000101xx', dob=datetime.date(1985, 4, 12))",
    repr(_intake()),
    str(_intake()["payload"]),
    "KeyError: " + repr({"name": "Ada Testperson", "member": "TEST-MBR-000101"}),
])
def test_adversarial_messages_keep_no_identifying_value(text: str) -> None:
    assert _leaks(_masked(text)) == []


def test_a_long_message_is_masked_before_it_is_capped() -> None:
    text = ("Ada Testperson " * 40) + ("x" * 900) + " member TEST-MBR-000101 " * 500
    masked = _masked(text)
    assert len(masked.encode()) <= 1024
    assert _leaks(masked) == []
    assert "Testp" not in masked


def test_a_handler_cut_inside_a_name_leaves_no_prefix() -> None:
    assert _leaks(_masked("no plan for Ada Testpe…")) == []
    assert "Testpe" not in _masked("no plan for Ada Testpe…")


def test_names_are_also_matched_word_by_word_and_without_accents() -> None:
    event = _intake()
    event["payload"]["demographics"].update(first_name="Mary Ann", last_name="Núñez-Okafor")
    masked = _masked("rejected: Okafor, Mary! Then ann, then Nunez", event)
    assert masked == "rejected: ***, ***! Then ***, then ***"


@pytest.mark.parametrize("dob", [date(1985, 4, 12), 5580, "1985-04-12"])
def test_a_date_of_birth_in_any_form_the_event_carries_it(dob: object) -> None:
    event = _intake()
    event["payload"]["demographics"]["date_of_birth"] = dob
    assert "April 12, 1985" not in mask_values("born April 12, 1985", identifying_values(event))


def test_useful_context_survives() -> None:
    masked = _masked("ValueError: plan code X12 for Ada Testperson rejected by payer-acme")
    assert masked == "ValueError: plan code X12 for *** *** rejected by payer-acme"
