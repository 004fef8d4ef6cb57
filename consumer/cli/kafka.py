"""``clinic-events kafka start | stop | status``: the project-local Apache Kafka broker."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from consumer.dev.local_kafka import LocalKafka

_state_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the broker's data, log and pid [default: .clinic-events/kafka, "
    "or $CLINIC_EVENTS_STATE_DIR/kafka].",
)


@click.group("kafka")
def kafka_group() -> None:
    """Run a single-node KRaft Apache Kafka broker on 127.0.0.1 (Java 17 + Maven, no Docker)."""


@kafka_group.command("start")
@_state_option
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Broker port [default: the previous one, else 9092 if free; 0 = any free port].")
@click.option("--timeout", "timeout_s", type=float, default=90.0, show_default=True,
              help="Seconds to wait for the broker to accept requests.")
def start(state_dir: Path | None, port: int | None, timeout_s: float) -> None:
    """Start the broker (jars are fetched by Maven once, then cached) and print its address."""
    broker = LocalKafka(state_dir)
    before = broker.status()
    bootstrap = broker.start(port=port, timeout_s=timeout_s)
    if before.running:
        click.echo(f"already running at {bootstrap} (pid {before.pid})", err=True)
    else:
        click.echo(f"started (log: {broker.log_file})", err=True)
    click.echo(bootstrap)


@kafka_group.command("stop")
@_state_option
def stop(state_dir: Path | None) -> None:
    """Stop the broker cleanly (SIGTERM, then SIGKILL after 30 s)."""
    if LocalKafka(state_dir).stop():
        click.echo("stopped")
    else:
        click.echo("not running")


@kafka_group.command("status")
@_state_option
def status(state_dir: Path | None) -> None:
    """Say whether the broker runs; exit code 0 when running, 3 when not."""
    current = LocalKafka(state_dir).status()
    if current.running:
        click.echo(f"running at {current.bootstrap} (pid {current.pid})")
        return
    click.echo("not running")
    sys.exit(3)
