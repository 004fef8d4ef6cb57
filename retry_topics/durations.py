"""Human-readable durations: parse "1m30s" into milliseconds and format them back.

Delays appear in two places that people read: configuration ("30s", "10m") and retry topic
names (``clinic.events.retry.30s``). Both use the same small grammar:

* a duration is one or more ``<digits><unit>`` parts written without spaces, for example
  ``200ms``, ``5s``, ``2m``, ``1h``, ``7d`` or ``1m30s``;
* units are ``ms``, ``s``, ``m``, ``h``, ``d`` (lower case), each used at most once and from
  the largest to the smallest, so every string has exactly one meaning;
* a bare number is rejected on purpose: "30" could mean seconds or milliseconds, and a retry
  delay off by a factor of 1000 is a silent, expensive mistake.

:func:`format_duration` produces the canonical short form used in topic names: the largest
single unit that divides the value exactly (``90000`` is ``"90s"``, not ``"1m30s"``), so that a
given delay always maps to the same topic name. ``parse_duration_ms(format_duration(ms)) == ms``
holds for every non-negative ``ms``.
"""

from __future__ import annotations

import re

from retry_topics.errors import PolicyError

__all__ = ["UNIT_MS", "VALID_UNITS_HELP", "format_duration", "parse_duration_ms"]

#: Milliseconds per unit, largest first (the order units must appear in a combined duration).
UNIT_MS: dict[str, int] = {
    "d": 86_400_000,
    "h": 3_600_000,
    "m": 60_000,
    "s": 1_000,
    "ms": 1,
}

VALID_UNITS_HELP = (
    "valid units are ms, s, m, h, d (for example '200ms', '30s', '10m', '1h', '7d' or '1m30s')"
)

# "ms" must be tried before "m" and "s" so that "200ms" is not read as "200m" + garbage.
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_ORDER = list(UNIT_MS)


def parse_duration_ms(text: str) -> int:
    """Parse a duration such as ``"30s"`` or ``"1m30s"`` into whole milliseconds.

    Raises :class:`PolicyError` for an empty string, a bare number, an unknown unit, a
    repeated or out-of-order unit, or any other character.
    """
    source = text.strip()
    if not source:
        raise PolicyError(f"duration is empty; {VALID_UNITS_HELP}")
    if source.lstrip("+-").isdigit():
        raise PolicyError(
            f"duration {text!r} has no unit; a bare number is ambiguous, {VALID_UNITS_HELP}"
        )
    total = 0
    position = 0
    previous_rank = -1
    while position < len(source):
        match = _PART.match(source, position)
        if match is None:
            raise PolicyError(
                f"invalid duration {text!r} (unexpected {source[position:]!r}); {VALID_UNITS_HELP}"
            )
        digits, unit = match.groups()
        rank = _UNIT_ORDER.index(unit)
        if rank <= previous_rank:
            raise PolicyError(
                f"invalid duration {text!r}: unit {unit!r} repeated or out of order "
                f"(write parts from largest to smallest unit); {VALID_UNITS_HELP}"
            )
        previous_rank = rank
        total += int(digits) * UNIT_MS[unit]
        position = match.end()
    return total


def format_duration(ms: int) -> str:
    """Format milliseconds in the canonical short form used in topic names.

    The largest unit that divides ``ms`` exactly is used: ``5000 -> "5s"``,
    ``120000 -> "2m"``, ``90000 -> "90s"``, ``1500 -> "1500ms"``, ``86400000 -> "1d"``.
    """
    if ms < 0:
        raise PolicyError(f"duration must not be negative, got {ms} ms")
    for unit, size in UNIT_MS.items():
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
