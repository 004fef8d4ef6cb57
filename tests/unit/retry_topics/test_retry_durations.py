"""Durations: the grammar of configured delays and the canonical form used in topic names."""

from __future__ import annotations

import pytest

from retry_topics.durations import format_duration, parse_duration_ms
from retry_topics.errors import PolicyError, RetryTopicsError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200ms", 200),
        ("5s", 5_000),
        ("30s", 30_000),
        ("2m", 120_000),
        ("10m", 600_000),
        ("1h", 3_600_000),
        ("7d", 604_800_000),
        ("1m30s", 90_000),
        ("1h30m", 5_400_000),
        ("1d2h3m4s5ms", 93_784_005),
        ("  45s ", 45_000),
        ("0s", 0),
    ],
)
def test_parse_accepts_units_and_combinations(text: str, expected: int) -> None:
    assert parse_duration_ms(text) == expected


@pytest.mark.parametrize("text", ["30", "0", "-5", "+7"])
def test_parse_rejects_bare_numbers_and_names_the_units(text: str) -> None:
    with pytest.raises(PolicyError, match="no unit") as caught:
        parse_duration_ms(text)
    message = str(caught.value)
    for unit in ("ms", "s", "m", "h", "d"):
        assert unit in message
    assert "ambiguous" in message


@pytest.mark.parametrize(
    "text", ["", "   ", "5x", "5 s", "s", "1.5s", "5S", "-5s", "5sec", "1m 30s", "٣s"]
)
def test_parse_rejects_malformed_text(text: str) -> None:
    with pytest.raises(PolicyError, match="valid units are ms, s, m, h, d"):
        parse_duration_ms(text)


@pytest.mark.parametrize("text", ["30s1m", "1m1m", "5ms1s"])
def test_parse_rejects_repeated_or_out_of_order_units(text: str) -> None:
    with pytest.raises(PolicyError, match="repeated or out of order"):
        parse_duration_ms(text)


def test_parse_error_is_a_value_error_in_the_package_tree() -> None:
    with pytest.raises(ValueError, match="no unit") as caught:
        parse_duration_ms("10")
    assert isinstance(caught.value, RetryTopicsError)


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (5_000, "5s"),
        (120_000, "2m"),
        (600_000, "10m"),
        (90_000, "90s"),
        (1_500, "1500ms"),
        (3_600_000, "1h"),
        (5_400_000, "90m"),
        (86_400_000, "1d"),
        (172_800_000, "2d"),
        (1, "1ms"),
        (0, "0ms"),
    ],
)
def test_format_uses_the_largest_exact_unit(ms: int, expected: str) -> None:
    assert format_duration(ms) == expected


def test_format_rejects_negative_values() -> None:
    with pytest.raises(PolicyError, match="must not be negative"):
        format_duration(-1)


@pytest.mark.parametrize("ms", [0, 1, 999, 1_000, 1_500, 59_000, 90_000, 3_600_000, 86_400_001])
def test_format_and_parse_round_trip(ms: int) -> None:
    assert parse_duration_ms(format_duration(ms)) == ms
