"""Classification: HTTP statuses, Retry-After and exception rules matched along the MRO."""

from __future__ import annotations

import pytest

from retry_topics.classification import (
    Classification,
    ExceptionRules,
    classify_exception,
    classify_http_status,
    parse_retry_after_ms,
    qualified_name,
)
from retry_topics.errors import PolicyError

NOW_MS = 1_445_412_480_000  # Wed, 21 Oct 2015 07:28:00 GMT


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_success(status: int) -> None:
    assert classify_http_status(status) is None


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses_are_transient(status: int) -> None:
    assert classify_http_status(status) is Classification.TRANSIENT


@pytest.mark.parametrize("status", [100, 101, 301, 302, 304, 400, 401, 403, 404, 409, 422, 499])
def test_other_statuses_are_permanent(status: int) -> None:
    assert classify_http_status(status) is Classification.PERMANENT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("120", 120_000),
        (" 5 ", 5_000),
        ("-3", 0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30_000),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0),
        ("Wednesday, 21-Oct-15 07:29:00 GMT", 60_000),
        ("Wed Oct 21 07:28:01 2015", 1_000),
        ("Wed, 21 Oct 2015 07:28:00.5 GMT", None),
    ],
)
def test_parse_retry_after(value: str, expected: int | None) -> None:
    assert parse_retry_after_ms(value, NOW_MS) == expected


@pytest.mark.parametrize(
    "value", ["", "   ", "soon", "1.5", "--5", "5s", "Wed, 99 Foo 2015 07:28:30 GMT", "٣"]
)
def test_unusable_retry_after_is_none(value: str) -> None:
    assert parse_retry_after_ms(value, NOW_MS) is None


class BoomError(Exception):
    pass


class SpecificBoomError(BoomError, ValueError):
    pass


def name_of(cls: type) -> str:
    return f"{__name__}.{cls.__qualname__}"


def test_qualified_name() -> None:
    assert qualified_name(ValueError) == "builtins.ValueError"
    assert qualified_name(BoomError) == name_of(BoomError)


def test_default_applies_when_nothing_matches() -> None:
    assert ExceptionRules().classify_exception(RuntimeError("x")) is Classification.TRANSIENT
    rules = ExceptionRules(default=Classification.PERMANENT)
    assert rules.classify_exception(RuntimeError("x")) is Classification.PERMANENT


def test_rule_matches_a_base_class() -> None:
    rules = ExceptionRules(permanent=("builtins.LookupError",))
    assert rules.classify_exception(KeyError("k")) is Classification.PERMANENT
    assert rules.classify_exception(TimeoutError()) is Classification.TRANSIENT


def test_most_specific_class_wins() -> None:
    rules = ExceptionRules(
        transient=(name_of(SpecificBoomError),),
        permanent=(name_of(BoomError),),
    )
    assert rules.classify_exception(SpecificBoomError()) is Classification.TRANSIENT
    assert rules.classify_exception(BoomError()) is Classification.PERMANENT


def test_mro_order_decides_between_two_bases() -> None:
    # SpecificBoomError's MRO lists BoomError before ValueError.
    rules = ExceptionRules(transient=(name_of(BoomError),), permanent=("builtins.ValueError",))
    assert rules.classify_exception(SpecificBoomError()) is Classification.TRANSIENT


def test_permanent_wins_a_tie() -> None:
    both = ("builtins.ValueError",)
    rules = ExceptionRules(transient=both, permanent=both, default=Classification.TRANSIENT)
    assert rules.classify_exception(ValueError()) is Classification.PERMANENT


def test_rules_match_base_exception_subclasses() -> None:
    rules = ExceptionRules(permanent=("builtins.BaseException",))
    assert rules.classify_exception(KeyboardInterrupt()) is Classification.PERMANENT


def test_function_form_delegates_to_the_rules() -> None:
    rules = ExceptionRules(permanent=("builtins.ValueError",))
    outcome: Classification = classify_exception(ValueError(), rules)
    assert outcome is Classification.PERMANENT


@pytest.mark.parametrize("name", ["ValueError", "", "builtins. ValueError", ".ValueError."])
def test_rule_names_must_be_dotted_paths(name: str) -> None:
    with pytest.raises(PolicyError, match="dotted class path"):
        ExceptionRules(transient=(name,))


def test_classifications_are_the_header_values() -> None:
    """The enum's values are what ``clinic.classification`` carries on the wire."""
    assert [c.value for c in Classification] == ["transient", "permanent"]
    assert f"{Classification.PERMANENT}" == "permanent"


def test_a_default_given_as_text_is_the_enum() -> None:
    """Configuration files give the default as text."""
    text: str = "permanent"
    assert ExceptionRules(default=text).default is Classification.PERMANENT  # type: ignore[arg-type]


def test_unknown_default_is_rejected() -> None:
    with pytest.raises(PolicyError, match="valid values are transient, permanent"):
        ExceptionRules(default="maybe")  # type: ignore[arg-type]


def test_rules_accept_lists_and_store_tuples() -> None:
    rules = ExceptionRules(permanent=["builtins.ValueError"])  # type: ignore[arg-type]
    assert rules.permanent == ("builtins.ValueError",)
    assert hash(rules) == hash(ExceptionRules(permanent=("builtins.ValueError",)))
