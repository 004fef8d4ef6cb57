"""Realistic sample events (synthetic data) for unit tests, one per event type."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

_AT = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def _envelope(
    event_id: str, event_type: str, source: str, payload: dict[str, Any]
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": _AT,
        "source_system": source,
        "clinic_id": "clinic-north",
        "correlation_id": None,
        "payload": payload,
    }


def sample_event(event_type: str, event_id: str | None = None) -> dict[str, Any]:
    """One valid event of ``event_type`` in the codec's Avro-native form."""
    eid = event_id or f"evt-{event_type}"
    if event_type == "intake.submitted":
        return _envelope(eid, event_type, "intake-forms", {
            "intake_id": "intake-1001",
            "patient_id": "pat-501",
            "demographics": {
                "first_name": "Maria", "last_name": "Okafor",
                "date_of_birth": date(1984, 3, 2), "phone": "+15551234567",
            },
            "insurance_member_id": "MBR99887766",
            "preferred_location_id": "loc-main",
        })
    if event_type == "appointment.scheduled":
        return _envelope(eid, event_type, "scheduling", {
            "appointment_id": "appt-2001", "patient_id": "pat-501", "provider_id": "prov-7",
            "location_id": "loc-main",
            "starts_at": datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
            "ends_at": datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
            "visit_type": "new_patient", "telehealth": False,
        })
    if event_type == "appointment.rescheduled":
        return _envelope(eid, event_type, "scheduling", {
            "appointment_id": "appt-2001", "patient_id": "pat-501", "provider_id": "prov-7",
            "location_id": "loc-east",
            "previous_starts_at": datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
            "starts_at": datetime(2026, 12, 2, 14, 0, tzinfo=UTC),
            "ends_at": datetime(2026, 12, 2, 14, 30, tzinfo=UTC),
        })
    if event_type == "appointment.cancelled":
        return _envelope(eid, event_type, "scheduling", {
            "appointment_id": "appt-2001", "patient_id": "pat-501",
            "cancelled_by": "PATIENT", "reason_code": "no_transport",
        })
    if event_type == "eligibility.check_requested":
        return _envelope(eid, event_type, "practice-management", {
            "check_id": "elig-3001", "patient_id": "pat-501", "payer_id": "payer-acme",
            "insurance_member_id": "MBR99887766", "service_date": date(2026, 12, 1),
            "appointment_id": "appt-2001",
        })
    raise ValueError(event_type)


def sample_events() -> list[dict[str, Any]]:
    return [
        sample_event(t)
        for t in (
            "intake.submitted", "appointment.scheduled", "appointment.rescheduled",
            "appointment.cancelled", "eligibility.check_requested",
        )
    ]
