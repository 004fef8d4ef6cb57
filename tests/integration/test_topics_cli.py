"""``clinic-events topics ensure`` against a real broker: creates, is idempotent, refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from consumer.config.settings import load_settings
from consumer.kafka.provisioning import ensure_topics
from retry_topics.naming import (
    audit_topic_name,
    dlq_ledger_topic_name,
    dlq_topic_name,
    retry_topic_name,
    status_topic_name,
)
from tests.integration.harness import run_cli, write_config


def _ensure(tmp_path: Path, bootstrap: str, main: str,
            partitions: int) -> tuple[int, dict[str, Any], str]:
    """``topics ensure --json`` for tiers of 5 s and 30 s and ``partitions`` partitions."""
    config = write_config(tmp_path, bootstrap=bootstrap, main=main, delays=("5s", "30s"),
                          partitions=partitions)
    result = run_cli(tmp_path, "topics", "ensure", "--config", str(config), "--json")
    return result.returncode, json.loads(result.stdout), result.stderr


def test_ensure_creates_every_topic_once_and_refuses_too_few_partitions(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    main = topic_prefix
    wanted = [main, retry_topic_name(main, 5_000), retry_topic_name(main, 30_000),
              dlq_topic_name(main), dlq_ledger_topic_name(main), audit_topic_name(main),
              status_topic_name(main)]

    code, report, _ = _ensure(tmp_path, kafka_bootstrap, main, partitions=3)
    assert code == 0
    assert sorted(report["created"]) == sorted(wanted)
    assert report["existing"] == []
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=30).topics
    partitions = {name: len(topics[name].partitions) for name in wanted}
    assert partitions == {**dict.fromkeys(wanted, 3), audit_topic_name(main): 1,
                          dlq_ledger_topic_name(main): 1, status_topic_name(main): 1}

    code, report, _ = _ensure(tmp_path, kafka_bootstrap, main, partitions=3)
    assert code == 0
    assert (report["created"], sorted(report["existing"])) == ([], sorted(wanted))

    code, report, stderr = _ensure(tmp_path, kafka_bootstrap, main, partitions=6)
    assert code == 2, "asking for more partitions than the topics have is bad configuration"
    assert f"{main} has 3 partitions, configuration needs 6" in report["error"]
    assert "too few partitions" in stderr
    assert "[topics] partitions" in stderr


def test_the_report_lists_every_topic_the_cluster_has_so_callers_need_not_ask_again(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """run looks for retry tiers of old delays among these, without a second request."""
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                          delays=("5s", "30s"))
    first = ensure_topics(load_settings(config, env={}))
    assert set(first.created) <= set(first.listed)
    changed = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                           delays=("5s", "1m"))
    second = ensure_topics(load_settings(changed, env={}))
    assert second.created == (retry_topic_name(topic_prefix, 60_000),)
    assert {retry_topic_name(topic_prefix, 30_000), *first.listed} <= set(second.listed)
