"""The simulated clinic downstream API, exercised over real loopback HTTP with httpx."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from consumer.dev.simulator import (
    EVENT_TYPE_HEADER,
    DownstreamSimulator,
    FailurePlan,
    Outcome,
    TransientKind,
)
from consumer.errors import ConfigError

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _event(key: str, event_type: str = "appointment.scheduled") -> dict[str, Any]:
    return {"event_id": key, "event_type": event_type, "payload": {"appointment_id": "appt-1"}}


def _post(client: httpx.Client, sim: DownstreamSimulator, key: str | None,
          **headers: str) -> httpx.Response:
    sent = {"Idempotency-Key": key} if key is not None else {}
    return client.post(sim.events_url, json=_event(key or "none"), headers={**sent, **headers})


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as http:
        yield http


def test_fail_first_fails_each_key_n_times_then_delivers(client: httpx.Client) -> None:
    with DownstreamSimulator(FailurePlan(fail_first=2)) as sim:
        statuses = [_post(client, sim, "evt-a").status_code for _ in range(3)]
        assert _post(client, sim, "evt-b").status_code == 503
        assert statuses == [503, 503, 201]
        assert sim.attempts_for("evt-a") == 3
        assert sim.attempts_for("evt-b") == 1
        assert sim.delivered_keys() == ["evt-a"]
        assert sim.duplicate_deliveries() == {}


def test_permanent_keys_are_rejected_with_a_json_error_every_time(client: httpx.Client) -> None:
    with DownstreamSimulator(FailurePlan(permanent_keys=frozenset({"bad"}))) as sim:
        for _ in range(2):
            response = _post(client, sim, "bad")
            assert response.status_code == 422
            assert response.json()["error"] == "unprocessable_entity"
        assert _post(client, sim, "good").status_code == 201
        assert sim.delivered_keys() == ["good"]


def test_always_fail_keys_never_succeed(client: httpx.Client) -> None:
    with DownstreamSimulator(FailurePlan(always_fail_keys=frozenset({"stuck"}))) as sim:
        assert {_post(client, sim, "stuck").status_code for _ in range(4)} == {503}
        assert sim.attempts_for("stuck") == 4
        assert sim.delivered_keys() == []


def test_503_carries_retry_after_when_the_plan_sets_it(client: httpx.Client) -> None:
    with DownstreamSimulator(FailurePlan(fail_first=1, retry_after_s=3)) as sim:
        response = _post(client, sim, "evt-a")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "3"
    with DownstreamSimulator(FailurePlan(fail_first=1)) as sim:
        assert "Retry-After" not in _post(client, sim, "evt-a").headers


def test_429_always_carries_retry_after(client: httpx.Client) -> None:
    plan = FailurePlan(transient_rate=1.0, transient_kinds=(TransientKind.RATE_LIMITED,),
                       retry_after_s=2, seed=1)
    with DownstreamSimulator(plan) as sim:
        response = _post(client, sim, "evt-a")
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "2"


def test_a_second_delivery_of_a_key_is_answered_as_duplicate_and_counted(
    client: httpx.Client,
) -> None:
    with DownstreamSimulator() as sim:
        first = _post(client, sim, "evt-a")
        second = _post(client, sim, "evt-a")
        assert (first.status_code, first.json()["duplicate"]) == (201, False)
        assert (second.status_code, second.json()["duplicate"]) == (200, True)
        assert sim.delivered_keys() == ["evt-a"]
        assert sim.duplicate_deliveries() == {"evt-a": 1}


def test_stats_endpoint_reports_counts(client: httpx.Client) -> None:
    with DownstreamSimulator(FailurePlan(fail_first=1, seed=5)) as sim:
        for key in ("evt-a", "evt-a", "evt-a", "evt-b"):
            _post(client, sim, key)
        stats = client.get(sim.base_url + "/stats").json()
        assert stats == sim.stats()
        assert stats["requests"] == 4
        assert stats["keys"] == 2
        assert stats["delivered"] == 1
        assert stats["duplicates"] == 1
        assert stats["by_status"] == {"200": 1, "201": 1, "503": 2}
        assert stats["seed"] == 5
        assert client.get(sim.base_url + "/health").status_code == 200


def test_every_request_is_recorded_with_its_headers(client: httpx.Client) -> None:
    with DownstreamSimulator(FailurePlan(fail_first=1)) as sim:
        _post(client, sim, "evt-a", traceparent=TRACEPARENT)
        _post(client, sim, "evt-a", **{EVENT_TYPE_HEADER: "intake.submitted"})
        first, second = sim.requests()
        assert (first.idempotency_key, first.attempt, first.status) == ("evt-a", 1, 503)
        assert first.outcome is Outcome.UNAVAILABLE
        assert first.traceparent == TRACEPARENT
        assert first.event_type == "appointment.scheduled"  # from the body without a header
        assert second.event_type == "intake.submitted"  # the header wins
        assert (second.attempt, second.status, second.outcome) == (2, 201, Outcome.DELIVERED)
        assert first.monotonic_s <= second.monotonic_s
        assert abs(first.wall_ms - time.time() * 1000) < 60_000
        assert sim.delivered_events() == [_event("evt-a")]


def test_requests_without_idempotency_key_or_json_object_are_bad(client: httpx.Client) -> None:
    with DownstreamSimulator() as sim:
        assert _post(client, sim, None).status_code == 400
        response = client.post(sim.events_url, content=b"[1, 2]",
                               headers={"Idempotency-Key": "evt-a"})
        assert response.status_code == 400
        assert "JSON object" in response.json()["detail"]
        assert client.post(sim.base_url + "/other", json={}).status_code == 404
        assert sim.delivered_keys() == []
        assert [r.outcome for r in sim.requests()] == [Outcome.BAD_REQUEST] * 2


def test_seeded_plans_fail_the_same_keys_the_same_way(client: httpx.Client) -> None:
    plan = FailurePlan(transient_rate=0.4, permanent_rate=0.1, seed=7)
    keys = [f"evt-{n}" for n in range(40)]

    def run(order: list[str]) -> dict[tuple[str, int], int]:
        with DownstreamSimulator(plan) as sim:
            for _ in range(3):
                for key in order:
                    _post(client, sim, key)
            return {(r.idempotency_key or "", r.attempt): r.status for r in sim.requests()}

    forward = run(keys)
    assert forward == run(list(reversed(keys)))  # arrival order does not matter
    assert {200, 201, 422} <= set(forward.values())
    assert set(forward.values()) & {429, 503, 504}


def test_slow_answers_outlast_the_client_timeout_and_do_not_delay_stop() -> None:
    plan = FailurePlan(transient_rate=1.0, transient_kinds=(TransientKind.SLOW,),
                       slow_response_s=30.0)
    sim = DownstreamSimulator(plan)
    sim.start()
    try:
        with httpx.Client(timeout=0.2) as slow_client, pytest.raises(httpx.ReadTimeout):
            _post(slow_client, sim, "evt-a")
        assert [(r.status, r.outcome) for r in sim.requests()] == [(504, Outcome.SLOW)]
    finally:
        started = time.monotonic()
        sim.stop()
    assert time.monotonic() - started < 5.0


def test_wait_for_polls_until_true_or_deadline(client: httpx.Client) -> None:
    with DownstreamSimulator() as sim:
        assert not sim.wait_for(lambda: bool(sim.delivered_keys()), timeout_s=0.05)
        _post(client, sim, "evt-a")
        assert sim.wait_for(lambda: sim.delivered_keys() == ["evt-a"], timeout_s=5.0)


def test_start_twice_and_stop_twice() -> None:
    sim = DownstreamSimulator()
    base = sim.start()
    try:
        assert base.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError):
            sim.start()
    finally:
        sim.stop()
    sim.stop()
    with pytest.raises(RuntimeError):
        _ = sim.base_url


@pytest.mark.parametrize("kwargs", [
    {"transient_rate": 1.5},
    {"permanent_rate": -0.1},
    {"transient_rate": 0.7, "permanent_rate": 0.4},
    {"fail_first": -1},
    {"retry_after_s": -2},
    {"slow_response_s": -1.0},
    {"transient_kinds": ()},
    {"always_fail_keys": frozenset({"k"}), "permanent_keys": frozenset({"k"})},
])
def test_invalid_plans_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        FailurePlan(**kwargs)


def _read_line(stream: Any, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.05)
        if ready:
            return str(stream.readline())
    raise AssertionError("no output from simulate-downstream")


# The command itself, without the rest of the CLI (which may import much more).
_RUN_COMMAND = ("from consumer.cli.simulate import simulate_command; "
                "simulate_command(prog_name='clinic-events simulate-downstream')")


def test_cli_registers_simulate_downstream() -> None:
    from consumer.cli.main import main

    assert "simulate-downstream" in main.commands


def test_cli_on_a_port_in_use_says_so_in_one_line_and_exits_1() -> None:
    """Worded as ``kafka start`` words it, rather than an OSError traceback."""
    from consumer.cli.main import main

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["simulate-downstream", "--port", str(port)])
    assert result.exit_code == 1
    assert result.output == (
        f"clinic-events: port {port} is already in use; choose another with --port\n")


def test_cli_on_an_address_it_cannot_resolve_says_so_in_one_line_and_exits_1() -> None:
    from consumer.cli.main import main

    result = CliRunner().invoke(main, ["simulate-downstream", "--host", "999.1.1.1"])
    assert result.exit_code == 1
    assert result.output.startswith("clinic-events: cannot listen on 999.1.1.1:8080: ")
    assert result.output.count("\n") == 1


def test_cli_serves_until_sigterm_then_prints_a_summary(client: httpx.Client) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-c", _RUN_COMMAND, "--port", "0",
         "--transient-rate", "0", "--permanent-rate", "0", "--fail-first", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    ) as proc:
        try:
            assert proc.stderr is not None
            banner = _read_line(proc.stderr, timeout_s=20.0)
            url = banner.split(" on ", 1)[1].split()[0]
            assert url.endswith("/events")
            body = json.dumps(_event("evt-a"))
            statuses = [client.post(url, content=body, headers={"Idempotency-Key": "evt-a"})
                        .status_code for _ in range(2)]
            assert statuses == [503, 201]
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0
    assert out.strip() == "requests=2 events=1 delivered=1 duplicates=0 201=1 503=1"
