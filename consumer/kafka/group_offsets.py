"""What Kafka knows of the consumer group's position: members, committed and end offsets.

Read with the admin APIs Kafka's own tooling uses (``list_consumer_group_offsets``,
``list_offsets``, ``describe_consumer_groups``), so figures agree with it. ``lag`` builds
its samples on it; ``run`` asks it, at start-up, whether retry tiers that ``[retry] delays``
no longer include still hold records past the group's offsets (``stranded``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin._listoffsets import OffsetSpec  # re-exported without a type export

from consumer.config.settings import Settings
from consumer.errors import ClinicEventsError
from consumer.kafka.admin_session import AdminSession
from consumer.kafka.clients import kafka_reason
from retry_topics.naming import retry_tiers_of

_COORDINATOR_CHANGING = frozenset({
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE})


class GroupQueryError(ClinicEventsError, RuntimeError):
    """Kafka could not be asked about the group (unreachable, not authorised, ...)."""


def leftover_tiers(settings: Settings, existing: Iterable[str]) -> list[str]:
    """Retry tiers of the main topic among ``existing`` that the configured delays lack.

    Why: after ``[retry] delays`` change, the old tiers' topics stay and may hold records;
    ``run`` drains them (``RetryPolicy.with_draining``) and ``lag`` shows them.
    """
    policy = settings.retry
    return [name for name in retry_tiers_of(policy.main_topic, existing)
            if name not in policy.retry_topics]


class GroupOffsets:
    """Reads ``settings.kafka.group_id``'s position; close it (or use ``with``)."""

    def __init__(self, settings: Settings, *, timeout_s: float = 15.0) -> None:
        self._settings = settings
        self._group = settings.kafka.group_id
        self._timeout = timeout_s
        self._session = AdminSession(settings)
        self._admin = self._session.client

    def __enter__(self) -> GroupOffsets:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    def stranded(self) -> dict[str, int]:
        """Leftover retry tiers (see ``leftover_tiers``) -> records after the group's
        committed offset there (0 where it never committed: unknown)."""
        counts = self.partition_counts()
        leftovers = leftover_tiers(self._settings, counts)
        if not leftovers:
            return {}
        tps = [TopicPartition(name, p) for name in leftovers for p in range(counts[name])]
        _, committed = self.members_and_committed(tps)
        end = self.offsets(tps, "latest")
        stranded = dict.fromkeys(leftovers, 0)
        for key, offset in committed.items():
            # Never committed: unknown, not stranded. A fresh group name, or offsets Kafka
            # expired for a topic no longer subscribed to, says nothing of those records.
            if offset is not None:
                stranded[key[0]] += max(0, end[key] - offset)
        return stranded

    def partition_counts(self) -> dict[str, int]:
        """Topic -> partitions, of every topic the cluster lists without an error.

        The first request: a refused login or TLS handshake raises ``KafkaAccessRefused``.
        """
        try:
            metadata = self._session.list_topics(self._timeout)
        except KafkaException as exc:
            raise GroupQueryError(
                f"cannot reach Kafka at {self._settings.kafka.bootstrap_servers}: "
                f"{kafka_reason(exc)} (waited {self._timeout:g} s)") from exc
        return {name: len(meta.partitions) for name, meta in metadata.topics.items()
                if meta.error is None}

    def members_and_committed(self, tps: list[TopicPartition]
                               ) -> tuple[int, dict[tuple[str, int], int | None]]:
        """The group's member count, then its committed offsets of ``tps``, in that order.

        The order is what keeps the process alive: see ``_members``. Every reading of
        committed offsets goes through here, so no caller can reverse it.
        """
        members = self._members()
        return members, self._committed(tps)

    def _committed(self, tps: list[TopicPartition]) -> dict[tuple[str, int], int | None]:
        """Committed offsets of ``tps``; only ever after ``_members`` (see there)."""
        if not tps:
            return {}
        request = [ConsumerGroupTopicPartitions(self._group, tps)]
        try:
            futures = self._admin.list_consumer_group_offsets(
                request, request_timeout=self._timeout)
            result = futures[self._group].result(timeout=self._timeout + 5)
        except KafkaException as exc:
            raise GroupQueryError(f"cannot read committed offsets of {self._group}: "
                                f"{kafka_reason(exc)}") from exc
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
                for tp in result.topic_partitions}

    def offsets(self, tps: list[TopicPartition], which: str) -> dict[tuple[str, int], int]:
        if not tps:
            return {}
        try:
            spec = _spec(which)
            futures = self._admin.list_offsets({tp: spec for tp in tps},
                                               request_timeout=self._timeout)
            return {(tp.topic, tp.partition): int(future.result(timeout=self._timeout + 5).offset)
                    for tp, future in futures.items()}
        except KafkaException as exc:
            raise GroupQueryError(f"cannot read partition offsets: {kafka_reason(exc)}") from exc

    def _members(self) -> int:
        """Members of the group, retrying while its coordinator is moving or loading.

        Called *before* ``list_consumer_group_offsets`` on purpose: librdkafka's admin client
        crashes the process (NULL group handle, librdkafka issue #5040) when an OffsetFetch
        answer says NOT_COORDINATOR, which happens the first time a group is looked up on a
        cluster. Describing the group first, until its coordinator answers, avoids that case.
        """
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                future = self._admin.describe_consumer_groups(
                    [self._group], request_timeout=self._timeout)[self._group]
                return len(future.result(timeout=self._timeout + 5).members)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                code = error.code() if isinstance(error, KafkaError) else None
                if code == KafkaError.GROUP_ID_NOT_FOUND:
                    return 0
                if code in _COORDINATOR_CHANGING and time.monotonic() < deadline:
                    time.sleep(0.2)  # bounded by the deadline; the coordinator is loading
                    continue
                raise GroupQueryError(f"cannot describe group {self._group}: "
                                    f"{kafka_reason(exc)}") from exc


def _spec(name: str) -> Any:
    """``OffsetSpec.earliest()`` / ``.latest()`` (untyped classmethods in confluent-kafka)."""
    return getattr(OffsetSpec, name)()
