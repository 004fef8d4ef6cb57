"""Telling a broker that refuses us from a broker that cannot be reached.

A wrong SASL password or a CA that does not sign the broker's certificate fails every
connection: librdkafka retries them and its blocking calls (list topics, offsets) give up
only at their timeout, with the same "Broker transport failure" as an unreachable broker.
The cause is in the client's log lines, one per failed connection ("SASL authentication
error: ...", "SSL handshake failed: ..."), handed over when the client is polled.

So every client clinic-events builds logs through an :class:`AccessWatch`, which passes each
line on and remembers the first that says Kafka refused us (:func:`refusal`); and the first
request of a command is made in slices (:func:`first_answer`): between slices the client is
polled, and a refusal seen by then ends the request with :class:`KafkaAccessRefused` naming
the cause, within a second or two, instead of 30 s later as "cannot reach Kafka".
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from confluent_kafka import KafkaError, KafkaException

from consumer.errors import KafkaUnreachable

#: The longest one slice of a first request waits before the watch is looked at.
SLICE_S = 0.5
#: Errors of a request that got no answer in its slice: asked again until the deadline.
_NO_ANSWER = frozenset({KafkaError._TRANSPORT, KafkaError._TIMED_OUT})

_AUTH = re.compile(r"SASL authentication error: (?P<reason>.*)|"
                   r"(?P<other>Unsupported SASL mechanism.*|SASL handshake failed.*|"
                   r"SASL \S+ mechanism handshake failed.*)")
#: A listener that offers no SASL mechanism at all: a plaintext (or SSL) one.
_NO_SASL = re.compile(r"supported mechanisms:\s*(?:\(after |$)")
_TLS = re.compile(r"SSL handshake failed: (?P<reason>.*)|(?P<other>certificate verify failed.*)")
#: The broker a line is about: "host:port/<id>: " after a space or a listener's "scheme://"
#: (not the "[thrd:host:port/<id>]" that names the thread).
_BROKER = re.compile(r"(?:^|\s|//)(?P<host>[^\s/[]+:\d+)/\S+: ")
_SUFFIX = re.compile(r"\s*\(after \d+ms in state [A-Z_]+(?:, \d+ identical error\(s\) "
                     r"suppressed)?\)\s*$")
_LIBSSL_CODE = re.compile(r"error:[0-9A-F]+:[^:]*:[^:]*:")
#: A connection the broker closed as soon as it was up, before answering anything.
_CLOSED_WHEN_UP = re.compile(r"connection closed by peer.*\(after \d+ms in state UP")
#: How many such closes make a pattern, not a broker that happened to restart.
CLOSES_FOR_A_HINT = 3

T = TypeVar("T")


class KafkaAccessRefused(KafkaUnreachable):
    """Kafka answered but refused our credentials, or the TLS handshake with it failed.

    A ``KafkaUnreachable`` (nothing can be done with Kafka either way), with its own exit
    code (5): no retry helps, the ``[kafka.client]`` security properties need fixing.
    """


class _Logger(Protocol):
    def log(self, level: int, msg: str, *args: object) -> None: ...


def refusal(line: str, config: Mapping[str, Any]) -> str | None:
    """What a client log or error line says Kafka refused, in plain words; else None.

    ``config`` is the client's: it names the user and the mechanism of a failed login.
    """
    broker = _BROKER.search(line)
    where = f" at {broker.group('host')}" if broker else ""
    auth = _AUTH.search(line)
    if auth:
        user = config.get("sasl.username")
        mechanism = config.get("sasl.mechanisms", config.get("sasl.mechanism", "GSSAPI"))
        who = f"user `{user}` ({mechanism})" if user else f"SASL mechanism {mechanism}"
        if _NO_SASL.search(line):
            return (f"the listener{where} offers no SASL login, so {who} cannot log in: a "
                    "PLAINTEXT or SSL listener? (check bootstrap_servers and "
                    "security.protocol in [kafka.client])")
        reason = _SUFFIX.sub("", auth.group("reason") or auth.group("other"))
        return (f"authentication failed for {who}{where}: {reason} (check sasl.username, "
                "sasl.password and sasl.mechanisms in [kafka.client])")
    tls = _TLS.search(line)
    if tls:
        reason = _LIBSSL_CODE.sub("", _SUFFIX.sub("", tls.group("reason") or tls.group("other")))
        return (f"TLS handshake{where} failed: {reason.strip()} (check ssl.ca.location and "
                "the other ssl.* properties in [kafka.client])")
    return None


def closed_when_up_hint(line: str, config: Mapping[str, Any]) -> str | None:
    """What a broker closing our connections as soon as they are up suggests, if anything.

    A listener that wants SASL (or TLS) lets a client without it connect and ask for the
    API versions, then closes the connection; librdkafka only says "connection closed by
    peer", and the first request ends as "cannot reach Kafka". A SASL client would have got
    a failed login instead, so only clients without SASL get the hint.
    """
    protocol = str(config.get("security.protocol", "plaintext")).lower()
    if protocol.startswith("sasl") or not _CLOSED_WHEN_UP.search(line):
        return None
    broker = _BROKER.search(line)
    where = f" at {broker.group('host')}" if broker else ""
    needs = "SASL" if protocol == "ssl" else "SASL or TLS"
    return (f"the broker{where} closed every connection as soon as it was made: a listener "
            f"that needs {needs}? Check bootstrap_servers and security.protocol in "
            "[kafka.client]")


class AccessWatch:
    """A client's ``logger``: passes every line to ``inner`` and keeps the first refusal,
    and a hint once the broker has closed our connections as soon as they were up."""

    def __init__(self, inner: _Logger, config: Mapping[str, Any]) -> None:
        self._inner = inner
        self._config = {k: v for k, v in config.items()
                        if k.startswith("sasl.") or k == "security.protocol"}
        self.refused: str | None = None
        self.hint: str | None = None
        self._closes = 0

    def log(self, level: int, msg: str, *args: object) -> None:
        """What confluent-kafka calls for every librdkafka log line."""
        if self.refused is None:
            line = msg % args if args else msg
            self.refused = refusal(line, self._config)
            hint = closed_when_up_hint(line, self._config)
            if hint is not None:
                self._closes += 1
                if self._closes >= CLOSES_FOR_A_HINT:
                    self.hint = hint
        self._inner.log(level, msg, *args)

    def close(self) -> None:
        """Close ``inner`` if it has a ``close`` (a ``ClientLog`` reports its repeats)."""
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


def first_answer(call: Callable[[float], T], timeout_s: float, watch: AccessWatch,
                 serve: Callable[[], object] | None = None) -> T:
    """``call(timeout)`` in slices of :data:`SLICE_S` until it answers or ``timeout_s`` passed.

    Between slices ``serve`` polls the client (unless a thread does), so its log lines reach
    ``watch``; once one says Kafka refused us, :class:`KafkaAccessRefused` is raised. An
    error other than "no answer in time" is raised as it is; so is the last slice's, with
    the watch's hint added to its reason when it has one.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            return call(max(0.001, min(SLICE_S, remaining)))
        except KafkaException as exc:
            if serve is not None:
                serve()
            if watch.refused is not None:
                raise KafkaAccessRefused(f"Kafka refused us: {watch.refused}") from exc
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code not in _NO_ANSWER:
                raise
            if remaining <= SLICE_S:
                if watch.hint is None or not isinstance(error, KafkaError):
                    raise
                raise KafkaException(KafkaError(code, f"{error.str()} ({watch.hint})")) from exc
