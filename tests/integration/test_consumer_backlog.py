"""A slow downstream with a backlog: due retries are not held up, outcomes are not either."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from consumer.config.settings import Settings
from consumer.delivery.handlers import DeliveryContext
from consumer.errors import TransientError
from tests.integration.harness import (
    new_event,
    produce,
    running_consumer,
    settings_for,
    wait_until,
    write_config,
)

CALL_S = 0.25  # every handler call takes this long
DELAY_S = 1.0
BACKLOG = 40  # first attempts published behind the failing event: ~5 s of work on 2 lanes


class SlowHandler:
    """Takes CALL_S a call; fails the first call of ``failing_id`` (transient)."""

    def __init__(self, failing_id: str) -> None:
        self._failing_id = failing_id
        self._lock = threading.Lock()
        self.calls: dict[str, list[float]] = {}

    def deliver(self, event: dict[str, Any], context: DeliveryContext) -> None:
        with self._lock:
            self.calls.setdefault(context.event_id, []).append(time.monotonic())
            first_of_failing = context.event_id == self._failing_id and \
                len(self.calls[context.event_id]) == 1
        time.sleep(CALL_S)
        if first_of_failing:
            raise TransientError("downstream busy", error_class="http.503")

    def close(self) -> None:
        """Nothing to release."""


def test_a_due_retry_is_not_held_up_by_first_attempts_queued_behind_a_slow_downstream(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """The retry of an event that failed once is called about its tier delay after the
    failure (never before, at most delay + 1 s), although ~5 s of first attempts were
    consumed behind it."""
    failing = new_event()
    backlog = [new_event() for _ in range(BACKLOG)]
    handler = SlowHandler(str(failing["event_id"]))
    with running_consumer(_settings(tmp_path, kafka_bootstrap, topic_prefix),
                          handler=handler) as assembly:
        produce(kafka_bootstrap, topic_prefix, [failing, *backlog])
        assert wait_until(lambda: len(handler.calls.get(str(failing["event_id"]), [])) == 2, 30)
        first_call, retry_call = handler.calls[str(failing["event_id"])]
        # the failed call took CALL_S, then the record waited for its tier's delay
        gap = retry_call - (first_call + CALL_S)
        assert DELAY_S - 0.05 <= gap <= DELAY_S + 1.0, f"retried {gap:.2f} s after failing"
        every = {str(e["event_id"]) for e in [failing, *backlog]}
        assert wait_until(lambda: assembly.runner.stats["delivered"] == len(every), 60)
    assert set(handler.calls) == every
    assert all(len(handler.calls[e]) == 1 for e in every - {str(failing["event_id"])})


def test_delivered_outcomes_are_recorded_as_calls_finish_not_when_a_lane_is_done(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """With a slow downstream, an event the downstream accepted is recorded (and its offset
    stored) within about half a second, not once its lane's whole backlog is done: what a
    crash can hand to the handler again is a few calls, not seconds of them."""
    handler = SlowHandler("none fails")
    events = [new_event() for _ in range(BACKLOG)]
    with running_consumer(_settings(tmp_path, kafka_bootstrap, topic_prefix),
                          handler=handler) as assembly:
        produce(kafka_bootstrap, topic_prefix, events)
        assert wait_until(lambda: len(handler.calls) >= BACKLOG // 2, 30)  # mid-backlog
        now = time.monotonic()
        finished = sum(1 for (started,) in list(handler.calls.values())
                       if now - started > CALL_S + 0.5)
        recorded = assembly.runner.stats["delivered"]
        assert finished >= 10
        assert recorded >= finished - 2, f"{finished} calls long finished, {recorded} recorded"
        assert wait_until(lambda: assembly.runner.stats["delivered"] == BACKLOG, 60)


def _settings(tmp_path: Path, bootstrap: str, main: str) -> Settings:
    return settings_for(write_config(tmp_path, bootstrap=bootstrap, main=main,
                                     delays=(f"{int(DELAY_S)}s",), partitions=1,
                                     concurrency=2))
