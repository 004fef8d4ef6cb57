"""A downstream that answers every POST after a fixed latency, and a plain client loop for it.

Why its own server (not ``consumer.dev.simulator``): the delivery-rate target compares the
pipeline with a plain loop of threads against the *same* server, so the server must do as
little as possible besides waiting: read the body, sleep ``latency_s``, answer 200. It keeps
connections alive (HTTP/1.1) and sets ``TCP_NODELAY`` on every accepted socket
(``disable_nagle_algorithm``): without it, Nagle's algorithm on the server meeting delayed
ACKs on the client holds each small response back for up to 40 ms, which caps a loopback
server near 240 calls/s whatever the client does.

Rates are taken on the server's clock, the same way for both clients: from the arrival of
the first request to the end of the ``count``-th response.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx

PATH = "/events"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, latency_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.latency_s = latency_s
        self.lock = threading.Condition()  # notified at the end of each response
        self.first_arrival: float | None = None
        self.answered: list[float] = []  # perf_counter at the end of each response


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client worker
    disable_nagle_algorithm = True  # TCP_NODELAY on the accepted socket
    server: _Server

    def do_POST(self) -> None:
        arrived = time.perf_counter()
        server = self.server
        with server.lock:
            if server.first_arrival is None:
                server.first_arrival = arrived
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(server.latency_s)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
        self.wfile.flush()
        with server.lock:
            server.answered.append(time.perf_counter())
            server.lock.notify_all()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a line per request would cost the server time."""


class SlowDownstream:
    """A loopback HTTP server answering ``POST /events`` with 200 after ``latency_s``."""

    def __init__(self, latency_s: float) -> None:
        self._server = _Server(latency_s)
        self._thread = threading.Thread(target=self._server.serve_forever, name="downstream",
                                        daemon=True)

    def __enter__(self) -> SlowDownstream:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{PATH}"

    @property
    def answered(self) -> int:
        with self._server.lock:
            return len(self._server.answered)

    def reset(self) -> None:
        """Forget what was served, before the next client's pass."""
        with self._server.lock:
            self._server.first_arrival = None
            self._server.answered.clear()

    def rate(self, count: int, *, wait_s: float = 5.0) -> float:
        """Calls per second: first arrival -> end of the ``count``-th response.

        Waits up to ``wait_s`` for the ``count``-th to be noted: a client may read its last
        response before the server's thread has noted that it sent it.
        """
        with self._server.lock:
            self._server.lock.wait_for(lambda: len(self._server.answered) >= count, wait_s)
            first, answered = self._server.first_arrival, sorted(self._server.answered)
        if first is None or len(answered) < count:
            raise ValueError(f"{len(answered)} of {count} calls answered")
        return count / (answered[count - 1] - first)


def plain_loop(url: str, *, threads: int, count: int, body: bytes,
               headers: Mapping[str, str], timeout_s: float = 10.0) -> None:
    """``threads`` threads, each posting with its own httpx client, ``count`` calls in all.

    Every client is built before the first call: building one loads the CA bundle (tens of
    milliseconds), and threads still building theirs while others post would lower the
    rate the way no long-running client is slowed (the pipeline builds its client before
    it consumes).
    """
    share, extra = divmod(count, threads)
    failures: list[BaseException] = []
    all_built = threading.Barrier(threads)

    def post(calls: int) -> None:
        try:
            with httpx.Client(timeout=timeout_s) as client:
                all_built.wait(timeout_s)
                for _ in range(calls):
                    client.post(url, content=body, headers=dict(headers)).raise_for_status()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller's thread
            failures.append(exc)  # before the barrier breaks: the cause is reported first
            all_built.abort()  # the others must not wait for this one

    workers = [threading.Thread(target=post, args=(share + (index < extra),), daemon=True)
               for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise RuntimeError(f"plain loop failed: {failures[0]!r}") from failures[0]
