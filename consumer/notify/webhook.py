"""The webhook notifier: the runner's ``Notifier``, sending a digest from its own thread.

The poll thread only appends to an inbox (``dead_lettered``, ``condition``: a lock and a list
append). The inbox is bounded (``INBOX_CAPACITY`` notes): past it, a dead letter is still
counted by reason and error class, but not by event type or clinic, and the message says
how many were not broken down. Counts are kept, notes are not; nothing ever blocks.

A thread named ``notify`` moves the inbox into the ``Digest`` and posts the digest's message
when it is due: JSON with ``text`` (what Slack, Teams and Mattermost show) and the
structured fields under ``clinic_events``. A connection error, a timeout, 408, 425, 429 or a
5xx is retried with exponential backoff and jitter (tenacity), at most ``ATTEMPTS`` tries;
a message that still fails, or that the receiver refuses (another 4xx), keeps its counts for
the next slot. The webhook URL is a secret (Slack's carries a token): it is never logged,
only its host.

``close`` sends what is left at once, in one try, and gives up after ``CLOSE_TIMEOUT_S``:
stopping ``run`` never waits on a receiver for longer. The thread is a daemon.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from consumer.errors import ClinicEventsError
from consumer.notify.digest import Digest, DigestPolicy, Notification
from consumer.pipeline.notifier import DeadLetterNote
from consumer.pipeline.processing import stop_when
from retry_topics.clock import Clock
from retry_topics.headers import DlqReason
from retry_topics.system_state import SystemState

LOG = logging.getLogger("clinic_events.notify")
INBOX_CAPACITY = 10_000
ATTEMPTS = 4
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 8.0
CLOSE_TIMEOUT_S = 3.0
IDLE_WAKE_S = 1.0
RETRIED_STATUSES = frozenset({408, 425, 429})


class WebhookError(ClinicEventsError):
    """A message could not be posted.

    ``WebhookUnavailable`` (may work later: retried) and ``WebhookRefused`` (the receiver
    said no: not retried) derive from it.
    """


class WebhookUnavailable(WebhookError):
    """Connection error, timeout, 408, 425, 429 or 5xx."""


class WebhookRefused(WebhookError):
    """Any other non-2xx answer."""


class WebhookNotifier:
    """Digest notifications to an incoming webhook, sent from a background thread."""

    def __init__(self, url: str, policy: DigestPolicy, clock: Clock, *, timeout_s: float = 5.0,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] | None = None,
                 capacity: int = INBOX_CAPACITY) -> None:
        self._url = url
        self._host = urlsplit(url).hostname or "?"
        self._digest = Digest(policy, clock)
        self._clock = clock
        self._timeout_s = timeout_s
        self._client = httpx.Client(transport=transport, timeout=timeout_s)
        self._capacity = capacity
        self._lock = threading.Lock()
        self._notes: list[DeadLetterNote] = []
        self._overflow: Counter[tuple[DlqReason, str]] = Counter()
        self._states: list[SystemState] = []
        self._since: tuple[float, int] | None = None  # when the inbox got its first note
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._sleep = sleep or self._nap
        self._thread: threading.Thread | None = None
        self.sent = 0  # messages the receiver accepted

    # -- the poll thread's side (never blocks, never raises) --------------------------------

    def dead_lettered(self, *, reason: DlqReason, error_class: str, event_type: str | None,
                      clinic_id: str | None) -> None:
        with self._lock:
            if self._since is None:
                self._since = (self._clock.monotonic(), self._clock.now_ms())
            if len(self._notes) < self._capacity:
                self._notes.append(DeadLetterNote(reason=reason, error_class=error_class,
                                                  event_type=event_type, clinic_id=clinic_id))
            else:
                self._overflow[(reason, error_class)] += 1

    def condition(self, state: SystemState) -> None:
        with self._lock:
            if self._since is None:
                self._since = (self._clock.monotonic(), self._clock.now_ms())
            self._states.append(state)
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="notify", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Send what is left (one try), stop the thread; return within ``timeout_s``."""
        self._closing.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                LOG.warning("the last notification was not sent within %.0f s; "
                            "it is dropped", timeout_s)
                return  # a daemon thread: it dies with the process
        else:
            self._final(timeout_s)
        self._client.close()

    # -- the sender's side -------------------------------------------------------------------

    def pump(self) -> bool:
        """Move the inbox into the digest; send the message if it is due. True if one went."""
        self._take_inbox()
        wait = self._digest.wait_s()
        if wait is None or wait > 0:
            return False
        return self._send(self._digest.compose(), retry=True)

    def _loop(self) -> None:
        try:
            while not self._closing.is_set():
                self.pump()
                wait = self._digest.wait_s()
                self._wake.wait(IDLE_WAKE_S if wait is None else min(max(wait, 0.01),
                                                                      IDLE_WAKE_S))
                self._wake.clear()
            self._final(CLOSE_TIMEOUT_S)
        except Exception:  # never let a notification bug surface anywhere else
            LOG.exception("the notification thread failed; no more notifications are sent")

    def _final(self, timeout_s: float) -> None:
        """At close: whatever is left goes now, in one try, within ``timeout_s``."""
        self._take_inbox()
        if self._digest.pending:
            self._send(self._digest.compose(), retry=False,
                       timeout_s=min(self._timeout_s, max(0.1, timeout_s - 0.2)))

    def _take_inbox(self) -> None:
        with self._lock:
            notes, self._notes = self._notes, []
            overflow, self._overflow = self._overflow, Counter()
            states, self._states = self._states, []
            since, self._since = self._since, None
        if since is not None:
            self._digest.news_since(*since)
        for note in notes:
            self._digest.dead_lettered(note)
        self._digest.unitemized(overflow)
        for state in states:
            self._digest.condition(state)

    def _send(self, message: Notification, *, retry: bool,
              timeout_s: float | None = None) -> bool:
        attempts = ATTEMPTS if retry else 1
        retrying = Retrying(
            stop=stop_after_attempt(attempts) | stop_when(self._stopped),
            wait=wait_exponential_jitter(initial=FIRST_BACKOFF_S, max=MAX_BACKOFF_S),
            retry=retry_if_exception_type(WebhookUnavailable),
            sleep=self._sleep, reraise=True)
        try:
            retrying(self._post, message, timeout_s or self._timeout_s)
        except WebhookError as exc:
            self._digest.failed()
            LOG.warning("could not send a notification to the webhook at %s: %s; its counts "
                        "go with the next one", self._host, exc)
            return False
        self._digest.sent()
        self.sent += 1
        return True

    def _post(self, message: Notification, timeout_s: float) -> None:
        try:
            response = self._client.post(self._url, json=message.payload(), timeout=timeout_s)
        except httpx.HTTPError as exc:  # timeouts, connection errors, protocol errors
            raise WebhookUnavailable(type(exc).__name__) from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in RETRIED_STATUSES or status >= 500:
            raise WebhookUnavailable(f"answered {status}")
        raise WebhookRefused(f"answered {status}")

    def _stopped(self, _state: RetryCallState) -> bool:
        return self._closing.is_set()

    def _nap(self, seconds: float) -> None:
        """Backoff that ends early when ``close`` is called."""
        self._closing.wait(seconds)
