"""``clinic-events topics ensure``: create the main, retry, dead-letter and audit topics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from consumer.cli.options import (
    config_option,
    json_option,
    layout_exit_code,
    settings_from,
)
from consumer.errors import KafkaUnreachable
from consumer.kafka.admin_session import ensure_topics_logged
from consumer.kafka.provisioning import TopicLayoutError


@click.group("topics")
def topics_group() -> None:
    """Manage the Kafka topics the configuration needs."""


@topics_group.command("ensure")
@config_option
@json_option
def ensure(config_path: Path | None, as_json: bool) -> None:
    """Create missing topics (idempotent); refuse existing ones with too few partitions.

    Exit code 0 when every topic exists afterwards, 2 when existing topics have fewer
    partitions than the configuration asks for or the configuration is bad (a
    [kafka.client] property librdkafka refuses, ...), 4 when Kafka cannot be reached
    (no answer within 30 s), 5 when it refuses our credentials or TLS handshake, 1 when
    it refuses a creation; with --json a topic failure prints ``{"error": ...}`` too.
    """
    settings = settings_from(config_path)
    try:
        report = ensure_topics_logged(settings)
    except (TopicLayoutError, KafkaUnreachable) as exc:
        click.echo(f"clinic-events: {exc}", err=True)
        if as_json:  # scripts parse stdout: an empty one is no answer
            click.echo(json.dumps({"error": str(exc)}))
        sys.exit(layout_exit_code(exc))
    if as_json:
        click.echo(json.dumps({"created": list(report.created), "existing": list(report.existing)}))
        return
    for name in report.created:
        click.echo(f"created  {name}")
    for name in report.existing:
        click.echo(f"exists   {name}")
