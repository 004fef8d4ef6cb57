"""What a ``run`` instance tells the world about its downstream and its dead letters.

Why: ``lag`` runs in another process, and an operator asking "why is nothing moving?" must
see "downstream unavailable since 14:02" or "dead letters halted: every call answered 404",
not only a growing lag. Each instance states its condition to the status topic
(``naming.status_topic_name``; the runner's ``StatusBoard``) when it changes, and again every
``RESTATE_MS`` while it is not ``ok``, so a state whose instance died goes stale and is no
longer shown (``current``). The value is this JSON document, keyed by the instance.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

Condition = Literal["ok", "outage", "halted"]
RESTATE_MS = 30_000
#: A state not restated for this long belongs to an instance that stopped or died.
STALE_MS = 3 * RESTATE_MS
#: The reason of the ``ok`` an instance states when its outage ends: what the outage held
#: (tier records long past due, a main partition that did not move) goes on from then.
RECOVERED = "the downstream is available again"


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemState:
    """One instance's condition: since when, and why (no patient data: counts and classes)."""

    instance: str
    condition: Condition
    since_ms: int
    reason: str
    stated_at_ms: int
    waiting: int = 0  # events held, their offsets unstored

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SystemState | None:
        """The state in ``raw``, or None for anything that is not one (never raises)."""
        try:
            document: Any = json.loads(raw)
            state = cls(instance=str(document["instance"]), condition=document["condition"],
                        since_ms=int(document["since_ms"]), reason=str(document["reason"]),
                        stated_at_ms=int(document["stated_at_ms"]),
                        waiting=int(document.get("waiting", 0)))
        except (ValueError, TypeError, KeyError):
            return None
        return state if state.condition in ("ok", "outage", "halted") else None

    def current(self, now_ms: int) -> bool:
        """Not ``ok`` and restated recently enough that its instance is still running."""
        return self.condition != "ok" and now_ms - self.stated_at_ms <= STALE_MS
