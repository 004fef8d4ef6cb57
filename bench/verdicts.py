"""The user-facing targets as values: one measured figure, one bound, PASS or MISS.

Why a module of its own: every target of ``bench/targets.py`` is judged and printed the same
way, and the judgement is pure, so it is unit-tested without a broker.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Unit(StrEnum):
    """How a figure is printed: a ratio as a percentage, the others with their unit."""

    RATIO = "ratio"
    MS = "ms"
    SECONDS = "s"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One measured figure against its bound; ``at_least`` says which side passes."""

    key: str  # "1a", "2b": the target's number in issue 14 and its part
    name: str
    value: float
    bound: float
    unit: Unit
    at_least: bool
    rounds: Sequence[float] = field(default_factory=tuple)  # per-round values, median kept
    note: str = ""  # printed beside the verdict: a theoretical bound, the method

    @property
    def passed(self) -> bool:
        return self.value >= self.bound if self.at_least else self.value <= self.bound

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> tuple[
        float, list[float]]:
    """The median of the per-round ratios and the ratios themselves (rounds paired)."""
    if not numerators or len(numerators) != len(denominators):
        raise ValueError("ratios need the same, non-zero number of rounds on both sides")
    ratios = [top / bottom for top, bottom in zip(numerators, denominators, strict=True)]
    return statistics.median(ratios), ratios


def figure(value: float, unit: Unit) -> str:
    """``61.2%``, ``41 ms``, ``3.5 s``."""
    if unit is Unit.RATIO:
        return f"{value:.1%}"
    if unit is Unit.MS:
        return f"{value:.0f} ms"
    return f"{value:.1f} s"


def render_table(targets: Sequence[Target]) -> str:
    """The summary: one line per target, verdict in its own column, then the count."""
    width = max((len(t.name) for t in targets), default=0)
    lines = [f"{'':<3} {'target':<{width}}  {'measured':>9}  {'bound':>10}  verdict"]
    for target in targets:
        side = ">=" if target.at_least else "<="
        bound = f"{side} {figure(target.bound, target.unit)}"
        each = (" [" + " ".join(figure(x, target.unit) for x in target.rounds) + "]"
                if len(target.rounds) > 1 else "")
        note = f"  {target.note}" if target.note else ""
        lines.append(f"{target.key:<3} {target.name:<{width}}  "
                     f"{figure(target.value, target.unit):>9}  {bound:>10}  "
                     f"{target.verdict}{each}{note}")
    passed = sum(t.passed for t in targets)
    lines.append(f"{passed}/{len(targets)} PASS")
    return "\n".join(lines)
