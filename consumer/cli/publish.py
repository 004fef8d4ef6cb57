"""``clinic-events publish``: validate JSON Lines events and send the valid ones to the main topic.

The work is done by ``consumer.kafka.publishing``; this module reads the input (a file or stdin,
line by line, so a large file is never held in memory), shows a progress bar when a person
is watching, and reports. Exit code 0 only when every non-blank line was valid and
acknowledged by the broker; 1 when a line was rejected or a delivery failed (valid lines are
sent either way); 2 for bad options or configuration.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from consumer.cli.options import (
    Duration,
    Rate,
    config_option,
    json_option,
    layout_exit_code,
    settings_from,
)
from consumer.errors import ConfigError, KafkaUnreachable
from consumer.kafka.clients import producer_from
from consumer.kafka.provisioning import TopicLayoutError
from consumer.kafka.publishing import (
    DeliveryTimeoutTooShort,
    EventPublisher,
    PublishSummary,
    TokenBucket,
)
from consumer.observability.telemetry import Telemetry, configure_tracing, shutdown_providers

_MAX_SHOWN_ERRORS = 50


@click.command("publish")
@config_option
@json_option
@click.option("--file", "-f", "source", required=True, metavar="FILE",
              help="JSON Lines file, one event per line (the shape of examples/events.jsonl); "
              "'-' reads standard input.")
@click.option("--topic", default=None,
              help="Main topic to publish to [default: [topics] main of the configuration].")
@click.option("--rate", type=Rate(), default=None,
              help="At most this many events per second [default: no limit].")
@click.option("--timeout", type=Duration(minimum_ms=1), default="30s", show_default=True,
              help="Give up on a record the broker has not acknowledged after this long "
              "(message.timeout.ms); it counts as failed.")
@click.option("--no-create-topics", is_flag=True,
              help="Do not create missing topics first (for credentials without admin rights).")
def publish_command(config_path: Path | None, as_json: bool, source: str, topic: str | None,
                    rate: float | None, timeout: int, no_create_topics: bool) -> None:
    """Validate events from FILE and publish the valid ones; report the invalid ones.

    Each line is checked against the event schema before anything is sent. An invalid line
    (bad JSON, or a field that does not fit) is reported with its line number and the field
    at fault and is not sent; the other lines still are. Blank lines are skipped. Records are
    keyed by the entity (appointment, intake, check) so one entity's events stay in order.

    Exit code: 0 all sent, 1 some line rejected or delivery failed, 2 bad configuration, 4
    Kafka could not be reached to create the topics, 5 it refused our credentials or TLS
    handshake (nothing was sent in either case).
    """
    settings = settings_from(config_path)
    limiter = TokenBucket(rate) if rate else None
    provider = configure_tracing()
    try:
        try:
            publisher = EventPublisher(
                settings, topic=topic, telemetry=Telemetry(provider),
                create_topics=not no_create_topics, delivery_timeout_ms=timeout,
                producer_factory=producer_from)
        except DeliveryTimeoutTooShort as exc:  # said in the terms of this command
            raise ConfigError(f"--timeout must be longer than the producer's linger.ms "
                              f"({exc.linger_ms:g} ms), which a record may wait for its batch"
                              ) from exc
        with ExitStack() as stack:
            handle = _open(source, stack)
            stack.enter_context(publisher)
            lines: Iterable[bytes] = handle
            if sys.stdout.isatty() and not as_json:
                lines = _with_progress(handle, stack)
            publisher.publish_lines(lines, limiter=limiter)
            summary = publisher.flush()
    except (TopicLayoutError, KafkaUnreachable) as exc:
        click.echo(f"clinic-events: {exc}", err=True)
        if as_json:  # scripts parse stdout: an empty one is no answer
            click.echo(json.dumps({"error": str(exc)}))
        sys.exit(layout_exit_code(exc))
    except ConfigError as exc:  # e.g. a --topic that is no main topic: exit 2 as usual
        if as_json:
            click.echo(json.dumps({"error": str(exc)}))
        raise
    finally:
        shutdown_providers(provider)
    if summary.sent + summary.rejected + summary.failed == 0:  # exit 0: nothing failed
        click.echo(f"clinic-events: warning: no events in {'stdin' if source == '-' else source}"
                   " (empty, or blank lines only)", err=True)
    if as_json:
        click.echo(json.dumps(summary.to_json()))
    else:
        _print_summary(summary, publisher.topic)
    sys.exit(0 if summary.ok else 1)


def _open(source: str, stack: ExitStack) -> BinaryIO:
    if source == "-":
        return sys.stdin.buffer
    try:
        return stack.enter_context(Path(source).open("rb"))
    except OSError as exc:
        raise click.BadParameter(str(exc), param_hint="--file") from exc


def _with_progress(handle: BinaryIO, stack: ExitStack) -> Iterator[bytes]:
    """Lines of ``handle``, advancing a progress bar by bytes read (total unknown for stdin)."""
    try:
        total: int | None = os.fstat(handle.fileno()).st_size or None
    except (OSError, ValueError):
        total = None
    progress = stack.enter_context(Progress(
        TextColumn("publishing"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
        console=Console(), transient=True))
    task = progress.add_task("publishing", total=total)

    def lines() -> Iterator[bytes]:
        for line in handle:
            progress.advance(task, len(line))
            yield line

    return lines()


def _print_summary(summary: PublishSummary, topic: str) -> None:
    console = Console()
    console.print(Text(f"published to {topic}"), soft_wrap=True)
    counts = Table()
    for column in ("sent", "rejected", "failed"):
        counts.add_column(column, justify="right")
    counts.add_row(str(summary.sent), f"[yellow]{summary.rejected}" if summary.rejected else "0",
                   f"[red]{summary.failed}" if summary.failed else "0")
    console.print(counts)
    if summary.errors:
        errors = Table(title="rejected lines (not sent)", title_justify="left")
        errors.add_column("line", justify="right")
        errors.add_column("field")
        errors.add_column("problem")
        for error in summary.errors[:_MAX_SHOWN_ERRORS]:
            errors.add_row(str(error.line), Text(error.field or "-"), Text(error.message))
        console.print(errors)
        if len(summary.errors) > _MAX_SHOWN_ERRORS:
            console.print(f"... and {len(summary.errors) - _MAX_SHOWN_ERRORS} more "
                          "(--json lists all)")
    for reason, count in summary.delivery_errors.items():
        console.print(f"[red]{count} delivery failure(s):[/red] {reason}", markup=True)
