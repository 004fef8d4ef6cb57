"""The notification digest: what to tell operators, and when the next message may go.

Pure: no I/O, time from an injected ``Clock``. The sender (``consumer.notify.webhook``) feeds
it dead letters and condition changes, asks ``wait_s`` when the next message may go,
``compose``s it, and says whether it was ``sent`` or ``failed``.

When: at most one message per ``min_interval``. The first thing to say after a quiet spell
opens a digest that goes ``GATHER_MS`` later (at most ``min_interval``), so a burst of dead
letters arrives as one message, not as "1" then "the other 49"; anything said after a
message waits for the next slot, ``min_interval`` after it. A breaker opening or a halt
waits for that slot too. A message that could not be sent keeps its counts, which go with
the next attempt (one slot later).

What: counts only. Dead letters by DLQ reason and error class, by event type and by clinic,
the condition changes since the last message and the condition now, and a link to the
review page. Never an event id, a payload field or a handler's error message: what is not
fed in cannot leak out. The ``text`` is plain lines that Slack, Microsoft Teams and
Mattermost incoming webhooks show as is (a bare URL is linked by all three).

Memory is bounded whatever happens: each breakdown keeps at most ``MAX_KEYS`` distinct
values per digest and counts the rest under ``OTHER``.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from consumer.pipeline.notifier import DeadLetterNote
from retry_topics.clock import Clock
from retry_topics.headers import DlqReason
from retry_topics.system_state import SystemState

GATHER_MS = 5_000
MAX_KEYS = 50
"""Distinct values kept per breakdown (clinic ids, event types, reasons) in one digest."""
LISTED = 8
"""Values named in the text per breakdown; the structured fields carry all kept ones."""
OTHER = "(other)"
UNKNOWN = "(unknown)"
MAX_LABEL = 80
"""An error class, event type or clinic id longer than this is cut (they are labels)."""

_REASON_WORDS: dict[str, str] = {
    "permanent": "rejected",
    "exhausted": "gave up after every retry",
    "undecodable": "could not be decoded",
    "parked": "held behind an earlier dead letter of the same key",
}

_CONDITION_WORDS: dict[str, str] = {
    "outage": "the downstream is unavailable",
    "halted": "dead letters are halted",
    "ok": "back to normal",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestPolicy:
    """How often to speak, and where the review page is (None: no link)."""

    min_interval_ms: int = 60_000
    review_url: str | None = None
    topic: str = ""
    instance: str = ""

    def __post_init__(self) -> None:
        if self.min_interval_ms < 1:
            raise ValueError(f"min_interval_ms must be at least 1, got {self.min_interval_ms}")

    @property
    def gather_ms(self) -> int:
        return min(GATHER_MS, self.min_interval_ms)


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """One message: its ``text`` and the structured fields beside it."""

    text: str
    fields: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body: ``text`` for people, ``clinic_events`` for machines."""
        return {"text": self.text, "clinic_events": self.fields}


def describe(reason: str, error_class: str) -> str:
    """A dead letter's reason in plain words: ``rejected (answered 422)``."""
    words = _REASON_WORDS.get(reason, reason)
    if reason in ("undecodable", "parked") or error_class in ("", "undecodable"):
        return words
    if error_class.startswith("http.") and error_class[5:].isdigit():
        return f"{words} (the downstream answered {error_class[5:]})"
    return f"{words} ({error_class})"


class Digest:
    """Counts since the last message; when the next may go; what it says."""

    def __init__(self, policy: DigestPolicy, clock: Clock) -> None:
        self._policy = policy
        self._clock = clock
        self._by_reason: Counter[tuple[str, str]] = Counter()
        self._by_type: Counter[str] = Counter()
        self._by_clinic: Counter[str] = Counter()
        self._unitemized = 0
        self._changes: list[SystemState] = []
        self._condition: SystemState | None = None
        self._told: SystemState | None = None  # the condition the last message ended with
        self._from_ms: int | None = None  # wall time of the first thing to say
        self._id: str | None = None  # the message's, from its first news until it is sent
        self._opened_at: float | None = None  # monotonic time of the same
        self._last_try: float | None = None  # monotonic time of the last message tried

    # -- what happened -----------------------------------------------------------------------

    def dead_lettered(self, note: DeadLetterNote, count: int = 1) -> None:
        """Count ``count`` dead letters like ``note``."""
        self._open()
        _count(self._by_reason, (note.reason, _label(note.error_class)), count)
        _count(self._by_type, _label(note.event_type), count)
        _count(self._by_clinic, _label(note.clinic_id), count)

    def unitemized(self, by_reason: Counter[tuple[DlqReason, str]]) -> None:
        """Dead letters the sender's inbox had no room for: counted by reason only."""
        total = sum(by_reason.values())
        if not total:
            return
        self._open()
        for (reason, error_class), count in by_reason.items():
            _count(self._by_reason, (reason, _label(error_class)), count)
        self._unitemized += total

    def condition(self, state: SystemState) -> None:
        """The instance's condition changed."""
        self._open()
        self._changes.append(state)
        del self._changes[:-MAX_KEYS]
        self._condition = state

    # -- when --------------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Something happened since the last message."""
        return self._opened_at is not None

    def wait_s(self) -> float | None:
        """Seconds until the next message may go (0: now), or None with nothing to say."""
        if self._opened_at is None:
            return None
        due = self._opened_at + self._policy.gather_ms / 1000
        if self._last_try is not None:
            due = max(due, self._last_try + self._policy.min_interval_ms / 1000)
        return max(0.0, due - self._clock.monotonic())

    # -- what --------------------------------------------------------------------------------

    def compose(self) -> Notification:
        """The message for everything since the last one (the counts stay until ``sent``).

        Its ``id`` stays the same until it is sent: in every try, and in a later message
        that carries a failed one's counts along with new ones. A receiver that got a try the
        sender saw fail (a timeout) can keep the last message of an id and drop the rest.
        """
        now = self._clock.now_ms()
        total = sum(self._by_reason.values())
        lines = [self._headline(total, now)]
        lines += self._dead_letter_lines(total)
        previous = self._told
        for state in self._changes:
            lines.append(self._change_line(state, previous))
            previous = state
        review = self._policy.review_url
        if review:
            lines.append(f"Review: {review}")
        fields: dict[str, Any] = {
            "id": self._id or "",
            "topic": self._policy.topic,
            "instance": self._policy.instance,
            "from": _iso(self._from_ms if self._from_ms is not None else now),
            "to": _iso(now),
            "dead_lettered": {
                "total": total,
                "by_reason": [{"reason": reason, "error_class": error_class,
                               "description": describe(reason, error_class), "count": count}
                              for (reason, error_class), count in self._by_reason.most_common()],
                "by_event_type": dict(self._by_type.most_common()),
                "by_clinic": dict(self._by_clinic.most_common()),
                "unitemized": self._unitemized,
            },
            "changes": [_state_fields(state) for state in self._changes],
            "condition": _state_fields(self._condition) if self._condition else None,
            "review_url": review,
        }
        return Notification(text="\n".join(lines), fields=fields)

    def sent(self) -> None:
        """The composed message went out: start counting afresh; the next waits a slot."""
        self._last_try = self._clock.monotonic()
        self._by_reason.clear()
        self._by_type.clear()
        self._by_clinic.clear()
        self._unitemized = 0
        self._changes.clear()
        self._told = self._condition
        self._from_ms = None
        self._opened_at = None
        self._id = None

    def failed(self) -> None:
        """It could not be sent: keep the counts; try again a slot later."""
        self._last_try = self._clock.monotonic()

    # -- helpers -----------------------------------------------------------------------------

    def news_since(self, monotonic_s: float, now_ms: int) -> None:
        """Something happened at this time (monotonic seconds, wall ms), to be fed in now:
        the gathering counts from then."""
        if self._opened_at is None:
            self._opened_at, self._from_ms = monotonic_s, now_ms
            self._id = uuid.uuid4().hex

    def _open(self) -> None:
        self.news_since(self._clock.monotonic(), self._clock.now_ms())

    def _headline(self, total: int, now: int) -> str:
        where = f"clinic-events ({self._policy.topic})" if self._policy.topic else "clinic-events"
        since = _hhmm(self._from_ms if self._from_ms is not None else now)
        if total:
            noun = "event" if total == 1 else "events"
            return f"{where}: {total} {noun} dead-lettered since {since}"
        condition = self._condition.condition if self._condition is not None else "ok"
        return f"{where}: {_CONDITION_WORDS[condition]}"

    def _dead_letter_lines(self, total: int) -> list[str]:
        if not total:
            return []
        lines = [f"- {count} {describe(reason, error_class)}"
                 for (reason, error_class), count in self._by_reason.most_common(LISTED)]
        if len(self._by_reason) > LISTED:
            lines.append(f"- {len(self._by_reason) - LISTED} more reasons")
        lines.append("Event types: " + _listed(self._by_type))
        lines.append("Clinics: " + _listed(self._by_clinic))
        if self._unitemized:
            lines.append(f"({self._unitemized} of them came too fast to break down by event "
                         "type and clinic)")
        return lines

    def _change_line(self, state: SystemState, previous: SystemState | None) -> str:
        at = _hhmm(state.since_ms)
        if state.condition == "outage":
            return (f"Downstream unavailable since {at}: {state.reason}. Every partition is "
                    "held and events wait (nothing is dead-lettered for the outage); a probe "
                    "checks whether it is back.")
        if state.condition == "halted":
            return (f"Dead letters halted at {at}: {state.reason}. Every partition is held "
                    "until the consumer is restarted after the cause is fixed.")
        was = previous.condition if previous is not None else "outage"
        if was == "halted":
            return f"The consumer no longer holds events at {_hhmm(state.stated_at_ms)}."
        lasted = ""
        if previous is not None:
            minutes = max(0, state.stated_at_ms - previous.since_ms) // 60_000
            lasted = f" (unavailable for {minutes} min)" if minutes else ""
        return (f"Downstream available again at {_hhmm(state.stated_at_ms)}{lasted}: "
                "waiting events go on.")


def _count(counter: Counter[Any], key: Any, count: int) -> None:
    """Add to ``key``, or to ``OTHER`` once ``MAX_KEYS`` distinct keys are kept."""
    if key in counter or len(counter) < MAX_KEYS:
        counter[key] += count
    elif isinstance(key, tuple):
        counter[(key[0], OTHER)] += count
    else:
        counter[OTHER] += count


def _label(value: str | None) -> str:
    if value is None or not value.strip():
        return UNKNOWN
    value = value.strip()
    return value if len(value) <= MAX_LABEL else value[:MAX_LABEL - 1] + "…"


def _listed(counter: Counter[str]) -> str:
    shown = ", ".join(f"{name} {count}" for name, count in counter.most_common(LISTED))
    rest = len(counter) - LISTED
    return shown + (f", and {rest} more" if rest > 0 else "")


def _state_fields(state: SystemState) -> dict[str, Any]:
    return {"condition": state.condition, "since": _iso(state.since_ms),
            "reason": state.reason, "at": _iso(state.stated_at_ms), "waiting": state.waiting}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M UTC")
