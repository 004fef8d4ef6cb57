"""The notification port: what the runner tells operators about, never how.

The runner calls a ``Notifier`` on the poll thread when a dead letter is acknowledged by the
broker and when its system condition changes (the downstream breaker opens or closes, the
flood guard halts). An implementation must return at once and never raise: sending happens
elsewhere (``consumer.notify.webhook`` sends a digest from its own thread), so a slow or
failing webhook never holds up or fails event processing.

What crosses this port is chosen so that no patient data can: counts come from calls, and
each call carries only the DLQ reason, the error class, the event type and the clinic id.
Handler error messages never do (they may quote PHI even after redaction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from retry_topics.headers import DlqReason
from retry_topics.system_state import SystemState


class Notifier(Protocol):
    """Told about dead letters and condition changes; sends (or not) on its own time."""

    def start(self) -> None:
        """Begin sending (the runner starts it when ``run`` begins)."""
        ...

    def dead_lettered(self, *, reason: DlqReason, error_class: str, event_type: str | None,
                      clinic_id: str | None) -> None:
        """One event's dead letter is durable."""
        ...

    def condition(self, state: SystemState) -> None:
        """The instance's condition changed (``ok``, ``outage`` or ``halted``)."""
        ...

    def close(self) -> None:
        """Send what is still to say within a short bound, then stop; never hangs."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterNote:
    """What a notifier learns of one dead letter."""

    reason: DlqReason
    error_class: str
    event_type: str | None
    clinic_id: str | None


class RecordingNotifier:
    """A ``Notifier`` for tests: keeps every call."""

    def __init__(self) -> None:
        self.started = False
        self.closed = False
        self.dead_letters: list[DeadLetterNote] = []
        self.conditions: list[SystemState] = []

    def start(self) -> None:
        self.started = True

    def dead_lettered(self, *, reason: DlqReason, error_class: str, event_type: str | None,
                      clinic_id: str | None) -> None:
        self.dead_letters.append(DeadLetterNote(reason=reason, error_class=error_class,
                                                event_type=event_type, clinic_id=clinic_id))

    def condition(self, state: SystemState) -> None:
        self.conditions.append(state)

    def close(self) -> None:
        self.closed = True
