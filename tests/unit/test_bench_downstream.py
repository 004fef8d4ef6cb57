"""The delivery-rate benchmark's downstream: its rate counts every answer a client read."""

from __future__ import annotations

import threading

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


def _note(server: SlowDownstream, at: float) -> None:
    with server._server.lock:
        server._server.answered.append(at)
        server._server.lock.notify_all()
