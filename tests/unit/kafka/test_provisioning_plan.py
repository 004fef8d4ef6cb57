"""What ``topics ensure`` plans for a retry policy, without a broker."""

from __future__ import annotations

from consumer.kafka.provisioning import DLQ_RETENTION_MS, planned_topics
from retry_topics.policy import RetryPolicy


def test_the_dlq_ledger_is_one_compacted_partition_never_deleted_by_age() -> None:
    """An entry expiring while its dead letter still exists would reopen it for a replay."""
    plan = planned_topics(RetryPolicy(main_topic="clinic.events", delays_ms=(5_000,)), 3)
    assert plan["clinic.events.dlq-ledger"] == (1, {"cleanup.policy": "compact"})
    assert plan["clinic.events.dlq"] == (3, {"retention.ms": str(DLQ_RETENTION_MS)})
    assert plan["clinic.events.audit"] == (1, {"retention.ms": "-1"})
    assert sorted(plan) == ["clinic.events", "clinic.events.audit", "clinic.events.dlq",
                            "clinic.events.dlq-ledger", "clinic.events.retry.5s",
                            "clinic.events.status"]


def test_the_status_topic_keeps_each_instances_latest_state() -> None:
    plan = planned_topics(RetryPolicy(main_topic="clinic.events", delays_ms=(5_000,)), 3)
    assert plan["clinic.events.status"] == (1, {"cleanup.policy": "compact"})
