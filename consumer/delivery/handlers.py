"""The delivery handler contract, and the two handlers shipped: HTTP POST and a Python callable.

A handler gets one decoded event and its :class:`DeliveryContext` and either returns (the
event is delivered) or raises :class:`~consumer.errors.TransientError` (retry later, through
the retry tiers) or :class:`~consumer.errors.PermanentError` (dead-letter now). The consumer
calls handlers from several worker threads at once, so handlers must be thread-safe.

:class:`HttpDelivery` follows the HTTP contract in DESIGN.md: POST the JSON event with
``Idempotency-Key: <event id>`` (the downstream drops repeats of an at-least-once delivery)
and ``traceparent`` (with ``tracestate``); 2xx is delivered; 408, 425, 429, 5xx, timeouts
and connection errors are transient, honouring ``Retry-After``; any other status is
permanent. One
``httpx.Client`` is shared by every worker (it is thread-safe), with a connection pool as
large as the worker count so no worker waits for a connection.

Error messages name the status, its standard reason phrase and the URL path only: request
and response bodies, and a server's own reason phrase ("Rejected for <patient name>"), may
hold patient data, and messages travel in DLQ headers.

:class:`CallableDelivery` runs ``package.module:function``; intent errors pass through, any
other exception is classified by the configured :class:`ExceptionRules` and wrapped, with
its dotted class path as ``error_class`` so operators can write rules for it. ``SystemExit``
(a ``sys.exit`` in the handler or a library it calls) is such an exception too: left to
propagate it would take the whole consumer down for one event's bug.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from typing import NamedTuple, Protocol

import httpx

from consumer.config.settings import Settings
from consumer.delivery.rule_classes import check_rule_classes
from consumer.errors import ConfigError, PermanentError, TransientError
from consumer.events.codec import EventRecord
from consumer.events.model import event_to_json
from retry_topics.classification import (
    Classification,
    ExceptionRules,
    classify_http_status,
    parse_retry_after_ms,
    qualified_name,
)
from retry_topics.clock import Clock, SystemClock
from retry_topics.redaction import cap_utf8, redact_message

__all__ = [
    "CallableDelivery", "DeliveryContext", "DeliveryHandler", "HttpDelivery", "build_handler",
    "load_callable", "user_agent",
]  # fmt: skip

MAX_WRAPPED_MESSAGE_BYTES = 512


def user_agent() -> str:
    """``clinic-events/<installed version>``, sent with every HTTP delivery."""
    try:
        return f"clinic-events/{version('clinic-events')}"
    except PackageNotFoundError:
        return "clinic-events/0+unknown"


class DeliveryContext(NamedTuple):
    """Where an event came from and which attempt this is; ``attempt`` is 1 on the main topic.

    Immutable: handlers run on several threads and may keep it (in a log record, a task); no
    call can change what another sees. A named tuple rather than a frozen dataclass: one is
    built for every handler call, and a frozen dataclass costs twice as much to build.
    """

    event_id: str
    event_type: str
    topic: str
    partition: int
    offset: int
    attempt: int
    traceparent: str | None
    tracestate: str | None = None  # vendors' trace data beside traceparent (W3C)


class DeliveryHandler(Protocol):
    """Delivers one event: returns on success, raises TransientError / PermanentError."""

    def deliver(self, event: EventRecord, context: DeliveryContext) -> None:
        """Deliver ``event``; must be safe to call from several threads at once."""

    def close(self) -> None:
        """Release connections; called once at shutdown."""


class HttpDelivery:
    """POSTs each event as JSON to one URL; classifies the outcome by the HTTP contract."""

    def __init__(
        self,
        url: str,
        timeout_ms: int,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        *,
        max_connections: int = 16,
    ) -> None:
        try:
            self._url = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ConfigError(f"delivery.url is not a valid URL: {exc}") from exc
        if self._url.scheme not in ("http", "https"):
            raise ConfigError(f"delivery.url must be an http:// or https:// URL, got {url!r}")
        self._timeout_ms = timeout_ms
        self._clock: Clock = clock or SystemClock()
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout_ms / 1000),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            headers={"User-Agent": user_agent()},
            follow_redirects=False,
        )

    def deliver(self, event: EventRecord, context: DeliveryContext) -> None:
        body = json.dumps(event_to_json(event), ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": context.event_id,
            "X-Clinic-Event-Type": context.event_type,
        }
        if context.traceparent:
            headers["traceparent"] = context.traceparent
            if context.tracestate:
                headers["tracestate"] = context.tracestate
        where = f"POST {self._url.path}"
        try:
            response = self._client.post(self._url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientError(f"{where} timed out after {self._timeout_ms} ms "
                                 f"({type(exc).__name__})", error_class="timeout") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"{where} failed: {type(exc).__name__}",
                                 error_class="connection") from exc
        status = response.status_code
        classification = classify_http_status(status)
        if classification is None:
            return
        message = f"{where} answered {status} {_standard_phrase(status)}".rstrip()
        if classification is Classification.PERMANENT:
            raise PermanentError(message, error_class=f"http.{status}")
        retry_after = response.headers.get("Retry-After")
        raise TransientError(
            message,
            error_class=f"http.{status}",
            retry_after_ms=(parse_retry_after_ms(retry_after, self._clock.now_ms())
                            if retry_after is not None else None),
        )

    def close(self) -> None:
        self._client.close()


class CallableDelivery:
    """Runs a Python callable; exceptions other than intent errors are classified by rules."""

    def __init__(
        self, target: Callable[[EventRecord, DeliveryContext], object], rules: ExceptionRules
    ) -> None:
        self._target = target
        self._rules = rules

    def deliver(self, event: EventRecord, context: DeliveryContext) -> None:
        try:
            self._target(event, context)
        except (TransientError, PermanentError):
            raise
        except (Exception, SystemExit) as exc:  # any handler failure is classified, never lost
            # SystemExit too: a handler (or a library it calls) exiting the process is a
            # handler bug, not an operator asking the consumer to stop (signals do that).
            # KeyboardInterrupt still propagates.
            error_class = qualified_name(type(exc))
            message = cap_utf8(f"{type(exc).__name__}: {redact_message(str(exc))}",
                               MAX_WRAPPED_MESSAGE_BYTES)
            if self._rules.classify_exception(exc) is Classification.PERMANENT:
                raise PermanentError(message, error_class=error_class) from exc
            raise TransientError(message, error_class=error_class) from exc

    def close(self) -> None:
        """Nothing to release; a callable owning resources should clean up at exit itself."""


def load_callable(spec: str) -> Callable[[EventRecord, DeliveryContext], object]:
    """Import ``package.module:function`` (the attribute may be dotted, ``mod:Class.method``)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"delivery.handler must look like 'package.module:function', "
                          f"got {spec!r}")
    try:
        target: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name) and (
                module_name == exc.name or module_name[len(exc.name)] == "."):
            raise ConfigError(f"delivery.handler {spec!r}: no module named {module_name!r}"
                              ) from exc
        raise ConfigError(f"delivery.handler {spec!r}: importing {module_name!r} failed: "
                          f"{exc}") from exc
    except Exception as exc:  # a handler module that fails to import is a config error
        raise ConfigError(f"delivery.handler {spec!r}: importing {module_name!r} failed: "
                          f"{type(exc).__name__}: {exc}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ConfigError(f"delivery.handler {spec!r}: {module_name!r} has no attribute "
                              f"{attribute!r}") from exc
    if not callable(target):
        raise ConfigError(f"delivery.handler {spec!r} is a {type(target).__name__}, "
                          "not a callable")
    return target


def build_handler(settings: Settings) -> DeliveryHandler:
    """The handler the settings ask for: a Python callable if configured, else HTTP."""
    delivery = settings.delivery
    if delivery.handler:
        target = load_callable(delivery.handler)
        check_rule_classes(settings.classification)  # the handler's module may define them
        return CallableDelivery(target, settings.classification)
    if delivery.url:
        # The rules classify whatever escapes the delivery, so a misspelt one is refused here
        # too, not only beside a Python handler.
        check_rule_classes(settings.classification)
        return HttpDelivery(delivery.url, delivery.timeout_ms,
                            max_connections=delivery.concurrency)
    raise ConfigError("set delivery.url (HTTP delivery) or delivery.handler "
                      "('package.module:function')")


def _standard_phrase(status: int) -> str:
    """The IANA reason phrase of ``status`` (empty if unregistered), never the server's."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
