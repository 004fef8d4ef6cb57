"""The outcomes a dedup store remembers and the checks every store applies to its input."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, get_args

from consumer.errors import ConfigError

__all__ = ["OUTCOMES", "Outcome", "check_outcomes", "check_ttl", "live_outcomes"]

Outcome = Literal["delivered", "dead_lettered"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
def check_outcomes(items: Sequence[tuple[str, str]]) -> None:
    """Refuse an outcome no store knows, naming the valid ones."""
    unknown = {outcome for _, outcome in items}.difference(OUTCOMES)
    if unknown:
        raise ValueError(f"unknown dedup outcome {sorted(unknown)[0]!r}; "
                         f"valid: {', '.join(OUTCOMES)}")


def check_ttl(ttl_ms: int) -> None:
    """``dedup.ttl`` must be a positive number of milliseconds."""
    if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0:
        raise ConfigError(f"dedup.ttl must be a positive duration, got {ttl_ms!r} ms")


def live_outcomes(index: Mapping[str, tuple[Outcome, int]], event_ids: Sequence[str],
                  cutoff_ms: int) -> dict[str, Outcome]:
    """The outcomes in ``index`` (id -> (outcome, recorded at ms)) recorded after ``cutoff_ms``.

    One loop with no call per id: stores run it for every consumed event.
    """
    found: dict[str, Outcome] = {}
    for event_id in event_ids:
        entry = index.get(event_id)
        if entry is not None and entry[1] > cutoff_ms:
            found[event_id] = entry[0]
    return found
