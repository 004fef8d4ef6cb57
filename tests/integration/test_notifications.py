"""Notifications on the real broker, posted to a local HTTP receiver: a digest of dead
letters without PHI, and the breaker opening and closing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from consumer.delivery.handlers import DeliveryContext
from consumer.errors import PermanentError, TransientError
from tests.integration.harness import (
    new_event,
    produce,
    running_consumer,
    settings_for,
    wait_until,
    write_config,
)

PHI = ("Maria", "Okafor", "MBR99887766", "+15551234567", "1984-03-02", "pat-501")
REVIEW = "https://review.clinic.example"


class Receiver:
    """An incoming webhook on 127.0.0.1: keeps each JSON body, answers 200."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.lock = threading.Lock()

    def texts(self) -> list[str]:
        with self.lock:
            return [body["text"] for body in self.bodies]


@contextmanager
def receiving() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            with receiver.lock:
                receiver.raw.append(raw)
                receiver.bodies.append(json.loads(raw))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver, f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/s3cr3t"
    finally:
        server.shutdown()
        server.server_close()


class RejectingEhr:
    """Rejects every event with a message quoting the patient, as real APIs do."""

    def deliver(self, event: dict[str, Any], context: DeliveryContext) -> None:
        payload = event["payload"]
        who = payload.get("demographics", {})
        raise PermanentError(f"{who.get('first_name')} {who.get('last_name')} "
                             f"({payload.get('insurance_member_id')}) unknown",
                             error_class="http.422")

    def close(self) -> None:
        """Nothing to release."""


class DownEhr:
    """Answers 503 to everything until ``recovered`` is set."""

    def __init__(self) -> None:
        self.recovered = threading.Event()

    def deliver(self, event: dict[str, Any], context: DeliveryContext) -> None:
        if not self.recovered.is_set():
            raise TransientError("POST /events answered 503", error_class="http.503")

    def close(self) -> None:
        """Nothing to release."""


def test_dead_letters_arrive_as_one_digest_with_counts_a_link_and_no_phi(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Six events rejected with messages quoting the patient: one message arrives, counting
    them by reason, event type and clinic, linking the review page, and holding no name,
    member id, birth date, phone, event id or handler message."""
    events = [new_event("intake.submitted") for _ in range(4)]
    for _ in range(2):
        event = new_event("appointment.scheduled")
        event["clinic_id"] = "clinic-south"
        events.append(event)
    with receiving() as (receiver, url):
        settings = settings_for(write_config(
            tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
            extra=f'[notify]\nwebhook_url = "{url}"\nmin_interval = "4s"\n'
                  f'[serve]\npublic_url = "{REVIEW}"\n'))
        with running_consumer(settings, handler=RejectingEhr()) as assembly:
            assert wait_until(lambda: bool(assembly.runner.assignment), 30)
            produce(kafka_bootstrap, topic_prefix, events)
            assert wait_until(lambda: assembly.runner.stats["dead_lettered"] == 6, 60)
            assert wait_until(lambda: bool(receiver.bodies), 15)
            time.sleep(1)
        assert len(receiver.bodies) == 1, receiver.texts()
        body = receiver.bodies[0]
        raw = receiver.raw[0].decode()
    dead = body["clinic_events"]["dead_lettered"]
    assert dead["total"] == 6
    assert dead["by_clinic"] == {"clinic-north": 4, "clinic-south": 2}
    assert dead["by_event_type"] == {"intake.submitted": 4, "appointment.scheduled": 2}
    assert [(r["reason"], r["error_class"], r["count"]) for r in dead["by_reason"]] == [
        ("permanent", "http.422", 6)]
    assert body["clinic_events"]["topic"] == topic_prefix
    text = body["text"]
    assert text.startswith(f"clinic-events ({topic_prefix}): 6 events dead-lettered")
    assert "- 6 rejected (the downstream answered 422)" in text
    assert "Clinics: clinic-north 4, clinic-south 2" in text
    assert text.endswith(f"Review: {REVIEW}")
    for value in (*PHI, "unknown", *(str(e["event_id"]) for e in events)):
        assert value not in raw, f"{value!r} reached the webhook"


def test_the_breaker_opening_and_closing_are_told(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Every call answers 503 on many events: a message says the downstream is unavailable;
    once it answers again, the next says it is available again; nothing is dead-lettered."""
    ehr = DownEhr()
    with receiving() as (receiver, url):
        settings = settings_for(write_config(
            tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix, delays=("1s", "2s", "4s"),
            extra=f'[notify]\nwebhook_url = "{url}"\nmin_interval = "2s"\n'))
        with running_consumer(settings, handler=ehr) as assembly:
            produce(kafka_bootstrap, topic_prefix, [new_event() for _ in range(12)])
            assert wait_until(lambda: any("Downstream unavailable" in t
                                          for t in receiver.texts()), 60), receiver.texts()
            assert assembly.runner.downstream.open
            ehr.recovered.set()
            assert wait_until(lambda: any("Downstream available again" in t
                                          for t in receiver.texts()), 60), receiver.texts()
            assert assembly.runner.stats["dead_lettered"] == 0
        texts = receiver.texts()
    opened = next(t for t in texts if "Downstream unavailable" in t)
    assert opened.startswith(f"clinic-events ({topic_prefix}): the downstream is unavailable")
    assert "calls failed (503)" in opened
    assert not any("dead-lettered since" in t for t in texts)
    conditions = [c["condition"] for body in receiver.bodies
                  for c in body["clinic_events"]["changes"]]
    assert conditions == ["outage", "ok"]
    assert "Review:" not in opened  # no [serve] public_url
