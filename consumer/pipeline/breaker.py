"""A circuit breaker for the downstream: an outage is a failing system, not failing events.

Why: when the EHR is down, every event fails the same way. Sending each through the retry
tiers would spend their attempts on the outage, dead-letter everything that arrives during a
long one, and keep hammering the failing API. So failures that speak of the system (a
connection refused or reset, a timeout, 429, 502, 503, 504: ``BreakerPolicy.systemic``) are
counted over the last ``window_calls`` handler calls. When at least ``min_failures`` of them,
on at least ``min_keys`` different entities, make up ``failure_ratio`` of the window, the
breaker opens: a failure spread over many events, not one event failing again and again
(that one goes through the tiers as before). The window starts at the first systemic
failure: successes while none is in it are not kept (the common case takes no lock), and an
outage that begins on a healthy stream opens the breaker after ``min_failures`` failures,
not after ``failure_ratio`` of a window of successes has turned into failures.

While open, the runner holds every partition and no event is called or routed: the calls
that fail because of the outage do not count. One waiting event at a time is sent as a
probe, after a wait drawn with full jitter from an exponentially growing cap
(``first_probe_ms`` doubling to ``max_probe_ms``), or the downstream's ``Retry-After``. The
first call the downstream answers other than systemically (a success, or even a 422: it is
up) closes the breaker, and the waiting events go on at once.

Thread-safe: lane threads report calls while the poll thread asks for probes.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, deque
from dataclasses import dataclass

from retry_topics.clock import Clock
from retry_topics.limits import BreakerPolicy


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """What operators are told: open since when, and why."""

    open: bool
    since_ms: int | None = None
    reason: str = ""


@dataclass(slots=True)
class _Call:
    systemic: bool
    key: bytes | None
    error_class: str | None


@dataclass(slots=True)
class _Open:
    since_ms: int
    reason: str
    probes: int = 0
    next_probe_ms: int = 0
    probing: bool = False


class OutageBreaker:
    """Counts handler calls; opens on a systemic pattern, closes on the first answer."""

    def __init__(self, policy: BreakerPolicy, clock: Clock,
                 rng: random.Random | None = None) -> None:
        self._policy = policy
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._window: deque[_Call] = deque(maxlen=policy.window_calls)
        self._systemic_in_window = 0
        self._open: _Open | None = None

    @property
    def is_open(self) -> bool:
        return self._open is not None

    def status(self) -> BreakerStatus:
        opened = self._open
        if opened is None:
            return BreakerStatus(open=False)
        return BreakerStatus(open=True, since_ms=opened.since_ms, reason=opened.reason)

    def note_success(self) -> bool:
        """A call the downstream answered; True if it closed the breaker."""
        if self._open is None and not self._systemic_in_window:
            return False  # nothing to dilute or to close: the common case costs no lock
        return self._answered(_Call(False, None, None))

    def note_failure(self, key: bytes | None, error_class: str,
                     retry_after_ms: int | None = None) -> bool:
        """A failed call; True while the breaker is open (the event waits out the outage).

        A failure that is not systemic is an answer: it closes an open breaker (and is
        False: the event goes on as its failure says).
        """
        if not self._policy.enabled:
            return False
        if error_class not in self._policy.systemic:
            self._answered(_Call(False, key, error_class))
            return False
        with self._lock:
            self._push(_Call(True, key, error_class))
            opened = self._open
            if opened is None:
                reason = self._pattern()
                if reason is None:
                    return False
                opened = self._open = _Open(since_ms=self._clock.now_ms(), reason=reason)
            else:
                opened.probing = False
            self._schedule_probe(opened, retry_after_ms)
            return True

    def probe_due(self) -> bool:
        """True once: the poll thread may send one waiting event as a probe now."""
        with self._lock:
            opened = self._open
            if opened is None or opened.probing or self._clock.now_ms() < opened.next_probe_ms:
                return False
            opened.probing = True
            return True

    def probe_unused(self) -> None:
        """The probe's event was decided without a call (parked behind an earlier event of
        its key, a duplicate, no longer owned): nothing will answer it, so the next waiting
        event probes in its place, when the probe is due.

        Without this the breaker waited for an answer that never came, and with every
        partition held meanwhile the consumer stood still until it was restarted.
        """
        with self._lock:
            if self._open is not None:
                self._open.probing = False

    def _answered(self, call: _Call) -> bool:
        with self._lock:
            self._push(call)
            if self._open is None:
                return False
            self._open = None
            self._window.clear()
            self._systemic_in_window = 0
            return True

    def _push(self, call: _Call) -> None:
        """Append ``call`` to the window, keeping the count of systemic ones (lock held)."""
        window = self._window
        if len(window) == window.maxlen and window[0].systemic:
            self._systemic_in_window -= 1
        window.append(call)
        self._systemic_in_window += call.systemic

    def _pattern(self) -> str | None:
        """The reason to open, if the window shows a systemic pattern (lock held)."""
        policy = self._policy
        failures = [call for call in self._window if call.systemic]
        if len(failures) < policy.min_failures or \
                len(failures) < policy.failure_ratio * len(self._window):
            return None
        if len({call.key for call in failures}) < policy.min_keys:
            return None  # one or two events failing again and again: theirs, not the system's
        dominant, _ = Counter(call.error_class for call in failures).most_common(1)[0]
        return (f"{len(failures)} of the last {len(self._window)} calls failed "
                f"({_plain(dominant)})")

    def _schedule_probe(self, opened: _Open, retry_after_ms: int | None) -> None:
        """Full jitter over a cap doubling from ``first_probe_ms`` to ``max_probe_ms``; a
        ``Retry-After`` says when instead (lock held)."""
        now = self._clock.now_ms()
        if retry_after_ms is not None:
            opened.next_probe_ms = now + min(retry_after_ms, self._policy.max_probe_ms * 8)
        else:
            cap = min(self._policy.max_probe_ms,
                      self._policy.first_probe_ms << min(opened.probes, 30))
            opened.next_probe_ms = now + self._rng.randint(0, cap)
        opened.probes += 1

    def probe_cap_ms(self) -> int:
        """The current cap of the wait between probes (for the log line)."""
        with self._lock:
            probes = self._open.probes if self._open is not None else 0
        return min(self._policy.max_probe_ms,
                   self._policy.first_probe_ms << min(max(probes - 1, 0), 30))


def _plain(error_class: str | None) -> str:
    """``http.503`` -> ``503``; other classes as they are."""
    if error_class is None:
        return "unknown"
    return error_class.removeprefix("http.")
