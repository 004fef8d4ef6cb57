"""A simulated clinic downstream API (an EHR / practice-management endpoint) over real HTTP.

Why it exists: the consumer's retry tiers, dedup and dead-letter paths only matter when the
downstream misbehaves, and *how* it misbehaves matters. Real EHR integration APIs shed load
with 503 and with 429 + ``Retry-After``, sometimes answer only after the client gave up,
reject payloads they cannot file with 422, and de-duplicate on an ``Idempotency-Key``. This
module serves exactly that from a stdlib ``ThreadingHTTPServer`` in a background thread, so the
README demo and the integration tests drive the consumer's real HTTP client end to end, with
no extra dependency and nothing but loopback.

Determinism: every answer is a pure function of the ``FailurePlan``, the request's
``Idempotency-Key`` and that key's attempt number (a ``random.Random`` seeded with
``"<seed>:<key>:<attempt>"``), never of the order in which concurrent requests arrive. A
seeded run fails the same events in the same way every time, however many are in flight.
``POST /events`` decides, first match wins::

    no Idempotency-Key, or body not a JSON object   400  (never delivered)
    key already delivered                           200 {"duplicate": true}   (counted)
    key in permanent_keys                           422  every attempt
    key in always_fail_keys                         503  every attempt
    attempt <= fail_first                           503, then success
    permanent_rate, drawn once per key (sticky)     422  every attempt
    transient_rate, drawn per attempt               503 | 429 + Retry-After | 504 after a delay
    otherwise                                       201 {"duplicate": false}  (delivered)

``GET /stats`` returns the counters as JSON and ``GET /health`` answers 200. Every
``POST /events`` is recorded (``requests()``) with the headers that matter to the consumer's
contract, so tests can assert attempts, ordering, trace propagation and, above all, that
``duplicate_deliveries()`` stays empty when the consumer de-duplicates.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from consumer.errors import ConfigError

EVENTS_PATH = "/events"
IDEMPOTENCY_HEADER = "Idempotency-Key"
TRACEPARENT_HEADER = "traceparent"
#: Header naming the event type; when absent, ``event_type`` is read from the JSON body.
EVENT_TYPE_HEADER = "X-Clinic-Event-Type"
MAX_BODY_BYTES = 1 << 20
POLL_INTERVAL_S = 0.01


class TransientKind(StrEnum):
    """The ways a busy EHR fails a request it may accept later."""

    UNAVAILABLE = "unavailable"  # 503, Retry-After when the plan sets one
    RATE_LIMITED = "rate_limited"  # 429, always with Retry-After
    SLOW = "slow"  # waits slow_response_s (past the client's timeout), then 504


class Outcome(StrEnum):
    """What the simulator did with one ``POST /events``."""

    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    SLOW = "slow"
    REJECTED = "rejected"
    BAD_REQUEST = "bad_request"


@dataclass(frozen=True, slots=True, kw_only=True)
class FailurePlan:
    """How the simulated downstream misbehaves; a value, validated once."""

    transient_rate: float = 0.0
    permanent_rate: float = 0.0
    fail_first: int = 0
    always_fail_keys: frozenset[str] = frozenset()
    permanent_keys: frozenset[str] = frozenset()
    retry_after_s: int | None = None
    transient_kinds: tuple[TransientKind, ...] = tuple(TransientKind)
    slow_response_s: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("transient_rate", "permanent_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, got {rate!r}")
        if self.transient_rate + self.permanent_rate > 1.0:
            raise ConfigError("transient_rate + permanent_rate must not exceed 1")
        if self.fail_first < 0:
            raise ConfigError(f"fail_first must be >= 0, got {self.fail_first!r}")
        if self.retry_after_s is not None and self.retry_after_s < 0:
            raise ConfigError(f"retry_after_s must be >= 0 or None, got {self.retry_after_s!r}")
        if self.slow_response_s < 0:
            raise ConfigError(f"slow_response_s must be >= 0, got {self.slow_response_s!r}")
        if not self.transient_kinds:
            raise ConfigError("transient_kinds must name at least one of "
                              f"{', '.join(TransientKind)}")
        if overlap := self.always_fail_keys & self.permanent_keys:
            raise ConfigError(f"keys both always failing and permanent: {sorted(overlap)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatedRequest:
    """One recorded ``POST /events`` and the simulator's answer."""

    monotonic_s: float
    wall_ms: int
    idempotency_key: str | None
    traceparent: str | None
    event_type: str | None
    attempt: int  # 1 for the first request with this key; 0 when there is no key
    status: int
    outcome: Outcome
    body: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    outcome: Outcome
    body: dict[str, Any]
    retry_after_s: int | None = None
    delay_s: float = 0.0


class DownstreamSimulator:
    """A misbehaving clinic API on a real socket; thread-safe, deterministic when seeded."""

    def __init__(
        self,
        plan: FailurePlan | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_request: Callable[[SimulatedRequest], None] | None = None,
    ) -> None:
        self.plan = plan or FailurePlan()
        self.seed = self.plan.seed if self.plan.seed is not None else random.randrange(2**32)
        self._host, self._port = host, port
        self._on_request = on_request
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._records: list[SimulatedRequest] = []
        self._attempts: Counter[str] = Counter()
        self._delivered: dict[str, Mapping[str, Any]] = {}  # insertion order = delivery order
        self._duplicates: Counter[str] = Counter()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Listen and serve in a background thread; return the base URL (``http://h:port``)."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping.clear()
        server = _Server((self._host, self._port), _Handler, self)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="downstream-simulator", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving, wake slow answers and release the socket; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()  # joins in-flight handler threads
        if thread is not None:
            thread.join()
        self._server = self._thread = None

    def __enter__(self) -> DownstreamSimulator:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def events_url(self) -> str:
        """The URL the consumer delivers to (``delivery.url``)."""
        return self.base_url + EVENTS_PATH

    # -- observations ------------------------------------------------------------------------

    def requests(self) -> list[SimulatedRequest]:
        """Every ``POST /events`` so far, in arrival order."""
        with self._lock:
            return list(self._records)

    def attempts_for(self, key: str) -> int:
        with self._lock:
            return self._attempts[key]

    def delivered_keys(self) -> list[str]:
        """Keys answered 2xx (not counting duplicates), in order of first delivery."""
        with self._lock:
            return list(self._delivered)

    def delivered_events(self) -> list[Mapping[str, Any]]:
        """Bodies of first deliveries, in delivery order (for per-entity ordering checks)."""
        with self._lock:
            return list(self._delivered.values())

    def duplicate_deliveries(self) -> dict[str, int]:
        """Key -> how many extra 2xx it got after its first delivery; empty when deduped."""
        with self._lock:
            return dict(self._duplicates)

    def stats(self) -> dict[str, Any]:
        """The counters ``GET /stats`` serves."""
        with self._lock:
            return {
                "requests": len(self._records),
                "keys": len(self._attempts),
                "delivered": len(self._delivered),
                "duplicates": sum(self._duplicates.values()),
                "by_status": dict(sorted(Counter(str(r.status) for r in self._records).items())),
                "by_outcome": dict(sorted(Counter(str(r.outcome) for r in self._records).items())),
                "seed": self.seed,
            }

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        """Poll ``predicate`` until it is true (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL_S)

    # -- decisions (called by the handler) ---------------------------------------------------

    def _answer(self, key: str | None, event_type: str | None, traceparent: str | None,
                body: Mapping[str, Any] | None, problem: str | None) -> _Answer:
        """Decide, record and count one request atomically; return what to send."""
        with self._lock:
            attempt = 0
            if key is not None:
                self._attempts[key] += 1
                attempt = self._attempts[key]
            answer = self._decide(key, attempt, problem)
            if answer.outcome is Outcome.DELIVERED and key is not None and body is not None:
                self._delivered[key] = body
            elif answer.outcome is Outcome.DUPLICATE and key is not None:
                self._duplicates[key] += 1
            record = SimulatedRequest(
                monotonic_s=time.monotonic(), wall_ms=time.time_ns() // 1_000_000,
                idempotency_key=key, traceparent=traceparent, event_type=event_type,
                attempt=attempt, status=answer.status, outcome=answer.outcome, body=body,
            )
            self._records.append(record)
        if self._on_request is not None:
            self._on_request(record)
        return answer

    def _decide(self, key: str | None, attempt: int, problem: str | None) -> _Answer:
        plan = self.plan
        if key is None or problem is not None:
            detail = problem or f"the {IDEMPOTENCY_HEADER} header is required"
            return _Answer(400, Outcome.BAD_REQUEST, {"error": "bad_request", "detail": detail})
        if key in self._delivered:
            return _Answer(200, Outcome.DUPLICATE, {"status": "accepted", "duplicate": True})
        if key in plan.permanent_keys or (
            plan.permanent_rate and random.Random(f"{self.seed}:{key}").random()
            < plan.permanent_rate
        ):
            return _Answer(422, Outcome.REJECTED, {
                "error": "unprocessable_entity",
                "detail": "patient_id does not match a chart in the practice-management system",
            })
        if key in plan.always_fail_keys or attempt <= plan.fail_first:
            return self._transient(TransientKind.UNAVAILABLE)
        rng = random.Random(f"{self.seed}:{key}:{attempt}")
        if rng.random() < plan.transient_rate:
            return self._transient(rng.choice(plan.transient_kinds))
        return _Answer(201, Outcome.DELIVERED, {"status": "accepted", "duplicate": False})

    def _transient(self, kind: TransientKind) -> _Answer:
        retry_after = self.plan.retry_after_s
        if kind is TransientKind.RATE_LIMITED:
            return _Answer(429, Outcome.RATE_LIMITED,
                           {"error": "rate_limited", "detail": "too many requests for this clinic"},
                           retry_after_s=1 if retry_after is None else retry_after)
        if kind is TransientKind.SLOW:
            return _Answer(504, Outcome.SLOW,
                           {"error": "gateway_timeout", "detail": "EHR did not answer in time"},
                           delay_s=self.plan.slow_response_s)
        return _Answer(503, Outcome.UNAVAILABLE,
                       {"error": "service_unavailable", "detail": "EHR interface engine is busy"},
                       retry_after_s=retry_after)


class _Server(ThreadingHTTPServer):
    """Joins handler threads on close, and ignores clients that hung up (timeouts).

    Each answer closes its connection (HTTP/1.0), so no idle keep-alive socket can race a
    client's reuse or outlive ``stop()``; the deeper listen backlog absorbs a consumer
    opening a connection per in-flight event.
    """

    daemon_threads = False
    block_on_close = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 simulator: DownstreamSimulator) -> None:
        self.simulator = simulator
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and closed its socket is expected here, not an error.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5.0  # a silent client cannot hold stop() for longer than this
    server_version = "ClinicEHRSimulator/1.0"

    def do_GET(self) -> None:
        if self.path == "/stats":
            self._send(200, self.server.simulator.stats())
        elif self.path == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not_found"})

    def do_POST(self) -> None:
        if self.path != EVENTS_PATH:
            self._send(404, {"error": "not_found"})
            return
        body, problem = self._read_json()
        event_type = self.headers.get(EVENT_TYPE_HEADER)
        if event_type is None and body is not None and isinstance(body.get("event_type"), str):
            event_type = body["event_type"]
        simulator = self.server.simulator
        answer = simulator._answer(
            self.headers.get(IDEMPOTENCY_HEADER), event_type,
            self.headers.get(TRACEPARENT_HEADER), body, problem,
        )
        if answer.delay_s and simulator._stopping.wait(answer.delay_s):
            return  # stopping: drop the connection instead of answering
        headers = {} if answer.retry_after_s is None else {"Retry-After": str(answer.retry_after_s)}
        self._send(answer.status, answer.body, headers)

    def _read_json(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return None, "Content-Length is not a number"
        if not 0 < length <= MAX_BODY_BYTES:
            return None, f"a JSON body of 1 to {MAX_BODY_BYTES} bytes is required"
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None, "body is not valid JSON"
        if not isinstance(body, dict):
            return None, "body must be a JSON object"
        return body, None

    def _send(self, status: int, body: Mapping[str, Any],
              headers: Mapping[str, str] | None = None) -> None:
        payload = json.dumps(body).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            return  # the client gave up (e.g. its timeout fired during a slow answer)

    def log_message(self, format: str, *args: Any) -> None:
        return  # requests are recorded instead; the CLI prints them with --verbose
