"""Settings: parsed once from a TOML file and the environment, validated, then frozen.

Precedence, highest first: ``CLINIC_EVENTS_<SECTION>_<KEY>`` environment variables
(``CLINIC_EVENTS_KAFKA_BOOTSTRAP_SERVERS``, ``CLINIC_EVENTS_RETRY_DELAYS="5s,30s"``), then
``KAFKA_BOOTSTRAP_SERVERS``, then the file, then the defaults below. The file is the one given
with ``--config``, else ``$CLINIC_EVENTS_CONFIG``, else ``clinic-events.toml`` in the current
folder if present; with none, defaults and the environment apply.

Variables: lists are comma-separated; ``CLINIC_EVENTS_RETRY_DELAYS_FROM`` is an inline TOML
table; ``CLINIC_EVENTS_KAFKA_CLIENT_<PROPERTY>`` sets one librdkafka property (the rest of
the name lowercased, ``_`` read as ``.``: ``..._SECURITY_PROTOCOL`` is ``security.protocol``)
and ``CLINIC_EVENTS_KAFKA_CLIENT`` several, as an inline table; both merge into the file's
``[kafka.client]`` property by property. Any other ``CLINIC_EVENTS_*`` variable must name a
setting, or be one of ``OTHER_VARIABLES``: a misspelt one is refused, not ignored.

Two pairs of keys are alternatives (``ALTERNATIVES``): retry ``delays`` / ``delays_from`` and
delivery ``url`` / ``handler``. One source (the file, or the environment) setting both is
refused, since one would be ignored; a key set in the environment replaces the file's other
one (``CLINIC_EVENTS_RETRY_DELAYS_FROM`` means generated tiers even if the file lists delays).
With neither url nor handler set, HTTP delivery to ``DEFAULT_DELIVERY_URL`` applies.

Every problem raises ``ConfigError`` naming the key and the valid values; the CLI turns it
into one line on stderr and exit code 2. The core sees only the frozen ``Settings``. Extra
librdkafka properties (``[kafka.client]``) pass through unchanged (librdkafka itself judges
them when a client is built, see ``consumer.kafka.clients``); ``run`` shows them at start-up
through ``KafkaSettings.masked_client``, the values of secret-looking keys masked.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from consumer.config.dedup_store import store_kind
from consumer.errors import ConfigError
from retry_topics.classification import ExceptionRules
from retry_topics.durations import parse_duration_ms
from retry_topics.errors import RetryTopicsError, TopicNameError
from retry_topics.limits import SYSTEMIC_ERRORS, BreakerPolicy, FloodGuardPolicy
from retry_topics.naming import validate_topic_name
from retry_topics.ordering import AFTER_DEAD_LETTER, MODES, OrderingPolicy
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
#: ``CLINIC_EVENTS_*`` variables that are not settings (read elsewhere); any other one must
#: name a setting, so a misspelt variable is refused instead of silently ignored.
OTHER_VARIABLES = ("CLINIC_EVENTS_CONFIG", "CLINIC_EVENTS_STATE_DIR", "CLINIC_EVENTS_CACHE_DIR")
CLIENT_VARIABLE = "kafka_client"  # CLINIC_EVENTS_KAFKA_CLIENT[_<PROPERTY>], lowercased
DELAYS_FROM_EXAMPLE = '{ initial = "5s", multiplier = 4, max = "10m", tiers = 4 }'
DEFAULT_DELIVERY_URL = "http://127.0.0.1:8080/events"
#: (section, key, key, why): one source sets at most one of the two keys; a key set in the
#: environment replaces the file's other one.
ALTERNATIVES = (
    ("retry", "delays", "delays_from",
     "delays lists the tier delays, delays_from generates them"),
    ("delivery", "url", "handler",
     "url delivers over HTTP, handler calls a Python function instead"),
)
#: librdkafka properties clinic-events sets itself, because its guarantees rest on them:
#: refused in ``[kafka.client]``, with the reason. (Other properties the code chooses, such as
#: ``linger.ms``, ``fetch.wait.max.ms`` or ``auto.offset.reset``, are defaults that
#: ``[kafka.client]`` may change.)
MANAGED_PROPERTIES = {
    "bootstrap.servers": "set [kafka] bootstrap_servers instead",
    "group.id": "set [kafka] group_id instead",
    "enable.auto.offset.store": "an offset is stored only once its record's fate is durable",
    "enable.auto.commit": "each client commits as its guarantees need (run: inside its "
                          "transactions, or stored offsets every second; dlq replay: inside "
                          "its transactions)",
    "enable.partition.eof": "each client sets it as its reading needs",
    "enable.idempotence": "republished and replayed records must not be duplicated",
    "acks": "a republished record counts only once every in-sync replica has it",
    "transactional.id": "run and dlq replay choose their own, for exactly-once hops and "
                        "replays",
    "isolation.level": "replays rely on aborted copies staying unread (read_committed)",
}
#: A ``[kafka.client]`` property whose name contains one of these is shown as ``****``.
SECRET_MARKERS = ("password", "secret", "token", "key", "oauthbearer.config")

#: section -> key -> default. The single list of valid keys; error messages quote it.
DEFAULTS: dict[str, dict[str, Any]] = {
    "kafka": {"bootstrap_servers": "127.0.0.1:9092", "group_id": "clinic-events",
              "transactional_hops": True, "client": {}},
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
    "delivery": {"url": None, "handler": None, "timeout": "10s", "concurrency": 16},
    "classification": {"transient": [], "permanent": [], "default": "transient"},
    "metrics": {"prometheus_port": None, "prometheus_host": "127.0.0.1", "lag_interval": "15s"},
    "breaker": {
        "enabled": True,
        "window_calls": 20,
        "min_failures": 5,
        "min_keys": 3,
        "failure_ratio": 0.8,
        "first_probe": "1s",
        "max_probe": "8s",
        "systemic_errors": list(SYSTEMIC_ERRORS),
        "error_after": "15m",
    },
    "dead_letter": {"max_consecutive": 20, "max_ratio": 0.5, "window": 100},
    "ordering": {"mode": "per_key", "after_dead_letter": "hold"},
    "serve": {
        "host": "127.0.0.1",
        "port": 8088,
        "public_url": None,
        "trace_url": None,
        "users": [],
        "session_secret": None,
        "session_ttl": "8h",
        "downstream_name": "EHR",
    },
    "notify": {"webhook_url": None, "min_interval": "1m", "timeout": "5s"},
}


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSettings:
    bootstrap_servers: str
    group_id: str
    transactional_hops: bool = True
    client: Mapping[str, str] = field(default_factory=dict)

    def masked_client(self) -> dict[str, str]:
        """``client`` with secret-looking values replaced: what ``run`` shows at start-up."""
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
class MetricsSettings:
    """``[metrics]``: the Prometheus endpoint of ``run`` (off while ``prometheus_port`` is
    None) and how often ``run`` samples lag and the DLQ for its gauges."""

    prometheus_port: int | None = None
    prometheus_host: str = "127.0.0.1"
    lag_interval_ms: int = 15_000


SERVE_ROLES = ("viewer", "operator")
TRACE_ID_PLACEHOLDER = "{trace_id}"
MIN_SESSION_SECRET = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeUser:
    """One person who may sign in to the review page; the password only as an argon2 hash."""

    name: str
    password_hash: str = field(repr=False)
    role: str  # one of SERVE_ROLES: a viewer reads, an operator also replays, discards, reveals


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeSettings:
    """``[serve]``: the review page (``clinic-events serve``).

    ``public_url`` is the address people reach it at (links in notifications, secure
    cookies when it is https); ``trace_url`` a trace viewer's address with ``{trace_id}``;
    ``session_secret`` signs session cookies (None: a random one per start, so a restart
    signs everyone out).
    """

    host: str = "127.0.0.1"
    port: int = 8088
    public_url: str | None = None
    trace_url: str | None = None
    users: tuple[ServeUser, ...] = ()
    session_secret: str | None = field(default=None, repr=False)
    session_ttl_ms: int = 8 * 3_600_000
    downstream_name: str = "EHR"


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifySettings:
    """``[notify]``: where ``run`` posts its digest of dead letters and condition changes
    (off while ``webhook_url`` is None; the URL is a secret, kept out of ``repr``), at most
    one message per ``min_interval``."""

    webhook_url: str | None = field(default=None, repr=False)
    min_interval_ms: int = 60_000
    timeout_ms: int = 5_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the application needs, validated."""

    kafka: KafkaSettings
    topics: TopicSettings
    retry: RetryPolicy
    dedup: DedupSettings
    delivery: DeliverySettings
    classification: ExceptionRules
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    dead_letter: FloodGuardPolicy = field(default_factory=FloodGuardPolicy)
    ordering: OrderingPolicy = field(default_factory=OrderingPolicy)
    serve: ServeSettings = field(default_factory=ServeSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    source: str = "defaults"  # where the file came from, for messages

    def consumer_config(self, defaults: Mapping[str, Any] | None = None, /,
                        **required: Any) -> dict[str, Any]:
        """librdkafka properties for a consumer: ``defaults``, then the pass-through client
        settings (``[kafka.client]`` may change a default), then ``required``.

        librdkafka's own log lines go to the ``clinic_events.kafka`` logger (confluent-kafka's
        ``logger`` property) rather than raw to stderr, so they are formatted like every
        other line (JSON when not on a terminal) and log shippers can parse them all. They
        are served by the client's ``poll``/``consume``, which consumers and producers call
        all the time.
        """
        return {"logger": logging.getLogger(KAFKA_CLIENT_LOGGER),
                **self._client_config(defaults, required, leave_out=PRODUCER_ONLY)}

    def producer_config(self, defaults: Mapping[str, Any] | None = None, /,
                        **required: Any) -> dict[str, Any]:
        """librdkafka properties for a producer (layered and logging as ``consumer_config``)."""
        return {"logger": logging.getLogger(KAFKA_CLIENT_LOGGER),
                **self._client_config(defaults, required, leave_out=CONSUMER_ONLY)}

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
        return self._client_config(ADMIN_RECONNECT, overrides,
                                   leave_out=CONSUMER_ONLY | PRODUCER_ONLY)

    def _client_config(self, defaults: Mapping[str, Any] | None, required: Mapping[str, Any],
                       leave_out: frozenset[str]) -> dict[str, Any]:
        """Broker, ``defaults``, the ``[kafka.client]`` pass-through (but ``leave_out``), then
        ``required`` (what a client's guarantees rest on; ``MANAGED_PROPERTIES`` are refused in
        ``[kafka.client]``, so it never silently loses to them)."""
        passed = {key: value for key, value in self.kafka.client.items()
                  if key not in leave_out}
        return {"bootstrap.servers": self.kafka.bootstrap_servers, **(defaults or {}),
                **passed, **required}


#: A password given as a query parameter (redis-py reads ``?password=``), up to the next
#: parameter: a ``#`` in it, not percent-encoded, would start a fragment for parsers.
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def masked_url(url: str) -> str:
    """``url`` with any password in it replaced by ``****``, to be shown or logged (a
    delivery URL, a dedup store's): in its user information, or a ``password`` parameter.

    A password holding a character URLs reserve (``#``, ``/``, ``?``, ``@``), not
    percent-encoded, ends the authority early, so parsers see a fragment, a path, or a
    port made of the password's first letters. Then everything before the last ``@`` is
    masked (see :func:`password_unencoded`).
    """
    shown = _QUERY_PASSWORD.sub(r"\1****", url)
    scheme, separator, rest = shown.partition("://")
    if not separator or "@" not in rest:
        return shown
    authority, tail = _authority(rest)
    if "@" in authority:
        userinfo, _, host = authority.rpartition("@")
        user, colon, password = userinfo.partition(":")
        return f"{scheme}://{user}:****@{host}{tail}" if colon and password else shown
    if password_unencoded(url):
        return f"{scheme}://****@{rest.rpartition('@')[2]}"
    return shown


def gives_password(url: str) -> bool:
    """Whether ``url`` holds a password, in its user information or a ``password``
    parameter (for a URL its client could connect with: parsable)."""
    return bool(urlsplit(url).password) or _QUERY_PASSWORD.search(url) is not None


def password_unencoded(url: str) -> bool:
    """Whether ``url`` seems to hold a password with a reserved character not
    percent-encoded: no ``@`` ends its authority, one comes later, and the authority has the
    ``user:`` of a password (a URL with a port and an ``@`` in its path reads so too); or a
    ``password`` parameter with a ``#`` in it."""
    _, separator, rest = url.partition("://")
    authority, _ = _authority(rest)
    if separator and "@" not in authority and "@" in rest and ":" in authority:
        return True
    found = _QUERY_PASSWORD.search(url)
    return found is not None and "#" in url[found.end(1):found.end()]


def _authority(rest: str) -> tuple[str, str]:
    """``rest`` (a URL after ``scheme://``) split where its authority ends."""
    ends = [index for index in (rest.find(mark) for mark in "/?#") if index >= 0]
    end = min(ends, default=len(rest))
    return rest[:end], rest[end:]


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, merge and validate settings; raise ConfigError on any problem."""
    environ = os.environ if env is None else env
    raw, source = _read_file(path, environ)
    merged = _merge(_file_layer(raw), _env_layer(environ), environ)
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


Layer = dict[str, dict[str, Any]]
"""Section -> key -> value, as one source (the file, or the environment) sets them."""


def _file_layer(raw: dict[str, Any]) -> Layer:
    layer: Layer = {}
    for section, values in raw.items():
        if section not in DEFAULTS:
            raise ConfigError(
                f"unknown section [{section}]; valid sections: {', '.join(DEFAULTS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table")
        for key in values:
            _check_key(section, key)
        if section == "kafka" and not isinstance(values.get("client", {}), dict):
            raise ConfigError("[kafka.client] must be a table of librdkafka properties")
        layer[section] = dict(values)
    _check_alternatives(layer, lambda section, key: f"{section}.{key}")
    return layer


def _env_layer(env: Mapping[str, str]) -> Layer:
    """What the ``CLINIC_EVENTS_*`` variables set; any other such variable is refused.

    ``CLINIC_EVENTS_KAFKA_CLIENT`` (an inline table) and ``CLINIC_EVENTS_KAFKA_CLIENT_<P>``
    (one property) together form the environment's ``[kafka.client]``, the single
    properties winning.
    """
    layer: Layer = {}
    table: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in OTHER_VARIABLES:
            continue
        rest = name.removeprefix(ENV_PREFIX).lower()
        if rest == CLIENT_VARIABLE:
            table = _inline_table(name, value, '{ "security.protocol" = "SASL_SSL" }')
        elif rest.startswith(CLIENT_VARIABLE + "_"):
            prop = rest.removeprefix(CLIENT_VARIABLE + "_").replace("_", ".")
            if not prop.strip("."):
                raise ConfigError(f"{name} names no librdkafka property; write "
                                  f"{ENV_PREFIX}KAFKA_CLIENT_<PROPERTY>, e.g. "
                                  f"{ENV_PREFIX}KAFKA_CLIENT_SECURITY_PROTOCOL")
            properties[prop] = value
        else:
            section, key = _env_target(name)
            layer.setdefault(section, {})[key] = _env_value(section, key, value, name)
    if table or properties:
        layer.setdefault("kafka", {})["client"] = {**table, **properties}
    _check_alternatives(layer, lambda section, key: f"{ENV_PREFIX}{section}_{key}".upper())
    return layer


def _check_alternatives(layer: Layer, label: Callable[[str, str], str]) -> None:
    """Refuse a source that sets both keys of an alternative: one would be ignored."""
    for section, first, second, why in ALTERNATIVES:
        values = layer.get(section, {})
        if first in values and second in values:
            one, other = label(section, first), label(section, second)
            raise ConfigError(f"{one} and {other} are both set; set one: {one} or {other}, "
                              f"not both ({why})")


def _merge(file: Layer, env_layer: Layer, env: Mapping[str, str]) -> Layer:
    """Defaults, then the file, then ``KAFKA_BOOTSTRAP_SERVERS``, then ``CLINIC_EVENTS_*``.

    A key the environment sets replaces the file's alternative to it (``delays`` and
    ``delays_from``, ``url`` and ``handler``); ``[kafka.client]`` is merged per property.
    """
    for section, first, second, _ in ALTERNATIVES:
        chosen = env_layer.get(section, {})
        for key, other in ((first, second), (second, first)):
            if key in chosen:
                file.get(section, {}).pop(other, None)
    merged: Layer = {s: dict(keys) for s, keys in DEFAULTS.items()}
    for section, values in file.items():
        merged[section].update(values)
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        merged["kafka"]["bootstrap_servers"] = env["KAFKA_BOOTSTRAP_SERVERS"]
    file_client = merged["kafka"]["client"]
    for section, values in env_layer.items():
        merged[section].update(values)
    if "client" in env_layer.get("kafka", {}) and isinstance(file_client, dict):
        merged["kafka"]["client"] = {**file_client, **env_layer["kafka"]["client"]}
    if merged["retry"]["delays_from"] is not None:
        merged["retry"]["delays"] = None  # the default list gives way to generated tiers
    return merged


def _env_target(name: str) -> tuple[str, str]:
    """The (section, key) a variable sets; an unknown section or key is refused."""
    rest = name.removeprefix(ENV_PREFIX).lower()
    for section in DEFAULTS:
        if rest.startswith(section + "_"):
            key = rest.removeprefix(section + "_")
            _check_key(section, key, via=name)
            return section, key
    raise ConfigError(
        f"unknown variable {name}; settings variables are {ENV_PREFIX}<SECTION>_<KEY> with "
        f"sections {', '.join(s.upper() for s in DEFAULTS)} (and "
        f"{ENV_PREFIX}KAFKA_CLIENT_<PROPERTY> for librdkafka properties); other variables: "
        f"{', '.join(OTHER_VARIABLES)}")


def _env_value(section: str, key: str, value: str, name: str) -> Any:
    if (section, key) == ("retry", "delays_from"):
        return _inline_table(name, value, DELAYS_FROM_EXAMPLE)
    default = DEFAULTS[section][key]
    if isinstance(default, list):
        if value.lstrip().startswith("["):  # written as in the file: a TOML array
            return _inline_array(name, value)
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(default, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        try:
            return int(value)
        except ValueError as exc:
            raise ConfigError(f"{section}.{key} must be an integer, got {value!r}") from exc
    return value


_Inline = TypeVar("_Inline", dict[str, Any], list[Any])


def _inline_table(name: str, value: str, example: str) -> dict[str, Any]:
    """A variable's value read as an inline TOML table, such as ``{ a = "1", b = 2 }``."""
    return _inline_toml(value, dict, f"{name} must be an inline TOML table, e.g. {example}")


def _inline_array(name: str, value: str) -> list[Any]:
    """A list variable written as a TOML array, such as ``["5s", "30s"]``."""
    return _inline_toml(value, list,
                        f'{name} must be comma-separated (a,b) or a TOML array (["a", "b"])')


def _inline_toml(value: str, kind: type[_Inline], hint: str) -> _Inline:
    """``value`` read as one inline TOML value of ``kind``; ``hint`` starts the error."""
    try:
        document = tomllib.loads(f"value = {value}")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{hint}: {exc}") from exc
    found = document.get("value")
    if set(document) != {"value"} or not isinstance(found, kind):
        raise ConfigError(f"{hint}, got {value!r}")
    return found


def _check_key(section: str, key: str, via: str | None = None) -> None:
    if key not in DEFAULTS[section]:
        where = via or f"[{section}] {key}"
        client = (f" ({ENV_PREFIX}KAFKA_CLIENT_<PROPERTY> sets one librdkafka property)"
                  if via and section == "kafka" else "")
        raise ConfigError(f"unknown key {where}; valid keys in [{section}]: "
                          f"{', '.join(DEFAULTS[section])}{client}")


def _duration(section: str, key: str, value: Any) -> int:
    try:
        return parse_duration_ms(str(value))
    except RetryTopicsError as exc:
        raise ConfigError(f"{section}.{key}: {exc}") from exc


def _positive_duration(section: str, key: str, value: Any) -> int:
    """A duration of at least 1 ms, for durations where 0 means nothing sensible: a retry
    delay (a tier would run its records at once), the delivery timeout (every call would
    time out), the dedup ttl (no outcome would be remembered)."""
    ms = _duration(section, key, value)
    if ms < 1:
        raise ConfigError(f"{section}.{key} must be at least 1ms, got {value!r}")
    return ms


def _int(section: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{section}.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _bool(section: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{section}.{key} must be true or false, got {value!r}")
    return value


def _str(section: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{section}.{key} must be a non-empty string, got {value!r}")
    return value.strip()


def _build(merged: dict[str, dict[str, Any]], source: str) -> Settings:
    kafka, topics, retry = merged["kafka"], merged["topics"], merged["retry"]
    topic_settings = TopicSettings(
        main=_str("topics", "main", topics["main"]),
        partitions=_int("topics", "partitions", topics["partitions"], 1),
        replication_factor=_int("topics", "replication_factor", topics["replication_factor"], 1),
    )
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=_str("kafka", "bootstrap_servers", kafka["bootstrap_servers"]),
            group_id=_str("kafka", "group_id", kafka["group_id"]),
            transactional_hops=_bool("kafka", "transactional_hops", kafka["transactional_hops"]),
            client=_client_properties(kafka["client"]),
        ),
        topics=topic_settings,
        retry=_build_policy(topic_settings.main, retry),
        dedup=_build_dedup(merged["dedup"]),
        delivery=_build_delivery(merged["delivery"]),
        classification=_build_rules(merged["classification"]),
        metrics=_build_metrics(merged["metrics"]),
        breaker=_build_breaker(merged["breaker"]),
        dead_letter=_build_dead_letter(merged["dead_letter"]),
        ordering=_build_ordering(merged["ordering"]),
        serve=_build_serve(merged["serve"]),
        notify=_build_notify(merged["notify"]),
        source=source,
    )


def _build_policy(main: str, retry: dict[str, Any]) -> RetryPolicy:
    backoff = retry["backoff"]
    if backoff not in BACKOFF_NAMES:
        raise ConfigError(f"retry.backoff must be one of {', '.join(BACKOFF_NAMES)}, "
                          f"got {backoff!r}")
    first_wait_ms = _duration("retry", "in_process_backoff", retry["in_process_backoff"])
    max_wait_ms = _duration("retry", "in_process_max_backoff", retry["in_process_max_backoff"])
    if max_wait_ms < first_wait_ms:
        raise ConfigError(f"retry.in_process_max_backoff ({retry['in_process_max_backoff']}) "
                          f"must be at least retry.in_process_backoff "
                          f"({retry['in_process_backoff']})")
    try:
        validate_topic_name(main)
    except RetryTopicsError as exc:
        raise ConfigError(f"topics.main: {exc}") from exc
    generated = retry["delays_from"]
    try:
        in_process = InProcessRetry(
            attempts=_int("retry", "in_process_attempts", retry["in_process_attempts"], 1),
            first_wait_ms=first_wait_ms, max_wait_ms=max_wait_ms, backoff=backoff)
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
    except TopicNameError as exc:  # main is valid, so a name derived from it is not
        raise ConfigError(f"topics.main: a topic name derived from it is not valid ({exc}); "
                          "shorten topics.main") from exc
    except RetryTopicsError as exc:
        raise ConfigError(f"[retry]: {exc}") from exc


def _build_dedup(dedup: dict[str, Any]) -> DedupSettings:
    store = _str("dedup", "store", dedup["store"])
    if store_kind(store) is None:
        raise ConfigError(f"dedup.store must start with sqlite://, redis:// or memory://, "
                          f"got {store!r}")
    return DedupSettings(store=store, ttl_ms=_positive_duration("dedup", "ttl", dedup["ttl"]))


def _build_delivery(delivery: dict[str, Any]) -> DeliverySettings:
    handler = delivery["handler"]  # at most one of handler and url is set (ALTERNATIVES)
    url = delivery["url"] if handler is None else None
    if handler is None and url is None:
        url = DEFAULT_DELIVERY_URL
    if handler is not None and (not isinstance(handler, str) or ":" not in handler):
        raise ConfigError(f"delivery.handler must look like 'package.module:function', "
                          f"got {handler!r}")
    if url is not None:
        _check_http_url("delivery", "url", url)
    return DeliverySettings(
        url=url, handler=handler,
        timeout_ms=_positive_duration("delivery", "timeout", delivery["timeout"]),
        concurrency=_int("delivery", "concurrency", delivery["concurrency"], 1),
    )


def _build_metrics(metrics: dict[str, Any]) -> MetricsSettings:
    """``[metrics]``; the port comes as a string from the environment (its default is None)."""
    port = metrics["prometheus_port"]
    if isinstance(port, str) and not port.strip():
        port = None  # CLINIC_EVENTS_METRICS_PROMETHEUS_PORT="" turns the endpoint off
    elif isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 1 <= port <= 65535):
        raise ConfigError(f"metrics.prometheus_port must be a TCP port, 1 to 65535, got "
                          f"{metrics['prometheus_port']!r}")
    return MetricsSettings(
        prometheus_port=port,
        prometheus_host=_str("metrics", "prometheus_host", metrics["prometheus_host"]),
        lag_interval_ms=_positive_duration("metrics", "lag_interval", metrics["lag_interval"]),
    )


def _build_breaker(breaker: dict[str, Any]) -> BreakerPolicy:
    """``[breaker]``: when the downstream counts as down, and how it is probed then."""
    enabled = breaker["enabled"]
    if not isinstance(enabled, bool):
        raise ConfigError(f"breaker.enabled must be true or false, got {enabled!r}")
    errors = breaker["systemic_errors"]
    if not isinstance(errors, list) or not all(isinstance(e, str) and e for e in errors):
        raise ConfigError("breaker.systemic_errors must be a list of error classes, e.g. "
                          f'["http.503", "connection"], got {errors!r}')
    try:
        return BreakerPolicy(
            enabled=enabled,
            window_calls=_int("breaker", "window_calls", breaker["window_calls"], 1),
            min_failures=_int("breaker", "min_failures", breaker["min_failures"], 1),
            min_keys=_int("breaker", "min_keys", breaker["min_keys"], 1),
            failure_ratio=_fraction("breaker", "failure_ratio", breaker["failure_ratio"]),
            first_probe_ms=_positive_duration("breaker", "first_probe", breaker["first_probe"]),
            max_probe_ms=_positive_duration("breaker", "max_probe", breaker["max_probe"]),
            systemic=tuple(errors),
            error_after_ms=_positive_duration("breaker", "error_after", breaker["error_after"]),
        )
    except RetryTopicsError as exc:
        raise ConfigError(str(exc)) from exc


def _build_dead_letter(dead_letter: dict[str, Any]) -> FloodGuardPolicy:
    """``[dead_letter]``: how many dead letters mean a deploy mistake (0 turns a rule off)."""
    try:
        return FloodGuardPolicy(
            max_consecutive=_int("dead_letter", "max_consecutive",
                                 dead_letter["max_consecutive"], 0),
            max_ratio=_fraction("dead_letter", "max_ratio", dead_letter["max_ratio"]),
            window=_int("dead_letter", "window", dead_letter["window"], 0),
        )
    except RetryTopicsError as exc:
        raise ConfigError(str(exc)) from exc


def _build_ordering(ordering: dict[str, Any]) -> OrderingPolicy:
    """``[ordering]``: whether events of a key wait behind one in a retry tier (``per_key``)
    and what a dead-lettered head does to them (``hold``: they follow it to the DLQ)."""
    mode, after = ordering["mode"], ordering["after_dead_letter"]
    if mode not in MODES:
        raise ConfigError(f"ordering.mode must be one of {', '.join(MODES)}, got {mode!r}")
    if after not in AFTER_DEAD_LETTER:
        raise ConfigError(f"ordering.after_dead_letter must be one of "
                          f"{', '.join(AFTER_DEAD_LETTER)}, got {after!r}")
    return OrderingPolicy(mode=mode, after_dead_letter=after)


def _build_serve(serve: dict[str, Any]) -> ServeSettings:
    """``[serve]``: where the review page listens, who may sign in, where links point."""
    port = serve["port"]
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"serve.port must be a TCP port, 1 to 65535, got {serve['port']!r}")
    public_url, trace_url = serve["public_url"] or None, serve["trace_url"] or None
    for key, url in (("public_url", public_url), ("trace_url", trace_url)):
        if url is not None:
            _check_http_url("serve", key, url)
    if trace_url is not None and TRACE_ID_PLACEHOLDER not in trace_url:
        raise ConfigError(f"serve.trace_url must contain {TRACE_ID_PLACEHOLDER} where the "
                          "trace id goes, e.g. \"http://127.0.0.1:16686/trace/{trace_id}\", "
                          f"got {trace_url!r}")
    secret = serve["session_secret"] or None
    if secret is not None and (not isinstance(secret, str) or len(secret) < MIN_SESSION_SECRET):
        raise ConfigError(f"serve.session_secret must be at least {MIN_SESSION_SECRET} "
                          "characters (python -c 'import secrets; print(secrets.token_hex(32))')")
    return ServeSettings(
        host=_str("serve", "host", serve["host"]), port=port,
        public_url=public_url.rstrip("/") if public_url else None, trace_url=trace_url,
        users=_serve_users(serve["users"]), session_secret=secret,
        session_ttl_ms=_positive_duration("serve", "session_ttl", serve["session_ttl"]),
        downstream_name=_str("serve", "downstream_name", serve["downstream_name"]),
    )


def _check_http_url(section: str, key: str, url: object, *, secret: bool = False,
                    what: str | None = None) -> None:
    """Refuse what no HTTP client could send to: another scheme, no host, a bad port, a
    control character or a trailing space (a value read from a file often ends in a newline).

    Why here: a URL the client refuses only when it first sends is found by the first
    event or the first notification, long after start-up said nothing was wrong. A
    ``secret`` URL (it carries a token) is never repeated in the message.
    """
    shown = "" if secret else f", got {masked_url(url) if isinstance(url, str) else url!r}"
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        about = f" ({what})" if what else ""
        raise ConfigError(f"{section}.{key} must be an http:// or https:// URL{about}{shown}")
    if url != url.strip() or not url.isprintable():
        raise ConfigError(f"{section}.{key} holds a control character or ends in a space (a "
                          f"trailing newline?){shown}")
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
    except ValueError as exc:  # a bracketed IPv6 host left open, a port that is no number
        if password_unencoded(url):  # the "port" quoted is the password's start
            raise ConfigError(f"{section}.{key} is not a valid URL: its password holds a "
                              "character URLs reserve ('#', '/', '?' or '@'); percent-encode "
                              f"it (%23, %2F, %3F, %40){shown}") from None
        raise ConfigError(f"{section}.{key} is not a valid URL: {exc}{shown}") from None
    if not host:
        raise ConfigError(f"{section}.{key} names no host{shown}")


def _build_notify(notify: dict[str, Any]) -> NotifySettings:
    """``[notify]``; ``CLINIC_EVENTS_NOTIFY_WEBHOOK_URL=""`` turns notifications off."""
    url = notify["webhook_url"] or None
    if url is not None:
        # The URL carries the receiver's token: the message names only what is wrong with it.
        _check_http_url("notify", "webhook_url", url, secret=True,
                        what="an incoming webhook's address")
    return NotifySettings(
        webhook_url=url,
        min_interval_ms=_positive_duration("notify", "min_interval", notify["min_interval"]),
        timeout_ms=_positive_duration("notify", "timeout", notify["timeout"]),
    )


def _serve_users(users: Any) -> tuple[ServeUser, ...]:
    """``[serve] users``: a list of ``{ name, password_hash, role }`` tables, names unique."""
    example = ('users = [{ name = "ana", password_hash = "$argon2id$...", role = "operator" }] '
               "(clinic-events serve hash-password makes the hash)")
    if not isinstance(users, list):
        raise ConfigError(f"serve.users must be a list of tables: {example}")
    found: dict[str, ServeUser] = {}
    for index, user in enumerate(users):
        where = f"serve.users[{index}]"
        if not isinstance(user, dict) or set(user) != {"name", "password_hash", "role"}:
            raise ConfigError(f"{where} must be a table with exactly name, password_hash, "
                              f"role: {example}")
        name = _str("serve", f"users[{index}].name", user["name"])
        if user["role"] not in SERVE_ROLES:
            raise ConfigError(f"{where}.role must be one of {', '.join(SERVE_ROLES)}, "
                              f"got {user['role']!r}")
        digest = user["password_hash"]
        if not isinstance(digest, str) or not digest.startswith("$argon2"):
            raise ConfigError(f"{where}.password_hash must be an argon2 hash ($argon2id$...), "
                              "never the password itself: clinic-events serve hash-password")
        if name in found:
            raise ConfigError(f"{where}: user {name!r} is listed twice")
        found[name] = ServeUser(name=name, password_hash=digest, role=user["role"])
    return tuple(found.values())


def _fraction(section: str, key: str, value: Any) -> float:
    """A number from 0 to 1 (a float in TOML, text from the environment)."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"{section}.{key} must be a number from 0 to 1, got {value!r}")
    return number


def _build_rules(rules: dict[str, Any]) -> ExceptionRules:
    try:
        return ExceptionRules(
            transient=tuple(rules["transient"]), permanent=tuple(rules["permanent"]),
            default=rules["default"],
        )
    except (RetryTopicsError, TypeError) as exc:
        raise ConfigError(f"[classification]: {exc}") from exc


def _client_properties(client: Mapping[str, Any]) -> dict[str, str]:
    """``[kafka.client]`` as strings; a nested value, or a property clinic-events manages,
    is refused."""
    for key, value in client.items():
        if isinstance(value, dict | list):
            raise ConfigError(f"[kafka.client] {key!r} must be a string, number or boolean "
                              f"(a librdkafka property value), got {value!r}")
        reason = MANAGED_PROPERTIES.get(str(key))
        if reason is not None:
            raise ConfigError(f"[kafka.client] {key} is set by clinic-events ({reason}); "
                              f"remove it")
    return {str(k): str(v) for k, v in client.items()}
