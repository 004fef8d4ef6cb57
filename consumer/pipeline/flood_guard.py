"""A dead-letter flood guard: a stream failing permanently wholesale is a deploy mistake.

Why: when every call answers 404 (``delivery.url`` points at the wrong path) or every record
is undecodable (a producer writing the wrong format), each event would be dead-lettered at
full speed and the front desk would face hundreds of dead letters that need no human but a
fixed setting. Arroyo's ``DlqLimit`` stops a consumer in that case; so does this guard.

``admit`` is asked right before a dead letter is sent. Past the limit (``max_consecutive``
dead letters in a row, or ``max_ratio`` of the last ``window`` decided events) it says no,
and stays halted: no further dead letter, every partition held, the undecided events'
offsets never stored, until an operator restarts the consumer (after fixing the cause). A
restart starts counting afresh, so it halts again only after a fresh run of failures.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass

from retry_topics.limits import FloodGuardPolicy

#: What an operator should look at, by the dominant error class of the dead letters.
LIKELY_CAUSES: dict[str, str] = {
    "http.404": "check delivery.url",
    "http.405": "check delivery.url",
    "http.401": "check the downstream credentials",
    "http.403": "check the downstream credentials",
    "http.400": "the downstream rejects the events' shape: check its API version",
    "http.422": "the downstream rejects the events' shape: check its API version",
    "undecodable": "check what is producing to topics.main (format or schema)",
}


@dataclass(frozen=True, slots=True)
class Halt:
    """Why the guard halted the consumer."""

    dead_letters: int
    reason: str


class DeadLetterGuard:
    """Counts decided events; refuses the dead letter that would pass the limit."""

    def __init__(self, policy: FloodGuardPolicy) -> None:
        self._policy = policy
        self._lock = threading.Lock()
        self._consecutive: list[str] = []
        self._recent: deque[str | None] = deque(maxlen=policy.window or None)
        self._admitted = 0
        self.halt: Halt | None = None

    @property
    def halted(self) -> bool:
        return self.halt is not None

    def note_delivered(self, count: int = 1) -> None:
        """Events that reached the downstream (or were duplicates): not a flood."""
        with self._lock:
            self._consecutive.clear()
            self._recent.extend([None] * min(count, self._policy.window))

    def admit(self, error_class: str) -> bool:
        """May a dead letter of ``error_class`` be sent? False from the limit on."""
        policy = self._policy
        with self._lock:
            if self.halt is not None:
                return False
            consecutive = [*self._consecutive, error_class]
            recent = [*self._recent, error_class][-policy.window:] if policy.window else []
            dead = [c for c in recent if c is not None]
            if policy.max_consecutive and len(consecutive) > policy.max_consecutive:
                self.halt = self._halt(consecutive[:-1],
                                       f"{policy.max_consecutive} dead letters in a row")
                return False
            if policy.window and policy.max_ratio and len(recent) >= policy.window and \
                    len(dead) >= policy.max_ratio * policy.window:
                self.halt = self._halt(dead, f"{len(dead)} of the last {len(recent)} "
                                       "events failing for good")
                return False
            self._consecutive = consecutive
            self._recent.append(error_class)
            self._admitted += 1
            return True

    def _halt(self, classes: list[str], what: str) -> Halt:
        dominant, count = Counter(classes).most_common(1)[0] if classes else ("unknown", 0)
        share = "every one" if count == len(classes) else f"{count} of them"
        cause = LIKELY_CAUSES.get(dominant, "check the handler and the downstream")
        return Halt(dead_letters=self._admitted,
                    reason=f"{what}, {share} {_described(dominant)}: {cause}")


def _described(error_class: str) -> str:
    """``http.404`` -> ``answered 404``; ``undecodable`` -> ``undecodable``."""
    if error_class.startswith("http."):
        return f"answered {error_class.removeprefix('http.')}"
    if error_class == "undecodable":
        return "undecodable"
    return f"failed with {error_class}"
