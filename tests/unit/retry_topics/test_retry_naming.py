"""Topic naming: every derived name comes from the main topic and obeys Kafka's rules."""

from __future__ import annotations

import pytest

from retry_topics.errors import PolicyError
from retry_topics.naming import (
    MAX_TOPIC_NAME_LENGTH,
    audit_topic_name,
    derived_kind,
    dlq_ledger_topic_name,
    dlq_topic_name,
    retry_tier_delay_ms,
    retry_tiers_of,
    retry_topic_name,
    validate_topic_name,
)


@pytest.mark.parametrize(
    ("delay_ms", "expected"),
    [
        (5_000, "clinic.events.retry.5s"),
        (30_000, "clinic.events.retry.30s"),
        (600_000, "clinic.events.retry.10m"),
        (90_000, "clinic.events.retry.90s"),
        (1_500, "clinic.events.retry.1500ms"),
        (3_600_000, "clinic.events.retry.1h"),
    ],
)
def test_retry_topic_name_uses_canonical_delay(delay_ms: int, expected: str) -> None:
    assert retry_topic_name("clinic.events", delay_ms) == expected


def test_dlq_and_audit_names() -> None:
    assert dlq_topic_name("clinic.events") == "clinic.events.dlq"
    assert audit_topic_name("clinic.events") == "clinic.events.audit"
    assert dlq_ledger_topic_name("clinic.events") == "clinic.events.dlq-ledger"


@pytest.mark.parametrize("name", ["a", "clinic.events", "Clinic_Events-2", "x" * 249, "..."])
def test_valid_topic_names_are_returned_unchanged(name: str) -> None:
    assert validate_topic_name(name) == name


@pytest.mark.parametrize("name", [".", ".."])
def test_dot_and_dot_dot_are_rejected(name: str) -> None:
    with pytest.raises(PolicyError, match="not allowed by Kafka"):
        validate_topic_name(name)


def test_empty_name_is_rejected() -> None:
    with pytest.raises(PolicyError, match="must not be empty"):
        validate_topic_name("")


@pytest.mark.parametrize(("name", "bad"), [("clinic events", " "), ("clinic/événements", "/é")])
def test_illegal_characters_are_listed(name: str, bad: str) -> None:
    with pytest.raises(PolicyError, match="invalid characters") as caught:
        validate_topic_name(name)
    assert repr(bad) in str(caught.value)
    assert "'.', '_' and '-'" in str(caught.value)


def test_too_long_name_is_rejected_with_the_limit() -> None:
    with pytest.raises(PolicyError, match=f"at most {MAX_TOPIC_NAME_LENGTH}"):
        validate_topic_name("x" * 250)


def test_derived_name_that_becomes_too_long_is_rejected() -> None:
    main = "x" * 240  # valid itself, but "<main>.retry.10m" is 250 characters
    assert validate_topic_name(main) == main
    with pytest.raises(PolicyError, match="250 characters long"):
        retry_topic_name(main, 600_000)
    assert dlq_topic_name(main) == f"{main}.dlq"


def test_invalid_main_topic_is_rejected_by_every_derivation() -> None:
    for derive in (dlq_topic_name, dlq_ledger_topic_name, audit_topic_name):
        with pytest.raises(PolicyError, match="invalid characters"):
            derive("clinic events")
    with pytest.raises(PolicyError, match="invalid characters"):
        retry_topic_name("clinic events", 5_000)


@pytest.mark.parametrize("delay_ms", [0, -5])
def test_retry_delay_must_be_positive(delay_ms: int) -> None:
    with pytest.raises(PolicyError, match="must be positive"):
        retry_topic_name("clinic.events", delay_ms)


@pytest.mark.parametrize(("name", "kind"), [
    ("clinic.events.retry.5s", "retry"), ("clinic.events.retry.1m30s", "retry"),
    ("clinic.events.retry.1500ms", "retry"), ("clinic.events.dlq", "dlq"),
    ("clinic.events.audit", "audit"), ("clinic.events.dlq-ledger", "ledger"),
    ("clinic.events.dlq.ledger", None), ("clinic.events", None), ("clinic.events.retry", None),
    ("clinic.events.retry.soon", None), ("clinic.dlqs", None),
])
def test_derived_kind_tells_a_derived_name_by_its_ending(name: str, kind: str | None) -> None:
    assert derived_kind(name) == kind


def test_retry_tiers_of_a_main_topic_are_found_whatever_their_delay() -> None:
    names = ["m.retry.5s", "m.retry.1m", "m.dlq", "m.audit", "m", "m.retry.5s.retry.1s",
             "mm.retry.5s", "other.retry.5s", "m.retryx.5s"]
    assert retry_tiers_of("m", names) == ["m.retry.1m", "m.retry.5s"]


def test_a_retry_tiers_delay_is_read_back_from_its_name() -> None:
    assert retry_tier_delay_ms("m", "m.retry.1m30s") == 90_000
    for name in ("m.retry.5s.retry.1s", "m.dlq", "mm.retry.5s"):
        with pytest.raises(PolicyError, match="is not a retry tier of 'm'"):
            retry_tier_delay_ms("m", name)
