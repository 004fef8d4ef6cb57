"""Helpers for consumer integration tests: config files, an in-process runner, topic I/O.

Everything here talks to the real broker; nothing is faked except where a test passes its
own delivery handler on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer
from opentelemetry.sdk.trace import TracerProvider

from consumer.cli.wiring import Assembly, build_runner
from consumer.config.settings import Settings, load_settings
from consumer.delivery.handlers import DeliveryHandler
from consumer.events.codec import EventCodec
from consumer.events.model import entity_key
from consumer.kafka.clients import message_headers
from tests.unit.sample_events import sample_event


def write_config(tmp_path: Path, *, bootstrap: str, main: str, url: str = "http://127.0.0.1:9/",
                 delays: Sequence[str] = ("1s", "2s"), partitions: int = 3,
                 in_process_attempts: int = 1, concurrency: int = 4,
                 extra: str = "") -> Path:
    """A TOML config for one test: its own topics, group and dedup database."""
    delay_list = ", ".join(f'"{d}"' for d in delays)
    path = tmp_path / f"{main}.toml"
    path.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{main}.group"
[topics]
main = "{main}"
partitions = {partitions}
[retry]
delays = [{delay_list}]
in_process_attempts = {in_process_attempts}
in_process_backoff = "50ms"
backoff = "fixed"
[dedup]
store = "sqlite:///{tmp_path}/dedup-{main}.sqlite3"
[delivery]
url = "{url}"
timeout = "2s"
concurrency = {concurrency}
[kafka.client]
"session.timeout.ms" = "6000"
{extra}
""")
    return path


def settings_for(path: Path) -> Settings:
    return load_settings(path, env={})


@contextmanager
def running_consumer(settings: Settings, *, handler: DeliveryHandler | None = None,
                     tracer_provider: TracerProvider | None = None) -> Iterator[Assembly]:
    """Run the real runner in a background thread for the duration of the block."""
    assembly = build_runner(settings, handler=handler, tracer_provider=tracer_provider,
                            drain_timeout_s=10)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            assembly.runner.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            failure.append(exc)

    thread = threading.Thread(target=target, name="runner", daemon=True)
    thread.start()
    try:
        yield assembly
    finally:
        assembly.runner.stop()
        thread.join(60)
        assembly.close()
    assert not thread.is_alive(), "runner did not stop"
    if failure:
        raise failure[0]


def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a ``clinic-events`` process started by a test.

    The test's config file names the broker and everything else, so the caller's
    ``CLINIC_EVENTS_*`` and ``KAFKA_BOOTSTRAP_SERVERS`` are left out (either would override
    it), except ``CLINIC_EVENTS_CACHE_DIR`` (where this machine keeps the broker's jars);
    nothing is exported over OTLP (no collector runs here); local state lives under
    ``tmp_path``.
    """
    env = {name: value for name, value in os.environ.items()
           if name == "CLINIC_EVENTS_CACHE_DIR" or not (
               name.startswith("CLINIC_EVENTS_") or name == "KAFKA_BOOTSTRAP_SERVERS")}
    env.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none",
               CLINIC_EVENTS_STATE_DIR=str(tmp_path / "state"))
    return env


def run_cli(tmp_path: Path, *args: str, stdin: str | None = None,
            timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """``clinic-events <args>`` run to its end in ``cli_env``, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "consumer", *args], input=stdin,
                          capture_output=True, text=True, env=cli_env(tmp_path),
                          timeout=timeout_s, check=False)


def start_run_process(config: Path, tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    """``clinic-events run --config`` as its own process (signals, crashes) in ``cli_env``,
    logging to ``<tmp_path>/<name>.log``."""
    with (tmp_path / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, env=cli_env(tmp_path), cwd=tmp_path)


def new_event(event_type: str = "appointment.scheduled", **payload: Any) -> dict[str, Any]:
    """A sample event with a fresh event id and entity id (so keys spread over partitions)."""
    event = sample_event(event_type, event_id=f"evt-{uuid.uuid4()}")
    entity_field = {"appointment.scheduled": "appointment_id", "appointment.rescheduled":
                    "appointment_id", "appointment.cancelled": "appointment_id",
                    "intake.submitted": "intake_id",
                    "eligibility.check_requested": "check_id"}[event_type]
    event["payload"][entity_field] = f"{entity_field[:-3]}-{uuid.uuid4().hex[:8]}"
    event["payload"].update(payload)
    return event


def produce(bootstrap: str, topic: str, events: Sequence[dict[str, Any]],
            raw: Sequence[tuple[bytes | None, bytes]] = ()) -> None:
    """Publish encoded events (and raw key/value pairs) and wait for every ack."""
    codec = EventCodec()
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "message.timeout.ms": 20_000})
    failures: list[str] = []

    def acked(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(str(error))

    for event in events:
        producer.produce(topic, key=entity_key(event), value=codec.encode(event),
                         on_delivery=acked)
    for key, value in raw:
        producer.produce(topic, key=key, value=value, on_delivery=acked)
    assert producer.flush(30) == 0
    assert failures == [], f"records were not acknowledged: {failures[:3]}"


def read_topic(bootstrap: str, topic: str, count: int, timeout_s: float = 30) -> list[Message]:
    """Read ``count`` records from the start of ``topic`` (all partitions), with a deadline."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < count and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                if message.error() is None:
                    messages.append(message)
    finally:
        consumer.close()
    return messages


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` until true or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def header(message: Message, name: str) -> bytes | None:
    """The last value of header ``name`` on ``message``."""
    found = None
    for key, value in message_headers(message):
        if key == name:
            found = value
    return found
