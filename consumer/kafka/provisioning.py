"""Creating the topics a retry policy needs: main, one per retry tier, DLQ, ledger, audit
and status.

The only module of this package that talks to Kafka (through confluent-kafka's AdminClient).
It is idempotent: topics that exist are reported, not recreated. An existing main, retry or
dead-letter topic with fewer partitions than configured is refused with ``TopicLayoutError``
rather than silently used, because per-key ordering and consumer parallelism assume the
configured count (a topic with *more* partitions is accepted). The audit topic has one
partition (it is a log of operator actions, read in order) and is kept forever; the DLQ is
kept four weeks so people have time to review it. The DLQ ledger (which dead letters are
replayed or discarded, one entry per DLQ record) has one partition and is compacted, never
deleted by age: an entry that expired while its DLQ record still existed would reopen the
record, and the next replay would send it again. Settings librdkafka refuses when the admin
client is built (an unknown or invalid ``[kafka.client]`` property) raise
``ClientSettingsError``: bad configuration, not an unreachable broker (``KafkaUnreachable``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from consumer.errors import ClinicEventsError, KafkaUnreachable
from retry_topics.naming import audit_topic_name, dlq_ledger_topic_name, status_topic_name
from retry_topics.policy import RetryPolicy

__all__ = [
    "ClientSettingsError", "PartitionCountError",
    "ProvisioningSettings", "TopicLayoutError", "TopicReport", "ensure_topics",
]

DLQ_RETENTION_MS = 28 * 24 * 3600 * 1000


class TopicLayoutError(ClinicEventsError):
    """Topics exist but do not fit the configuration, or could not be created."""


class PartitionCountError(TopicLayoutError):
    """Existing topics have fewer partitions than ``[topics] partitions`` asks for.

    The configuration does not fit the cluster: the commands treat it as bad configuration
    (exit code 2), unlike a broker that cannot be reached or refuses a creation (exit 1).
    """


class ClientSettingsError(TopicLayoutError, ValueError):
    """librdkafka refused the admin client's properties (``[kafka.client]``).

    Bad configuration, like ``PartitionCountError``: the commands report it as a
    configuration error (exit code 2).
    """


class _TopicCounts(Protocol):
    @property
    def partitions(self) -> int: ...
    @property
    def replication_factor(self) -> int: ...


class ProvisioningSettings(Protocol):
    """What provisioning needs of the application's settings (structurally typed)."""

    @property
    def retry(self) -> RetryPolicy: ...
    @property
    def topics(self) -> _TopicCounts: ...
    def admin_config(self, **overrides: Any) -> dict[str, Any]:
        """Admin-client properties, without consumer- or producer-only ones."""


@dataclass(frozen=True, slots=True)
class TopicReport:
    """What ``ensure_topics`` did: names created and names that already existed (of the
    planned topics), and every topic the cluster has now (``listed``), so a caller that
    looks for other topics (old retry tiers) need not list them again."""

    created: tuple[str, ...]
    existing: tuple[str, ...]
    listed: tuple[str, ...] = ()


def planned_topics(policy: RetryPolicy, partitions: int) -> dict[str, tuple[int, dict[str, str]]]:
    """Topic name -> (partitions, topic configs) for every topic of the policy."""
    plan: dict[str, tuple[int, dict[str, str]]] = {policy.main_topic: (partitions, {})}
    for tier in policy.tiers:
        plan[tier.topic] = (partitions, {})
    plan[policy.dlq_topic] = (partitions, {"retention.ms": str(DLQ_RETENTION_MS)})
    plan[dlq_ledger_topic_name(policy.main_topic)] = (1, {"cleanup.policy": "compact"})
    plan[audit_topic_name(policy.main_topic)] = (1, {"retention.ms": "-1"})
    plan[status_topic_name(policy.main_topic)] = (1, {"cleanup.policy": "compact"})
    return plan


def ensure_topics(settings: ProvisioningSettings, *, admin: AdminClient | None = None,
                  list_topics: Callable[[float], Any] | None = None,
                  timeout_s: float = 30.0) -> TopicReport:
    """Create whatever topics are missing and check the partition counts of the rest.

    ``admin`` is a client built by the caller (one whose log lines it serves); without one,
    a client of ``settings.admin_config()`` is built here. ``list_topics(timeout_s)`` makes
    the first request (an ``AdminSession``'s names a refused login early); by default the
    client's own.
    """
    config = settings.admin_config()
    client = admin if admin is not None else _admin_client(config)
    plan = planned_topics(settings.retry, settings.topics.partitions)
    try:
        metadata = (list_topics(timeout_s) if list_topics is not None
                    else client.list_topics(timeout=timeout_s))
    except KafkaException as exc:
        raise KafkaUnreachable(f"cannot reach Kafka at {config.get('bootstrap.servers')} "
                               f"to list topics: {_reason(exc)} (waited {timeout_s:g} s)"
                               ) from exc
    existing = {name: len(meta.partitions) for name, meta in metadata.topics.items()
                if meta.error is None}
    too_small = [
        f"{name} has {existing[name]} partitions, configuration needs {wanted}"
        for name, (wanted, _) in plan.items()
        if name in existing and existing[name] < wanted and wanted > 1
    ]
    if too_small:
        raise PartitionCountError(
            "existing topics have too few partitions (raise them with kafka-topics --alter "
            "or lower [topics] partitions): " + "; ".join(too_small)
        )
    missing = [name for name in plan if name not in existing]
    created: list[str] = []
    if missing:
        futures = client.create_topics(
            [NewTopic(name, num_partitions=plan[name][0],
                      replication_factor=settings.topics.replication_factor,
                      config=plan[name][1]) for name in missing],
            operation_timeout=timeout_s, request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=timeout_s)
                created.append(name)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                exists = KafkaError.TOPIC_ALREADY_EXISTS
                if isinstance(error, KafkaError) and error.code() == exists:
                    continue  # another instance created it meanwhile: fine
                raise TopicLayoutError(f"could not create topic {name}: {_reason(exc)}") from exc
    return TopicReport(
        created=tuple(n for n in plan if n in created),
        existing=tuple(n for n in plan if n not in created),
        listed=tuple(sorted({*existing, *created})),
    )


def _admin_client(config: dict[str, Any]) -> AdminClient:
    try:
        return AdminClient(config)
    except (KafkaException, ValueError, TypeError) as exc:  # nothing is sent while building
        raise ClientSettingsError(f"[kafka.client]: librdkafka refused the admin client "
                                  f"settings: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    """A client exception's message for people (``str()`` is ``KafkaError{code=...}``)."""
    first = exc.args[0] if exc.args else None
    return str(first.str()) if isinstance(first, KafkaError) else str(exc)
