"""The runner tells its notifier about dead letters and condition changes, and nothing else.

The worlds of ``test_system_failures`` (the real runner on the in-memory broker, a manual
clock): an outage, a wrong delivery.url, and dead letters whose handler error quotes a
patient. A webhook that answers 503 or hangs never holds the runner up.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx

from consumer.delivery.handlers import DeliveryContext
from consumer.errors import PermanentError
from consumer.events.codec import EventRecord
from consumer.notify.digest import DigestPolicy
from consumer.notify.webhook import WebhookNotifier
from consumer.pipeline.memory_broker import StoredRecord
from consumer.pipeline.notifier import DeadLetterNote, RecordingNotifier
from retry_topics.clock import SystemClock
from retry_topics.limits import FloodGuardPolicy
from tests.unit.pipeline.test_system_failures import CODEC, MAIN, _world
from tests.unit.sample_events import sample_event

PHI = ("Maria", "Okafor", "MBR99887766", "+15551234567", "1984", "pat-501")


def test_an_outage_is_told_when_the_breaker_opens_and_when_it_closes() -> None:
    """Breaker open, then closed: two condition changes, no dead letter; the notifier is
    started with the run and closed when it ends."""
    world = _world()
    world.downstream.down_until_ms = world.clock.now_ms() + 5 * 60_000
    notifier = RecordingNotifier()
    runner = world.runner(notifier=notifier)
    world.publish(20)
    world.run_until(runner, lambda: len(world.downstream.delivered) == 20)
    assert [s.condition for s in notifier.conditions] == ["outage", "ok"]
    outage = notifier.conditions[0]
    assert "calls failed" in outage.reason
    assert "503" in outage.reason
    assert notifier.conditions[1].stated_at_ms >= world.downstream.down_until_ms
    assert notifier.dead_letters == []
    assert notifier.started
    assert notifier.closed


def test_a_halt_is_told_once_and_every_dead_letter_with_its_clinic_and_class() -> None:
    """A wrong delivery.url: each of the 5 dead letters is noted with its reason, error
    class, event type and clinic; the halt once; stopping is no condition change."""
    world = _world()
    world.downstream.not_found = True
    notifier = RecordingNotifier()
    world.publish(50)
    runner = world.runner(guard=FloodGuardPolicy(max_consecutive=5), notifier=notifier)
    world.run_until(runner, lambda: runner.halt is not None)
    assert notifier.dead_letters == [DeadLetterNote(
        reason="permanent", error_class="http.404", event_type="appointment.scheduled",
        clinic_id="clinic-north")] * 5
    assert [s.condition for s in notifier.conditions] == ["halted"]
    assert "check delivery.url" in notifier.conditions[0].reason


class QuotingHandler:
    """Rejects every event with a message that quotes the patient (as handlers do)."""

    def deliver(self, event: EventRecord, context: DeliveryContext) -> None:
        demographics = event["payload"]["demographics"]
        raise PermanentError(f"{demographics['first_name']} {demographics['last_name']} "
                             f"({event['payload']['insurance_member_id']}) is not a patient "
                             "here", error_class="http.422")

    def close(self) -> None:
        """Nothing to release."""


class Receiver:
    """A webhook receiver behind ``httpx.MockTransport``: keeps bodies, answers in turn."""

    def __init__(self, *statuses: int, hang_s: float = 0.0) -> None:
        self.statuses = list(statuses)
        self.hang_s = hang_s
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.entered = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.entered.set()
        if self.hang_s:
            time.sleep(self.hang_s)
        with self.lock:
            self.bodies.append(json.loads(request.content))
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return httpx.Response(status)


def _intake_world(count: int) -> Any:
    world = _world()
    world.downstream = QuotingHandler()  # type: ignore[assignment]
    for n in range(count):
        event = sample_event("intake.submitted", f"evt-{n:04}")
        world.broker.append(MAIN, StoredRecord(f"intake-{n}".encode(), CODEC.encode(event), (),
                                               world.clock.now_ms()), n % 3)
    return world


def test_no_patient_data_reaches_the_webhook_even_when_the_handler_quotes_it() -> None:
    """Intake events with a name, a birth date, a phone and a member id, rejected with a
    message quoting them: the webhook gets the counts, classes, types and clinic, and none
    of the patient's data, no event id, no handler message."""
    world = _intake_world(6)
    receiver = Receiver(200)
    notifier = WebhookNotifier(
        "https://hooks.example/T000/B000/s3cr3t",
        DigestPolicy(min_interval_ms=60_000, review_url="https://review.example", topic=MAIN),
        world.clock, transport=httpx.MockTransport(receiver))
    runner = world.runner(notifier=notifier)
    world.run_until(runner, lambda: len(world.dead_letters()) == 6)
    assert len(receiver.bodies) == 1  # the last digest, sent when the run stopped
    body = receiver.bodies[0]
    sent = json.dumps(body)
    for value in (*PHI, "evt-00", "is not a patient", "intake-1"):
        assert value not in sent, f"{value!r} reached the webhook"
    dead = body["clinic_events"]["dead_lettered"]
    assert dead["total"] == 6
    assert dead["by_event_type"] == {"intake.submitted": 6}
    assert dead["by_clinic"] == {"clinic-north": 6}
    assert [(r["reason"], r["error_class"], r["count"]) for r in dead["by_reason"]] == [
        ("permanent", "http.422", 6)]
    assert "6 events dead-lettered" in body["text"]
    assert "https://review.example" in body["text"]


def test_a_failing_or_hanging_webhook_never_holds_the_runner_up() -> None:
    """While the webhook hangs (0.5 s a call, then 503, every time), all 30 events are
    dead-lettered at full speed, and stopping waits at most the notifier's few seconds."""
    world = _intake_world(30)
    receiver = Receiver(503, hang_s=0.5)
    notifier = WebhookNotifier(
        "https://hooks.example/x", DigestPolicy(min_interval_ms=1, topic=MAIN), SystemClock(),
        transport=httpx.MockTransport(receiver))
    notifier.start()
    notifier.dead_lettered(reason="permanent", error_class="http.422", event_type=None,
                           clinic_id=None)
    assert receiver.entered.wait(5), "the sender never called the webhook"
    runner = world.runner(guard=FloodGuardPolicy(max_consecutive=0, max_ratio=0),
                          notifier=notifier)
    started = time.monotonic()
    all_done: list[float] = []

    def done() -> bool:
        if len(world.dead_letters()) == 30 and not all_done:
            all_done.append(time.monotonic())
        return bool(all_done)

    world.run_until(runner, done)
    assert all_done[0] - started < 1.0, "processing waited for the webhook"
    assert time.monotonic() - started < 6.0, "stopping waited for the webhook"
