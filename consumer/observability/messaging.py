"""Who the Kafka client is, for telemetry, and the names of every metric clinic-events makes.

**The client.** OpenTelemetry's messaging conventions put ``server.address`` /
``server.port`` (the broker the client was pointed at: the first bootstrap server) and
``messaging.client.id`` on spans, and ``messaging.consumer.group.name`` /
``messaging.destination.name`` on metrics. :class:`MessagingClient` holds them as one value,
built once by the wiring from the settings; this layer does not read settings itself.

**The names.** Metric names are constants here, so the code that records a metric, the
Prometheus alert rules (``deploy/prometheus/alerts.yml``) and ``docs/observability.md`` agree.
A name marked *reserved* is documented and used by the alert rules, but recorded by a part
built later (the downstream breaker, the flood guard, parked keys); whoever builds it uses the
name and the encoding said here.

Prometheus sees each name with dots as underscores, the unit as a suffix (``s`` ->
``_seconds``, ``ms`` -> ``_milliseconds``; ``{...}`` annotations are dropped) and ``_total``
on counters: ``messaging.client.consumed.messages`` is scraped as
``messaging_client_consumed_messages_total``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

__all__ = [
    "BREAKER_STATE", "CONSUMED_MESSAGES", "CONSUMER_LAG_AGE", "CONSUMER_LAG_MESSAGES",
    "DELIVERY_DURATION", "DLQ_MESSAGES", "DLQ_OLDEST_AGE", "EVENTS", "FLOOD_GUARD_HALTED",
    "GROUP_MEMBERS", "LAG_SAMPLES", "PARKED_KEYS", "PROCESS_DURATION",
    "PROCESS_DURATION_BUCKETS_S", "RETRY_OVERDUE_AGE", "RETRY_OVERDUE_MESSAGES",
    "RETRY_WAITING_MESSAGES", "MessagingClient", "first_bootstrap_server",
]

# Recorded per event by the pipeline (``Telemetry``).
CONSUMED_MESSAGES = "messaging.client.consumed.messages"  # counter, {message}
PROCESS_DURATION = "messaging.process.duration"  # histogram, s
EVENTS = "clinic_events.events"  # counter, {event}: outcome, tier
DELIVERY_DURATION = "clinic_events.delivery.duration"  # histogram, ms: tier, error.type
#: The semantic conventions' advised boundaries for messaging durations, in seconds.
PROCESS_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0,
                              2.5, 5.0, 7.5, 10.0)

# Observed every ``[metrics] lag_interval`` from what Kafka holds (``run``'s lag sampler).
CONSUMER_LAG_MESSAGES = "clinic_events.consumer.lag.messages"  # gauge, per partition
CONSUMER_LAG_AGE = "clinic_events.consumer.lag.age"  # gauge, s: oldest unconsumed record
RETRY_WAITING_MESSAGES = "clinic_events.retry.waiting.messages"  # gauge, per tier topic
RETRY_OVERDUE_MESSAGES = "clinic_events.retry.overdue.messages"  # gauge, per tier topic
RETRY_OVERDUE_AGE = "clinic_events.retry.overdue.age"  # gauge, s: how long past due
DLQ_MESSAGES = "clinic_events.dlq.messages"  # gauge: records the DLQ topic holds
DLQ_OLDEST_AGE = "clinic_events.dlq.oldest.age"  # gauge, s
GROUP_MEMBERS = "clinic_events.consumer.group.members"  # gauge, {member}
LAG_SAMPLES = "clinic_events.lag.samples"  # counter, {sample}: outcome = ok | failed

# Reserved (see the module docstring).
#: gauge: 0 closed, 1 half-open, 2 open (anything but 0: the downstream gets no traffic
#: but probes).
BREAKER_STATE = "clinic_events.breaker.state"
#: gauge: 1 while the flood guard has halted the stream, else 0.
FLOOD_GUARD_HALTED = "clinic_events.flood_guard.halted"
#: gauge, {key}: record keys whose later events wait behind one in a retry tier.
PARKED_KEYS = "clinic_events.parked.keys"

_DEFAULT_PORT = 9092


def first_bootstrap_server(bootstrap_servers: str) -> tuple[str, int]:
    """``(host, port)`` of the first of comma-separated bootstrap servers.

    Accepts ``host:port``, ``host`` (port 9092), ``[::1]:9092`` and a listener prefix such as
    ``SASL_SSL://host:9093``.
    """
    first = bootstrap_servers.split(",")[0].strip()
    first = first.rpartition("://")[2]
    if first.startswith("["):  # [IPv6]:port
        host, _, rest = first[1:].partition("]")
        port = rest.removeprefix(":")
    elif first.count(":") == 1:
        host, _, port = first.partition(":")
    else:  # a bare host, or an IPv6 address without brackets (no port can be told apart)
        host, port = first, ""
    return host, int(port) if port.isdigit() else _DEFAULT_PORT


def _default_client_id() -> str:
    return f"clinic-events@{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessagingClient:
    """The Kafka client telemetry describes: broker address, client id, group, main topic."""

    server_address: str
    server_port: int
    client_id: str = field(default_factory=_default_client_id)
    group: str | None = None
    main_topic: str | None = None

    @classmethod
    def of(cls, bootstrap_servers: str, *, client_id: str | None = None,
           group: str | None = None, main_topic: str | None = None) -> MessagingClient:
        """From the bootstrap servers; ``client_id`` is librdkafka's ``client.id`` if one is
        configured, else ``clinic-events@<host>:<pid>`` (unique per process)."""
        address, port = first_bootstrap_server(bootstrap_servers)
        return cls(server_address=address, server_port=port,
                   client_id=client_id or _default_client_id(), group=group,
                   main_topic=main_topic)

    def span_attributes(self) -> dict[str, str | int]:
        """``server.address``, ``server.port`` and ``messaging.client.id``, for every span."""
        return {"server.address": self.server_address, "server.port": self.server_port,
                "messaging.client.id": self.client_id}

    def metric_attributes(self) -> dict[str, str | int]:
        """What every messaging metric point of this client carries (low cardinality)."""
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka", "server.address": self.server_address,
            "server.port": self.server_port}
        if self.group is not None:
            attributes["messaging.consumer.group.name"] = self.group
        return attributes
