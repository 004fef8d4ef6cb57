"""The edge to confluent-kafka: client construction, publishing, and record conversion.

The module of the consumer that builds Kafka clients, through ``kafka_client``:
librdkafka checks every property when a client is built, and a property it refuses (an
unknown name, a bad value) becomes a ``ConfigError`` naming ``[kafka.client]``, so a command
stops with one line and exit code 2 rather than a traceback. Consumers never store offsets
automatically (``enable.auto.offset.store=False``): the runner stores an offset only after
the record's fate is durable, and librdkafka's auto-commit then commits stored offsets.
``fetch.wait.max.ms`` is lowered so a retry partition resumed at its due time is fetched
promptly instead of up to 500 ms later.

Consumers and producers built here log through a ``consumer.kafka.access.AccessWatch`` and
make ``list_topics`` in slices, so a command whose first request is refused (a wrong
password, an untrusted certificate) says why within a second or two
(``KafkaAccessRefused``) instead of "cannot reach Kafka" after its timeout. Unless a
caller brings its own ``logger``, their lines go through a
``consumer.kafka.client_log.ConnectionLog``: one line when the broker becomes unreachable,
one when it is back.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from consumer.config.settings import KAFKA_CLIENT_LOGGER, SECRET_MARKERS, Settings
from consumer.errors import ConfigError
from consumer.kafka.access import AccessWatch, first_answer
from consumer.kafka.client_log import ConnectionLog
from consumer.pipeline.outbox import OnAck
from consumer.pipeline.records import InboundRecord
from retry_topics.headers import Header

#: Where an operator finds the valid librdkafka properties and values.
LIBRDKAFKA_PROPERTIES = "https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md"
Client = TypeVar("Client")
_CLIENT_LOG = logging.getLogger(KAFKA_CLIENT_LOGGER)


def kafka_client(factory: Callable[[dict[str, Any]], Client], config: dict[str, Any],
                 kind: str) -> Client:
    """``factory(config)``; a property librdkafka refuses raises ``ConfigError``.

    Building a client does no network I/O, so whatever its constructor raises is about the
    settings: ``KafkaException`` (``_INVALID_ARG``: unknown property, bad value, unreadable
    certificate) or ``ValueError`` / ``TypeError`` (a value confluent-kafka cannot take).
    ``kind`` names the client in the message (``consumer``, ``producer``, ``admin client``).
    """
    try:
        return factory(config)
    except (KafkaException, ValueError, TypeError) as exc:
        raise client_settings_error(exc, kind) from exc


def client_settings_error(error: Exception, kind: str) -> ConfigError:
    """The ``ConfigError`` for librdkafka refusing the settings of a ``kind`` client."""
    first = error.args[0] if error.args else None
    reason = first.str() if isinstance(first, KafkaError) else str(error)
    return ConfigError(f"[kafka.client]: librdkafka refused the {kind} settings: {reason} "
                       f"(valid properties: {LIBRDKAFKA_PROPERTIES})")


def kafka_reason(exc: KafkaException) -> str:
    """A client exception's message for people (``str()`` is ``KafkaError{code=...}``)."""
    error = exc.args[0] if exc.args else None
    return str(error.str()) if isinstance(error, KafkaError) else str(exc)


def build_admin(settings: Settings, **overrides: Any) -> AdminClient:
    """An admin client with the settings' admin properties (see ``Settings.admin_config``)."""
    return kafka_client(AdminClient, settings.admin_config(**overrides), "admin client")


class WatchedConsumer(Consumer):
    """A ``Consumer`` whose ``list_topics`` names a refused login or TLS handshake early.

    Between the slices of a ``list_topics`` it is polled only while it has no partitions
    assigned: a poll could otherwise hand over a record nobody would process.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.access = AccessWatch(config.get("logger") or _CLIENT_LOG, config)
        super().__init__({**config, "logger": self.access})

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        if timeout < 0:
            return super().list_topics(topic, timeout)
        return first_answer(lambda slice_s: Consumer.list_topics(self, topic, slice_s),
                            timeout, self.access, self._serve)

    def _serve(self) -> None:
        if not self.assignment():
            self.poll(0)


class WatchedProducer(Producer):
    """A ``Producer`` whose ``list_topics`` names a refused login or TLS handshake early."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.access = AccessWatch(config.get("logger") or _CLIENT_LOG, config)
        super().__init__({**config, "logger": self.access})

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        if timeout < 0:
            return super().list_topics(topic, timeout)
        return first_answer(lambda slice_s: Producer.list_topics(self, topic, slice_s),
                            timeout, self.access, lambda: self.poll(0))


def producer_from(config: dict[str, Any]) -> Producer:
    """A producer of exactly ``config`` (for ``EventPublisher``'s ``producer_factory``)."""
    return kafka_client(WatchedProducer, config, "producer")


#: What ``build_consumer`` chooses where ``[kafka.client]`` says nothing.
CONSUMER_DEFAULTS = {"auto.commit.interval.ms": 1000, "auto.offset.reset": "earliest",
                     "fetch.wait.max.ms": 25}
#: What ``build_producer`` chooses where ``[kafka.client]`` says nothing.
PRODUCER_DEFAULTS = {"linger.ms": 5, "message.timeout.ms": 60_000}


def build_consumer(settings: Settings, **required: Any) -> WatchedConsumer:
    """The group consumer of ``run``: manual offset storage, prompt fetches.

    ``required`` (a caller's own needs) wins over ``[kafka.client]``, which wins over
    ``CONSUMER_DEFAULTS``. Without a ``logger`` in ``required``, it logs through a
    ``ConnectionLog``.
    """
    return kafka_client(WatchedConsumer, settings.consumer_config(CONSUMER_DEFAULTS, **{
        "group.id": settings.kafka.group_id,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        **_connection_log("consumer", settings, required),
        **required,
    }), "consumer")


def build_producer(settings: Settings, *, connection_log: ConnectionLog | None = None,
                   **required: Any) -> WatchedProducer:
    """An idempotent producer: acknowledged by all in-sync replicas, no duplicates on retry.

    Layered (and logging) as ``build_consumer`` says, over ``PRODUCER_DEFAULTS``; a
    ``connection_log`` is shared with the producers it replaces and those replacing it.
    """
    return kafka_client(WatchedProducer, settings.producer_config(PRODUCER_DEFAULTS, **{
        "enable.idempotence": True,
        "acks": "all",
        **_connection_log("producer", settings, required, connection_log),
        **required,
    }), "producer")


def _connection_log(kind: str, settings: Settings, required: dict[str, Any],
                    log: ConnectionLog | None = None) -> dict[str, Any]:
    """A ``ConnectionLog``'s properties (``log``, else a new one), unless the caller brings
    its own ``logger``; those ``[kafka.client]`` sets stay its own (and librdkafka judges
    them)."""
    if "logger" in required:
        return {}
    log = log or ConnectionLog(kind)
    wanted = {"logger": log, "error_cb": log.on_error, "stats_cb": log.on_stats,
              "statistics.interval.ms": ConnectionLog.STATS_INTERVAL_MS}
    return {name: value for name, value in wanted.items() if name not in settings.kafka.client}


def check_client_settings(settings: Settings) -> None:
    """Build and drop a consumer, a producer and an admin client with no broker to reach.

    Why: each kind of client gets only the ``[kafka.client]`` properties it reads, and a
    command builds only the kinds it needs, so a property librdkafka refuses would stop one
    command and not another, or stop ``run`` only after it created topics. Checked up front,
    it stops every command alike (``ConfigError``, exit 2) before anything is done. Without
    ``bootstrap.servers`` a client connects nowhere; its log lines are dropped.
    """
    for factory, config, kind in (
            (Consumer, settings.consumer_config(CONSUMER_DEFAULTS, **{"group.id": "check"}),
             "consumer"),
            (Producer, settings.producer_config(PRODUCER_DEFAULTS), "producer"),
            (AdminClient, settings.admin_config(), "admin client")):
        config.pop("bootstrap.servers", None)
        try:
            _build_and_drop(factory, config, kind)
        except ConfigError as refused:
            raise _naming_the_property(refused, factory, config, settings, kind) from None


def _build_and_drop(factory: Callable[[dict[str, Any]], Any], config: dict[str, Any],
                    kind: str) -> None:
    client = kafka_client(factory, {**config, "logger": _DROPPED}, kind)
    if isinstance(client, Consumer):
        client.close()


def _naming_the_property(refused: ConfigError, factory: Callable[[dict[str, Any]], Any],
                         config: dict[str, Any], settings: Settings, kind: str) -> ConfigError:
    """``refused``, naming the ``[kafka.client]`` property at fault when one alone is.

    librdkafka names a property by its own canonical name, which may be an alias of the one
    the operator set (``linger.ms`` is reported as ``queue.buffering.max.ms``), and often
    names none (``Unsupported hash function: SCRAM-SHA-999``): the client is built again
    without each property in turn, and the one whose absence lets it build is named as
    written. A property that the message names, or whose value it quotes, is named alone;
    else ``security.protocol`` is tried last: without it every ``sasl.*`` and ``ssl.*``
    property goes unchecked, so its absence "fixes" whatever one of them got wrong. A value
    is shown masked when the name looks secret (:func:`looks_secret`), misspelt or not.
    """
    reason = str(refused).removeprefix("[kafka.client]: ")
    names = [name for name in settings.kafka.client if name in config]
    quoted = [name for name in names
              if name in reason or (len(str(config[name])) >= 3 and str(config[name]) in reason)]
    if len(quoted) == 1:
        return _named(quoted[0], config[quoted[0]], reason)
    gate = [name for name in names if name == "security.protocol"]
    for name in [*(n for n in names if n not in gate), *gate]:
        try:
            _build_and_drop(factory, {k: v for k, v in config.items() if k != name}, kind)
        except ConfigError:
            continue
        return _named(name, config[name], reason)
    return refused


def _named(name: str, value: Any, reason: str) -> ConfigError:
    """The ``ConfigError`` naming ``name = value``, the value masked if it looks secret."""
    if looks_secret(name):
        reason, value = reason.replace(str(value), "****"), "****"
    return ConfigError(f"[kafka.client] {name} = {value!r}: {reason}")


#: Words a secret property's name holds (beside ``SECRET_MARKERS``), for misspelt names.
_SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token", "key", "credentials", "jaas")


def looks_secret(name: str) -> bool:
    """Whether a property's value must be masked: its name holds a secret marker, or a
    part of it is a near miss of one (``sasl.pasword``, ``ssl.key.pasword``, ``sasl.secert``).

    Why near misses: a misspelt name is exactly the one librdkafka refuses, and the message
    that names it must not print the password it holds.
    """
    lowered = name.lower()
    if any(marker in lowered for marker in SECRET_MARKERS):
        return True
    return any(difflib.get_close_matches(part, _SECRET_WORDS, n=1, cutoff=0.75)
               for part in re.split(r"[._-]", lowered) if len(part) >= 3)


_DROPPED = logging.getLogger("clinic_events.kafka.settings_check")
_DROPPED.addHandler(logging.NullHandler())
_DROPPED.propagate = False


class KafkaPublisher:
    """``Publisher`` and the run loop's ``ProducerPort`` over a confluent-kafka Producer.

    Acks arrive through ``serve`` (``producer.poll``) on the run loop's thread.
    """

    def __init__(self, producer: Producer) -> None:
        self._producer = producer

    def serve(self, timeout_s: float) -> None:
        self._producer.poll(timeout_s)

    def flush(self, timeout_s: float) -> None:
        self._producer.flush(timeout_s)

    def close(self) -> None:
        close = getattr(self._producer, "close", None)  # confluent-kafka >= 2.13
        if close is not None:
            close()

    def publish(self, topic: str, key: bytes | None, value: bytes | None,
                headers: list[tuple[str, bytes]], on_ack: OnAck) -> None:
        def delivered(error: KafkaError | None, _message: Message) -> None:
            on_ack(None if error is None else str(error))

        wire: list[tuple[str, str | bytes | None]] = list(headers)

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=wire,
                                       on_delivery=delivered)
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let acks drain, then retry


def message_headers(message: Message) -> tuple[Header, ...]:
    """A message's headers as (name, bytes or None) pairs, whatever form the client gave."""
    raw = message.headers()
    return _header_pairs(raw) if raw else ()


def _header_pairs(raw: Any) -> tuple[Header, ...]:
    """``(name, bytes or None)`` pairs from a client's list, or a dict / ``str`` values.

    A consumed message's headers are a list of such pairs already (librdkafka values are
    bytes): copied as they are, which is a third of the cost of rebuilding every pair.
    """
    if type(raw) is list:
        pairs = tuple(raw)
        for _, value in pairs:
            if type(value) is str:
                break
        else:
            return pairs
    items = raw.items() if isinstance(raw, dict) else raw
    return tuple(
        (name, value.encode("utf-8") if isinstance(value, str) else value)
        for name, value in items
    )


def to_inbound(message: Message, topic: str, partition: int) -> InboundRecord:
    """Detach a consumed message from confluent-kafka; its value and headers are decoded later.

    ``topic`` and ``partition`` are the message's own, which the caller has already read.
    Runs once per consumed record, so it is written for speed: the record is built
    positionally, and its headers are decoded only when something reads them (see
    ``consumer.pipeline.records``).
    """
    raw = message.headers()
    timestamp_type, timestamp = message.timestamp()
    return InboundRecord(
        topic, partition, message.offset() or 0,
        timestamp if timestamp_type and timestamp >= 0 else None,
        message.key(), message.value(), _header_pairs(raw) if raw else ())
