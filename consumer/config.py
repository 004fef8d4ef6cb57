"""Settings: parsed once from a TOML file and the environment, validated, then frozen.

Precedence, highest first: ``CLINIC_EVENTS_<SECTION>_<KEY>`` environment variables
(``CLINIC_EVENTS_KAFKA_BOOTSTRAP_SERVERS``, ``CLINIC_EVENTS_RETRY_DELAYS="5s,30s"``), then
``KAFKA_BOOTSTRAP_SERVERS``, then the file, then the defaults below. The file is the one given
with ``--config``, else ``$CLINIC_EVENTS_CONFIG``, else ``clinic-events.toml`` in the current
folder if present; with none, defaults and the environment apply.

Every problem raises ``ConfigError`` naming the key and the valid values; the CLI turns it
into one line on stderr and exit code 2. The core sees only the frozen ``Settings``. Extra
librdkafka properties (``[kafka.client]``) pass through unchanged; values of keys that look
secret are masked whenever settings are shown.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumer.errors import ConfigError
from retry_topics.classification import ExceptionRules
from retry_topics.durations import parse_duration_ms
from retry_topics.errors import RetryTopicsError
from retry_topics.policy import BACKOFF_NAMES, InProcessRetry, RetryPolicy

ENV_PREFIX = "CLINIC_EVENTS_"
KAFKA_CLIENT_LOGGER = "clinic_events.kafka"  # librdkafka's log lines
#: librdkafka properties of one client kind (scope C or P in librdkafka's CONFIGURATION.md).
#: ``[kafka.client]`` applies to every client; each kind gets only the properties it reads,
#: since librdkafka logs a warning for every property of the other kind, at every start.
CONSUMER_ONLY = frozenset({
    "group.id", "group.instance.id", "partition.assignment.strategy", "session.timeout.ms",
    "heartbeat.interval.ms", "group.protocol.type", "group.protocol", "group.remote.assignor",
    "coordinator.query.interval.ms", "max.poll.interval.ms", "enable.auto.commit",
    "auto.commit.interval.ms", "auto.commit.enable", "enable.auto.offset.store",
    "queued.min.messages", "queued.max.messages.kbytes", "fetch.wait.max.ms",
    "fetch.queue.backoff.ms", "fetch.message.max.bytes", "max.partition.fetch.bytes",
    "fetch.max.bytes", "fetch.min.bytes", "fetch.error.backoff.ms", "offset.store.method",
    "offset.store.path", "offset.store.sync.interval.ms", "isolation.level",
    "enable.partition.eof", "check.crcs", "auto.offset.reset", "consume.callback.max.messages",
})
PRODUCER_ONLY = frozenset({
    "transactional.id", "transaction.timeout.ms", "enable.idempotence",
    "enable.gapless.guarantee", "queue.buffering.max.messages", "queue.buffering.max.kbytes",
    "queue.buffering.max.ms", "linger.ms", "message.send.max.retries", "retries",
    "queue.buffering.backpressure.threshold", "compression.codec", "compression.type",
    "compression.level", "batch.num.messages", "batch.size", "delivery.report.only.error",
    "sticky.partitioning.linger.ms", "request.required.acks", "acks", "request.timeout.ms",
    "message.timeout.ms", "delivery.timeout.ms", "queuing.strategy", "produce.offset.report",
    "partitioner",
})
#: An admin client's reconnect backoff: its first attempt is immediate, so a reachable
#: broker is not slowed; an unreachable one is logged about once a second, not ~20 times.
ADMIN_RECONNECT = {"reconnect.backoff.ms": 1000, "reconnect.backoff.max.ms": 10000}
DEFAULT_FILE = "clinic-events.toml"
SECRET_MARKERS = ("password", "secret", "token", "key")

#: section -> key -> default. The single list of valid keys; error messages quote it.
DEFAULTS: dict[str, dict[str, Any]] = {
    "kafka": {"bootstrap_servers": "127.0.0.1:9092", "group_id": "clinic-events", "client": {}},
    "topics": {"main": "clinic.events", "partitions": 6, "replication_factor": 1},
    "retry": {
        "delays": ["5s", "30s", "2m", "10m"],
        "delays_from": None,
        "in_process_attempts": 3,
        "in_process_backoff": "200ms",
        "in_process_max_backoff": "5s",
        "backoff": "exponential_jitter",
    },
    "dedup": {"store": "sqlite:///.clinic-events/dedup.sqlite3", "ttl": "7d"},
    "delivery": {"url": "http://127.0.0.1:8080/events", "handler": None, "timeout": "10s",
                 "concurrency": 16},
    "classification": {"transient": [], "permanent": [], "default": "transient"},
}


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSettings:
    bootstrap_servers: str
    group_id: str
    client: Mapping[str, str] = field(default_factory=dict)

    def masked_client(self) -> dict[str, str]:
        """``client`` with secret-looking values replaced, for display and logs."""
        return {k: ("****" if any(m in k.lower() for m in SECRET_MARKERS) else v)
                for k, v in self.client.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicSettings:
    main: str
    partitions: int
    replication_factor: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DedupSettings:
    store: str
    ttl_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverySettings:
    url: str | None
    handler: str | None
    timeout_ms: int
    concurrency: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the application needs, validated."""

    kafka: KafkaSettings
    topics: TopicSettings
    retry: RetryPolicy
    dedup: DedupSettings
    delivery: DeliverySettings
    classification: ExceptionRules
    source: str = "defaults"  # where the file came from, for messages

    def consumer_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka properties for a consumer, with the pass-through client settings.

        librdkafka's own log lines go to the ``clinic_events.kafka`` logger (confluent-kafka's
        ``logger`` property) rather than raw to stderr, so they are formatted like every
        other line (JSON when not on a terminal) and log shippers can parse them all. They
        are served by the client's ``poll``/``consume``, which consumers and producers call
        all the time.
        """
        return {"logger": logging.getLogger(KAFKA_CLIENT_LOGGER),
                **self._client_config(overrides, leave_out=PRODUCER_ONLY)}

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka properties for a producer (logging as ``consumer_config`` says)."""
        return {"logger": logging.getLogger(KAFKA_CLIENT_LOGGER),
                **self._client_config(overrides, leave_out=CONSUMER_ONLY)}

    def admin_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka properties for an admin client, whose log lines stay on stderr.

        An admin client's logs reach a ``logger`` only when it is polled, and its calls
        (list topics, offsets) block without polling: an unreachable broker would say
        nothing until the call times out. Pass-through properties of consumers or producers
        are left out: the admin client would warn about each. Its reconnect backoff is longer
        than librdkafka's (``ADMIN_RECONNECT``, which ``[kafka.client]`` may override): an
        unreachable broker otherwise fills the terminal with a connect failure every ~50 ms
        until the call gives up.
        """
        return {**ADMIN_RECONNECT,
                **self._client_config(overrides, leave_out=CONSUMER_ONLY | PRODUCER_ONLY)}

    def _client_config(self, overrides: Mapping[str, Any],
                       leave_out: frozenset[str]) -> dict[str, Any]:
        """Broker, the ``[kafka.client]`` pass-through (but ``leave_out``), then ``overrides``."""
        passed = {key: value for key, value in self.kafka.client.items()
                  if key not in leave_out}
        return {"bootstrap.servers": self.kafka.bootstrap_servers, **passed, **overrides}


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, merge and validate settings; raise ConfigError on any problem."""
    environ = os.environ if env is None else env
    raw, source = _read_file(path, environ)
    merged = _merge(raw, environ)
    return _build(merged, source)


def _read_file(path: str | Path | None, env: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    explicit = path if path is not None else env.get(f"{ENV_PREFIX}CONFIG")
    candidate = Path(explicit) if explicit else Path(DEFAULT_FILE)
    if not candidate.exists():
        if explicit:
            raise ConfigError(f"config file {candidate} does not exist")
        return {}, "defaults"
    try:
        with candidate.open("rb") as handle:
            return tomllib.load(handle), str(candidate)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{candidate} is not valid TOML: {exc}") from exc


def _merge(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {s: dict(keys) for s, keys in DEFAULTS.items()}
    for section, values in raw.items():
        if section not in DEFAULTS:
            raise ConfigError(
                f"unknown section [{section}]; valid sections: {', '.join(DEFAULTS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table")
        for key, value in values.items():
            _check_key(section, key)
            merged[section][key] = value
    file_retry = raw.get("retry", {})
    if "delays_from" in file_retry:
        if "delays" in file_retry:  # one would be silently ignored
            raise ConfigError("retry.delays and retry.delays_from are both set; set one: "
                              "delays lists the tier delays, delays_from generates them")
        merged["retry"]["delays"] = None
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        merged["kafka"]["bootstrap_servers"] = env["KAFKA_BOOTSTRAP_SERVERS"]
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        target = _env_target(name)
        if target is not None:
            section, key = target
            merged[section][key] = _env_value(section, key, value)
    return merged


def _env_target(name: str) -> tuple[str, str] | None:
    """The (section, key) a variable sets; None for other CLINIC_EVENTS_* variables.

    A variable naming a known section but an unknown key is a typo and is refused.
    """
    rest = name.removeprefix(ENV_PREFIX).lower()
    for section in DEFAULTS:
        if rest.startswith(section + "_"):
            key = rest.removeprefix(section + "_")
            _check_key(section, key, via=name)
            return section, key
    return None


def _env_value(section: str, key: str, value: str) -> Any:
    default = DEFAULTS[section][key]
    if isinstance(default, list):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(default, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        try:
            return int(value)
        except ValueError as exc:
            raise ConfigError(f"{section}.{key} must be an integer, got {value!r}") from exc
    return value


def _check_key(section: str, key: str, via: str | None = None) -> None:
    if key not in DEFAULTS[section]:
        where = via or f"[{section}] {key}"
        raise ConfigError(f"unknown key {where}; valid keys in [{section}]: "
                          f"{', '.join(DEFAULTS[section])}")


def _duration(section: str, key: str, value: Any) -> int:
    try:
        return parse_duration_ms(str(value))
    except RetryTopicsError as exc:
        raise ConfigError(f"{section}.{key}: {exc}") from exc


def _positive_duration(section: str, key: str, value: Any) -> int:
    """A duration of at least 1 ms: a delay of 0 would make a tier run its records at once."""
    ms = _duration(section, key, value)
    if ms < 1:
        raise ConfigError(f"{section}.{key} must be at least 1ms, got {value!r}")
    return ms


def _int(section: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{section}.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _str(section: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{section}.{key} must be a non-empty string, got {value!r}")
    return value.strip()


def _build(merged: dict[str, dict[str, Any]], source: str) -> Settings:
    kafka, topics, retry = merged["kafka"], merged["topics"], merged["retry"]
    client = kafka["client"]
    if not isinstance(client, dict):
        raise ConfigError("[kafka.client] must be a table of librdkafka properties")
    topic_settings = TopicSettings(
        main=_str("topics", "main", topics["main"]),
        partitions=_int("topics", "partitions", topics["partitions"], 1),
        replication_factor=_int("topics", "replication_factor", topics["replication_factor"], 1),
    )
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=_str("kafka", "bootstrap_servers", kafka["bootstrap_servers"]),
            group_id=_str("kafka", "group_id", kafka["group_id"]),
            client={str(k): str(v) for k, v in client.items()},
        ),
        topics=topic_settings,
        retry=_build_policy(topic_settings.main, retry),
        dedup=_build_dedup(merged["dedup"]),
        delivery=_build_delivery(merged["delivery"]),
        classification=_build_rules(merged["classification"]),
        source=source,
    )


def _build_policy(main: str, retry: dict[str, Any]) -> RetryPolicy:
    backoff = retry["backoff"]
    if backoff not in BACKOFF_NAMES:
        raise ConfigError(f"retry.backoff must be one of {', '.join(BACKOFF_NAMES)}, "
                          f"got {backoff!r}")
    in_process = InProcessRetry(
        attempts=_int("retry", "in_process_attempts", retry["in_process_attempts"], 1),
        first_wait_ms=_duration("retry", "in_process_backoff", retry["in_process_backoff"]),
        max_wait_ms=_duration("retry", "in_process_max_backoff", retry["in_process_max_backoff"]),
        backoff=backoff,
    )
    generated = retry["delays_from"]
    try:
        if retry["delays"] is None and generated is not None:
            if not isinstance(generated, dict) or set(generated) != {
                "initial", "multiplier", "max", "tiers"}:
                raise ConfigError("retry.delays_from must be a table with exactly initial, "
                                  "multiplier, max, tiers")
            initial_ms = _positive_duration("retry", "delays_from.initial", generated["initial"])
            max_ms = _positive_duration("retry", "delays_from.max", generated["max"])
            if max_ms < initial_ms:
                raise ConfigError(f"retry.delays_from.max ({generated['max']}) must be at "
                                  f"least delays_from.initial ({generated['initial']})")
            multiplier = generated["multiplier"]
            if isinstance(multiplier, bool) or not isinstance(multiplier, int | float) \
                    or not multiplier >= 1:
                raise ConfigError("retry.delays_from.multiplier must be a number >= 1, "
                                  f"got {multiplier!r}")
            return RetryPolicy.from_generated(
                main_topic=main, initial_ms=initial_ms, multiplier=multiplier, max_ms=max_ms,
                tiers=_int("retry", "delays_from.tiers", generated["tiers"], 1),
                in_process=in_process,
            )
        delays = retry["delays"]
        if not isinstance(delays, list) or not delays:
            raise ConfigError('retry.delays must be a non-empty list of durations, e.g. '
                              '["5s", "30s", "2m", "10m"]')
        return RetryPolicy(
            main_topic=main,
            delays_ms=tuple(_positive_duration("retry", "delays", d) for d in delays),
            in_process=in_process,
        )
    except RetryTopicsError as exc:
        raise ConfigError(f"[retry]: {exc}") from exc


def _build_dedup(dedup: dict[str, Any]) -> DedupSettings:
    store = _str("dedup", "store", dedup["store"])
    if not store.startswith(("sqlite://", "redis://", "rediss://", "memory://")):
        raise ConfigError(f"dedup.store must start with sqlite://, redis:// or memory://, "
                          f"got {store!r}")
    return DedupSettings(store=store, ttl_ms=_duration("dedup", "ttl", dedup["ttl"]))


def _build_delivery(delivery: dict[str, Any]) -> DeliverySettings:
    handler = delivery["handler"]
    url = None if handler else delivery["url"]
    if handler is not None and (not isinstance(handler, str) or ":" not in handler):
        raise ConfigError(f"delivery.handler must look like 'package.module:function', "
                          f"got {handler!r}")
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise ConfigError(f"delivery.url must be an http:// or https:// URL, got {url!r}")
    return DeliverySettings(
        url=url, handler=handler,
        timeout_ms=_duration("delivery", "timeout", delivery["timeout"]),
        concurrency=_int("delivery", "concurrency", delivery["concurrency"], 1),
    )


def _build_rules(rules: dict[str, Any]) -> ExceptionRules:
    try:
        return ExceptionRules(
            transient=tuple(rules["transient"]), permanent=tuple(rules["permanent"]),
            default=rules["default"],
        )
    except (RetryTopicsError, TypeError) as exc:
        raise ConfigError(f"[classification]: {exc}") from exc
