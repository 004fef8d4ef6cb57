"""Time as an injected dependency.

Two kinds of time are used, never mixed:

* **wall time** in epoch milliseconds (:meth:`Clock.now_ms`) for due times and failure
  timestamps, because these travel in headers to other processes and machines;
* **monotonic time** in seconds (:meth:`Clock.monotonic`) for budgets inside one process
  (how long in-process retries may take), because it never jumps when the wall clock is set.

Production code takes a :class:`Clock`; :class:`SystemClock` reads the real clocks and
:class:`ManualClock` lets tests move time forward explicitly (both kinds move together).
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Source of wall time (epoch ms) and monotonic time (seconds)."""

    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (arbitrary origin)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a manual clock advances instead): in-process retry waits use it."""
        ...


class SystemClock:
    """The real clocks of this machine."""

    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the Unix epoch."""
        return time.time_ns() // 1_000_000

    # The functions themselves, not wrappers: the consumer reads the monotonic clock once
    # per event, and a Python frame around the C call doubles its cost.
    monotonic = staticmethod(time.monotonic)
    """Seconds from :func:`time.monotonic`."""

    sleep = staticmethod(time.sleep)
    """Block for ``seconds`` (usable as tenacity's ``sleep``)."""


class ManualClock:
    """A clock that moves only when told to; wall and monotonic time advance together."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = start_ms
        self._monotonic_ms = 0

    def now_ms(self) -> int:
        """The current manual wall time in epoch milliseconds."""
        return self._now_ms

    def monotonic(self) -> float:
        """Seconds advanced since this clock was created."""
        return self._monotonic_ms / 1000

    def advance(self, ms: int) -> None:
        """Move both clocks forward by ``ms`` milliseconds."""
        if ms < 0:
            raise ValueError(f"a clock cannot go backwards (advance by {ms} ms)")
        self._now_ms += ms
        self._monotonic_ms += ms

    def sleep(self, seconds: float) -> None:
        """Advance instead of sleeping (usable as tenacity's ``sleep`` in tests)."""
        self.advance(round(seconds * 1000))
