"""Delivery handlers: the HTTP contract (statuses, Retry-After, transport errors, headers)
and the Python-callable handler (exception rules, loading by name)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from consumer.config.settings import load_settings
from consumer.delivery.handlers import (
    CallableDelivery,
    DeliveryContext,
    HttpDelivery,
    build_handler,
    load_callable,
    user_agent,
)
from consumer.errors import ConfigError, PermanentError, TransientError
from consumer.events.codec import EventRecord
from consumer.events.model import event_to_json
from retry_topics.classification import Classification, ExceptionRules
from retry_topics.clock import ManualClock
from tests.unit.sample_events import sample_event

URL = "http://downstream.test/api/events?token=abc"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
EVENT = sample_event("intake.submitted", "evt-42")
CONTEXT = DeliveryContext(event_id="evt-42", event_type="intake.submitted", topic="clinic.events",
                          partition=3, offset=17, attempt=1, traceparent=TRACEPARENT)
Responder = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_a_delivery_context_cannot_be_changed_by_a_handler() -> None:
    with pytest.raises(AttributeError):
        CONTEXT.attempt = 2  # type: ignore[misc]


@pytest.fixture
def http(clock: ManualClock) -> Iterator[Callable[[Responder], HttpDelivery]]:
    """Builds HttpDelivery handlers answering through ``responder``; closes them afterwards."""
    made: list[HttpDelivery] = []

    def build(responder: Responder) -> HttpDelivery:
        handler = HttpDelivery(URL, 2_000, transport=httpx.MockTransport(responder), clock=clock)
        made.append(handler)
        return handler

    yield build
    for handler in made:
        handler.close()


@pytest.mark.parametrize("traceparent", [TRACEPARENT, None])
def test_request_carries_contract_headers_and_json_event(
    http: Callable[[Responder], HttpDelivery], traceparent: str | None
) -> None:
    seen: list[httpx.Request] = []

    def responder(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    http(responder).deliver(EVENT, CONTEXT._replace(traceparent=traceparent))
    (request,) = seen
    assert (request.method, str(request.url)) == ("POST", URL)
    assert request.headers["Idempotency-Key"] == "evt-42"
    assert request.headers.get("traceparent") == traceparent
    assert "tracestate" not in request.headers
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Clinic-Event-Type"] == "intake.submitted"
    assert request.headers["User-Agent"] == user_agent()
    assert user_agent().startswith("clinic-events/")
    assert json.loads(request.content) == event_to_json(EVENT)


def test_a_tracestate_goes_with_the_traceparent(
    http: Callable[[Responder], HttpDelivery],
) -> None:
    seen: list[httpx.Request] = []

    def responder(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    http(responder).deliver(
        EVENT, CONTEXT._replace(traceparent=TRACEPARENT, tracestate="vendor=a,other=1"))
    assert seen[0].headers["tracestate"] == "vendor=a,other=1"


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(http: Callable[[Responder], HttpDelivery], status: int) -> None:
    http(lambda _: httpx.Response(status)).deliver(EVENT, CONTEXT)


@pytest.mark.parametrize(
    ("status", "expected"),
    [*((s, TransientError) for s in (408, 425, 429, 500, 502, 503, 504, 599)),
     *((s, PermanentError) for s in (301, 400, 401, 403, 404, 409, 410, 422))],
)
def test_failing_statuses_are_classified(
    http: Callable[[Responder], HttpDelivery], status: int, expected: type[Exception]
) -> None:
    handler = http(lambda _: httpx.Response(status, text="Maria Okafor token abc"))
    with pytest.raises(expected) as caught:
        handler.deliver(EVENT, CONTEXT)
    assert isinstance(caught.value, TransientError | PermanentError)
    assert caught.value.error_class == f"http.{status}"
    assert str(caught.value).startswith(f"POST /api/events answered {status}")
    assert not any(word in str(caught.value) for word in ("Maria", "token", "abc"))
    if isinstance(caught.value, TransientError):
        assert caught.value.retry_after_ms is None


@pytest.mark.parametrize(("status", "expected"), [
    (400, "POST /api/events answered 400 Bad Request"),
    (503, "POST /api/events answered 503 Service Unavailable"),
    (599, "POST /api/events answered 599"),
])
def test_a_servers_own_reason_phrase_never_reaches_the_error_message(
    http: Callable[[Responder], HttpDelivery], status: int, expected: str
) -> None:
    """A downstream may put patient data in its reason phrase; the message travels in DLQ
    headers, so it names the standard phrase of the status instead."""
    reason = b"Rejected for Ada Testperson dob 1985-04-12"
    handler = http(lambda _: httpx.Response(status, extensions={"reason_phrase": reason}))
    with pytest.raises((TransientError, PermanentError)) as caught:
        handler.deliver(EVENT, CONTEXT)
    assert str(caught.value) == expected


_IN_90_S = format_datetime(datetime.fromtimestamp(ManualClock().now_ms() / 1000 + 90, tz=UTC),
                           usegmt=True)


@pytest.mark.parametrize(
    ("status", "retry_after", "expected_ms"),
    [(429, "120", 120_000), (503, _IN_90_S, 90_000), (503, "soon", None)],
)
def test_retry_after_in_seconds_or_http_date(
    http: Callable[[Responder], HttpDelivery], status: int, retry_after: str,
    expected_ms: int | None,
) -> None:
    handler = http(lambda _: httpx.Response(status, headers={"Retry-After": retry_after}))
    with pytest.raises(TransientError) as caught:
        handler.deliver(EVENT, CONTEXT)
    assert caught.value.retry_after_ms == expected_ms


@pytest.mark.parametrize(
    ("error", "error_class"),
    [(httpx.ReadTimeout, "timeout"), (httpx.ConnectTimeout, "timeout"),
     (httpx.PoolTimeout, "timeout"), (httpx.ConnectError, "connection"),
     (httpx.RemoteProtocolError, "connection")],
)
def test_timeouts_and_transport_errors_are_transient(
    http: Callable[[Responder], HttpDelivery], error: type[httpx.TransportError],
    error_class: str,
) -> None:
    def responder(request: httpx.Request) -> httpx.Response:
        raise error("broken", request=request)

    with pytest.raises(TransientError) as caught:
        http(responder).deliver(EVENT, CONTEXT)
    assert caught.value.error_class == error_class
    assert isinstance(caught.value.__cause__, error)


def test_real_connection_refused_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = HttpDelivery(f"http://127.0.0.1:{port}/events", 2_000)
    try:
        with pytest.raises(TransientError) as caught:
            handler.deliver(EVENT, CONTEXT)
    finally:
        handler.close()
    assert caught.value.error_class == "connection"


def test_shared_client_serves_concurrent_workers(
    http: Callable[[Responder], HttpDelivery],
) -> None:
    keys: list[str] = []
    lock = threading.Lock()

    def responder(request: httpx.Request) -> httpx.Response:
        with lock:
            keys.append(request.headers["Idempotency-Key"])
        return httpx.Response(200)

    handler = http(responder)
    contexts = [DeliveryContext(event_id=f"evt-{n}", event_type="intake.submitted", topic="t",
                                partition=0, offset=n, attempt=1, traceparent=None)
                for n in range(40)]
    threads = [threading.Thread(target=handler.deliver, args=(EVENT, c)) for c in contexts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(keys) == sorted(c.event_id for c in contexts)


@pytest.mark.parametrize("url", ["ftp://x/y", "not a url"])
def test_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"delivery\.url"):
        HttpDelivery(url, 1_000)


class BoomError(Exception):
    pass


class FatalError(BoomError):
    pass


RULES = ExceptionRules(permanent=(f"{__name__}.FatalError", "builtins.KeyError"),
                       transient=(f"{__name__}.BoomError",), default=Classification.TRANSIENT)


def _raising(exc: BaseException) -> Callable[[EventRecord, DeliveryContext], object]:
    def target(event: EventRecord, context: DeliveryContext) -> object:
        raise exc

    return target


def test_callable_success_and_arguments() -> None:
    calls: list[tuple[EventRecord, DeliveryContext]] = []
    CallableDelivery(lambda e, c: calls.append((e, c)), RULES).deliver(EVENT, CONTEXT)
    assert calls == [(EVENT, CONTEXT)]


@pytest.mark.parametrize("intent", [TransientError("later", retry_after_ms=5),
                                    PermanentError("never", error_class="custom.bad")])
def test_intent_errors_pass_through(intent: Exception) -> None:
    with pytest.raises(type(intent)) as caught:
        CallableDelivery(_raising(intent), RULES).deliver(EVENT, CONTEXT)
    assert caught.value is intent


@pytest.mark.parametrize(
    ("exc", "expected", "error_class"),
    [
        (FatalError("no"), PermanentError, f"{__name__}.FatalError"),
        (BoomError("again"), TransientError, f"{__name__}.BoomError"),
        (KeyError("patient_id"), PermanentError, "builtins.KeyError"),
        (RuntimeError("unlisted"), TransientError, "builtins.RuntimeError"),
    ],
)
def test_other_exceptions_follow_the_rules(
    exc: Exception, expected: type[Exception], error_class: str
) -> None:
    with pytest.raises(expected) as caught:
        CallableDelivery(_raising(exc), RULES).deliver(EVENT, CONTEXT)
    assert isinstance(caught.value, TransientError | PermanentError)
    assert caught.value.error_class == error_class
    assert caught.value.__cause__ is exc


@pytest.mark.parametrize(("rules", "expected"), [
    (RULES, TransientError),
    (ExceptionRules(permanent=("builtins.SystemExit",)), PermanentError),
])
def test_a_handler_calling_sys_exit_fails_the_event_not_the_consumer(
    rules: ExceptionRules, expected: type[Exception]
) -> None:
    """A library call exiting the process is a handler bug: classified like any exception."""
    def exits(event: EventRecord, context: DeliveryContext) -> object:
        raise SystemExit(3)

    with pytest.raises(expected) as caught:
        CallableDelivery(exits, rules).deliver(EVENT, CONTEXT)
    assert isinstance(caught.value, TransientError | PermanentError)
    assert caught.value.error_class == "builtins.SystemExit"
    assert str(caught.value) == "SystemExit: 3"


def test_keyboard_interrupt_in_a_handler_still_propagates() -> None:
    """The run command handles SIGINT itself; an interrupt reaching the handler is not its
    failure to classify."""
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as caught:
        CallableDelivery(_raising(interrupt), RULES).deliver(EVENT, CONTEXT)
    assert caught.value is interrupt


def test_default_permanent_rule_and_redacted_message() -> None:
    rules = ExceptionRules(default=Classification.PERMANENT)
    with pytest.raises(PermanentError) as caught:
        CallableDelivery(_raising(ValueError("call +15551234567 now")), rules).deliver(
            EVENT, CONTEXT)
    assert "15551234567" not in str(caught.value)
    assert str(caught.value).startswith("ValueError: ")


def test_load_callable_finds_module_attributes() -> None:
    dumps: object = load_callable("json:dumps")
    decode: object = load_callable("json:JSONDecoder.decode")
    assert dumps is json.dumps
    assert decode is json.JSONDecoder.decode


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("json.dumps", "must look like"),
        ("no_such_pkg_xyz.mod:f", "no module named 'no_such_pkg_xyz.mod'"),
        ("json:nope", "has no attribute 'nope'"),
        ("json:decoder", "not a callable"),
    ],
)
def test_load_callable_errors_name_the_setting(spec: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=r"delivery\.handler") as caught:
        load_callable(spec)
    assert problem in str(caught.value)


def test_load_callable_reports_a_module_that_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_handler_mod.py").write_text("import missing_dependency_xyz\n")
    (tmp_path / "raising_handler_mod.py").write_text("raise RuntimeError('bad init')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="importing 'broken_handler_mod' failed"):
        load_callable("broken_handler_mod:deliver")
    with pytest.raises(ConfigError, match="RuntimeError: bad init"):
        load_callable("raising_handler_mod:deliver")


def test_build_handler_picks_callable_or_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    callable_handler = build_handler(
        load_settings(env={"CLINIC_EVENTS_DELIVERY_HANDLER": "json:dumps"}))
    assert isinstance(callable_handler, CallableDelivery)
    callable_handler.close()
    http_handler = build_handler(load_settings(env={}))
    assert isinstance(http_handler, HttpDelivery)
    http_handler.close()


def test_a_handler_with_a_rule_that_could_never_match_is_refused_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rules apply to a Python handler's exceptions; one naming no class by its path stops
    ``run`` (exit 2) rather than letting those failures fall to the default."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ehr_handler_mod.py").write_text(
        "class EhrBusy(Exception):\n    pass\n\ndef deliver(event, context):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    env = {"CLINIC_EVENTS_DELIVERY_HANDLER": "ehr_handler_mod:deliver"}
    accepted = build_handler(load_settings(env={
        **env, "CLINIC_EVENTS_CLASSIFICATION_TRANSIENT": '["ehr_handler_mod.EhrBusy"]'}))
    accepted.close()
    with pytest.raises(ConfigError, match=r"classification.transient: 'ehr_handler_mod.EhrBsy' "
                                          r"does not exist"):
        build_handler(load_settings(env={
            **env, "CLINIC_EVENTS_CLASSIFICATION_TRANSIENT": '["ehr_handler_mod.EhrBsy"]'}))


def test_http_delivery_with_a_rule_that_could_never_match_is_refused_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same check with delivery over HTTP: the documented exit 2 for a rule naming no
    class does not depend on how events are delivered."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"classification.permanent: 'nosuch.module.Err' "
                                          r"cannot be imported"):
        build_handler(load_settings(env={
            "CLINIC_EVENTS_CLASSIFICATION_PERMANENT": '["nosuch.module.Err"]'}))
