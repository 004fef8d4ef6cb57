"""The webhook sender: retries with backoff, keeps counts it could not send, never blocks,
never logs the webhook's secret URL (``httpx.MockTransport`` as the receiver)."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import httpx
import pytest

from consumer.notify.digest import DigestPolicy
from consumer.notify.webhook import ATTEMPTS, WebhookNotifier
from retry_topics.clock import ManualClock, SystemClock
from retry_topics.system_state import SystemState

URL = "https://hooks.example/services/T000/B000/s3cr3tT0ken"
MINUTE = 60_000


class Receiver:
    """Answers with ``answers`` in turn (the last one from then on); an exception is raised."""

    def __init__(self, *answers: int | Exception, hang_s: float = 0.0) -> None:
        self.answers = list(answers)
        self.hang_s = hang_s
        self.bodies: list[dict[str, Any]] = []
        self.entered = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.entered.set()
        if self.hang_s:
            time.sleep(self.hang_s)
        self.bodies.append(json.loads(request.content))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)


def _notifier(receiver: Receiver, clock: ManualClock | None = None,
              naps: list[float] | None = None, **kwargs: Any) -> WebhookNotifier:
    return WebhookNotifier(URL, DigestPolicy(min_interval_ms=MINUTE, topic="clinic.events"),
                           clock or ManualClock(), transport=httpx.MockTransport(receiver),
                           sleep=naps.append if naps is not None else None, **kwargs)


def _dead_letter(notifier: WebhookNotifier, clinic: str = "clinic-north") -> None:
    notifier.dead_lettered(reason="permanent", error_class="http.422",
                           event_type="intake.submitted", clinic_id=clinic)


def test_a_digest_goes_when_due_as_json_with_text() -> None:
    clock = ManualClock()
    receiver = Receiver(200)
    notifier = _notifier(receiver, clock)
    _dead_letter(notifier)
    assert not notifier.pump()  # gathering
    clock.advance(5_000)
    assert notifier.pump()
    [body] = receiver.bodies
    assert body["text"].startswith("clinic-events (clinic.events): 1 event dead-lettered")
    assert body["clinic_events"]["dead_lettered"]["by_clinic"] == {"clinic-north": 1}
    assert not notifier.pump()  # nothing new


def test_unavailable_answers_and_connection_errors_are_retried_with_backoff() -> None:
    clock = ManualClock()
    naps: list[float] = []
    receiver = Receiver(503, httpx.ConnectError("refused"), 429, 200)
    notifier = _notifier(receiver, clock, naps)
    _dead_letter(notifier)
    clock.advance(5_000)
    assert notifier.pump()
    assert len(receiver.bodies) == 4
    assert len(naps) == 3
    assert naps[0] <= naps[1] + 1 <= naps[2] + 2  # exponential, with up to 1 s of jitter
    assert all(0 < nap <= 8 + 1 for nap in naps)
    assert notifier.sent == 1


def test_a_webhook_down_for_good_keeps_the_counts_for_the_next_slot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    naps: list[float] = []
    receiver = Receiver(500, 500, 500, 500, 200)
    notifier = _notifier(receiver, clock, naps)
    _dead_letter(notifier)
    clock.advance(5_000)
    caplog.set_level(logging.WARNING, logger="clinic_events.notify")
    assert not notifier.pump()
    assert len(receiver.bodies) == ATTEMPTS
    assert "could not send a notification to the webhook at hooks.example" in caplog.text
    assert "s3cr3t" not in caplog.text
    _dead_letter(notifier, "clinic-south")
    clock.advance(30_000)
    assert not notifier.pump()  # a minute after the last try, not before
    clock.advance(30_000)
    assert notifier.pump()
    assert receiver.bodies[-1]["clinic_events"]["dead_lettered"]["by_clinic"] == {
        "clinic-north": 1, "clinic-south": 1}


def test_a_refusal_is_not_retried() -> None:
    clock = ManualClock()
    receiver = Receiver(400)
    notifier = _notifier(receiver, clock, [])
    _dead_letter(notifier)
    clock.advance(5_000)
    assert not notifier.pump()
    assert len(receiver.bodies) == 1


def test_an_overflowing_inbox_keeps_counts_not_notes() -> None:
    clock = ManualClock()
    receiver = Receiver(200)
    notifier = _notifier(receiver, clock, capacity=3)
    for _ in range(5):
        _dead_letter(notifier)
    clock.advance(5_000)
    assert notifier.pump()
    dead = receiver.bodies[0]["clinic_events"]["dead_lettered"]
    assert (dead["total"], dead["unitemized"], dead["by_clinic"]) == (5, 2, {"clinic-north": 3})


def test_close_sends_what_is_left_at_once() -> None:
    """An outage opened a moment ago: it goes out when the run stops, not a minute later."""
    receiver = Receiver(200)
    notifier = _notifier(receiver)
    notifier.start()
    notifier.condition(SystemState(instance="h:1", condition="outage", since_ms=0,
                                   reason="5 of the last 5 calls failed (answered 503)",
                                   stated_at_ms=0))
    notifier.close()
    [body] = receiver.bodies
    assert "Downstream unavailable" in body["text"]


def test_close_never_waits_long_for_a_hanging_webhook() -> None:
    receiver = Receiver(200, hang_s=5.0)
    notifier = _notifier(receiver)
    notifier.start()
    _dead_letter(notifier)
    started = time.monotonic()
    notifier.close(timeout_s=0.5)
    assert time.monotonic() - started < 1.0


def test_the_poll_threads_side_never_blocks_while_a_send_hangs() -> None:
    receiver = Receiver(200, hang_s=0.5)
    notifier = WebhookNotifier(URL, DigestPolicy(min_interval_ms=1), SystemClock(),
                               transport=httpx.MockTransport(receiver))
    notifier.start()
    _dead_letter(notifier)
    assert receiver.entered.wait(2)
    started = time.monotonic()
    for _ in range(1000):
        _dead_letter(notifier)
    assert time.monotonic() - started < 0.2
    notifier.close(timeout_s=0.2)


def test_the_webhook_url_stays_out_of_settings_reprs() -> None:
    from consumer.config.settings import NotifySettings

    assert "s3cr3t" not in repr(NotifySettings(webhook_url=URL))
