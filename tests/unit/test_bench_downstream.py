"""The delivery-rate benchmark's downstream: its rate counts every answer a client read."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from bench.downstream import SlowDownstream, plain_loop


def test_the_rate_waits_for_an_answer_the_client_read_before_the_server_noted_it() -> None:
    """A client can read its last response before the server's thread notes that it sent
    it; the rate of that pass must wait for the note, not report the call unanswered."""
    with SlowDownstream(latency_s=0.0) as server:
        plain_loop(server.url, threads=2, count=4, body=b"{}", headers={})
        noted = server._server.answered.pop()  # as if the last note were still to come
        late = threading.Timer(0.05, lambda: _note(server, noted))
        late.start()
        try:
            assert server.rate(4) > 0
        finally:
            late.join()


def test_the_rate_of_a_pass_with_a_call_never_answered_is_refused() -> None:
    with SlowDownstream(latency_s=0.0) as server:
        httpx.post(server.url, content=b"{}").raise_for_status()
        with pytest.raises(ValueError, match="1 of 2 calls answered"):
            server.rate(2, wait_s=0.05)


def test_the_plain_loop_calls_only_once_every_client_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client loads the CA bundle when built: a thread still building its own must not
    count against the loop's rate, which starts at the first call."""
    built: list[float] = []

    class SlowToBuild(httpx.Client):
        def __init__(self, **options: Any) -> None:
            time.sleep(0.05 * (1 + len(built)))
            super().__init__(**options)
            built.append(time.perf_counter())

    monkeypatch.setattr("bench.downstream.httpx.Client", SlowToBuild)
    with SlowDownstream(latency_s=0.0) as server:
        plain_loop(server.url, threads=3, count=6, body=b"{}", headers={})
        first_call = server._server.first_arrival
    assert len(built) == 3
    assert first_call is not None
    assert first_call > max(built)


def test_a_client_that_cannot_be_built_is_the_failure_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    class FailsOnce(httpx.Client):
        def __init__(self, **options: Any) -> None:
            calls.append(1)
            if len(calls) == 2:
                raise OSError("no CA bundle")
            super().__init__(**options)

    monkeypatch.setattr("bench.downstream.httpx.Client", FailsOnce)
    with SlowDownstream(latency_s=0.0) as server, \
            pytest.raises(RuntimeError, match="no CA bundle"):
        plain_loop(server.url, threads=3, count=6, body=b"{}", headers={})


def _note(server: SlowDownstream, at: float) -> None:
    with server._server.lock:
        server._server.answered.append(at)
        server._server.lock.notify_all()
