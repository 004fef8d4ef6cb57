"""``clinic-events dlq list | show | replay``: inspect and replay the dead-letter topic.

``list`` groups records by error class and event type; ``show`` prints records with their
provenance and the decoded event, patient-identifying fields masked unless ``--reveal``;
``replay`` republishes records to their original topic (or ``--to``) exactly once, resumably,
under its own consumer group, and writes an audit record. Every command takes ``--json`` for
scripts; people get ``rich`` tables and, while replaying, a progress bar on stderr.

The replay group's committed position means "examined": a record that a run's filters did not
match is passed as well and a later run will not look at it again. Use ``--group NAME`` for
an independent pass over the whole DLQ.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar

import click
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from consumer.cli.options import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    Rate,
    config_option,
    json_option,
    settings_from,
)
from consumer.errors import KafkaUnreachable
from consumer.events.codec import EVENT_TYPES
from consumer.kafka.access import KafkaAccessRefused
from consumer.kafka.dlq_io import (
    Decision,
    DlqIoError,
    ReplayRequest,
    ReplayRun,
    replay,
    scan,
)
from consumer.observability.printable import printable
from consumer.observability.telemetry import (
    Telemetry,
    configure_tracing,
    exports,
    shutdown_providers,
)
from consumer.ops.dlq.model import (
    DEFAULT_MAX_REPLAYS,
    UNDECODABLE,
    DlqFilter,
    DlqFilterError,
    DlqRecord,
    DlqSummary,
    Replay,
    iso,
    key_text,
    parse_time_ms,
    record_view,
)
from retry_topics.naming import audit_topic_name, dlq_topic_name

F = TypeVar("F", bound=Callable[..., Any])

#: Columns rich is given when stdout is not a terminal. Rich would assume 80 there and fold
#: event ids and error classes across lines, breaking grep and copy-paste of piped output; a
#: table only takes the width its content needs.
PIPED_WIDTH = 10_000

_FILTER_OPTIONS = (
    click.option("--error-class", "error_classes", multiple=True,
                 help="Error class, dotted path or last part (repeatable)."),
    click.option("--event-type", "event_types", multiple=True,
                 type=click.Choice([*EVENT_TYPES, UNDECODABLE]), metavar="TYPE",
                 help=f"Event type (repeatable): {', '.join(EVENT_TYPES)}, or '{UNDECODABLE}'."),
    click.option("--event-id", "event_ids", multiple=True, help="Event id (repeatable)."),
    click.option("--since", help="DLQ record time from: ISO 8601 or a duration ago (2h)."),
    click.option("--until", help="DLQ record time up to: ISO 8601 or a duration ago (30m)."),
    click.option("--partition", type=click.IntRange(min=0), help="DLQ partition only."),
    click.option("--from-offset", type=click.IntRange(min=0),
                 help="First DLQ offset (inclusive; needs --partition)."),
    click.option("--to-offset", type=click.IntRange(min=0),
                 help="Last DLQ offset (inclusive; needs --partition)."),
)


def _filter_options(func: F) -> F:
    for option in reversed(_FILTER_OPTIONS):
        func = option(func)
    return func


def _filter(options: dict[str, Any]) -> DlqFilter:
    """The filter from the options; a bad one is a usage error (exit code 2)."""
    now_ms = time.time_ns() // 1_000_000
    try:
        return DlqFilter(
            error_classes=frozenset(options["error_classes"]),
            event_types=frozenset(options["event_types"]),
            event_ids=frozenset(options["event_ids"]),
            since_ms=parse_time_ms(options["since"], now_ms) if options["since"] else None,
            until_ms=parse_time_ms(options["until"], now_ms) if options["until"] else None,
            partition=options["partition"], from_offset=options["from_offset"],
            to_offset=options["to_offset"])
    except DlqFilterError as exc:
        raise click.UsageError(str(exc)) from exc


@contextlib.contextmanager
def _kafka_errors(as_json: bool) -> Iterator[None]:
    """Kafka failures become one line on stderr and exit code 1, or 4 when Kafka cannot be
    reached, 5 when it refuses our credentials or TLS handshake (as for ``lag``); a filter
    or target the topics cannot satisfy (a partition the
    DLQ lacks, a missing --to topic) is a usage error, exit code 2, like a bad option. With
    --json, a failure puts ``{"error": ...}`` on stdout too: scripts parse it, and an empty
    one is no answer.
    """
    try:
        yield
    except DlqFilterError as exc:
        raise click.UsageError(str(exc)) from exc
    except KafkaAccessRefused as exc:  # before KafkaUnreachable, its base
        _fail(as_json, str(exc), EXIT_REFUSED)
    except KafkaUnreachable as exc:
        _fail(as_json, str(exc), EXIT_UNREACHABLE)
    except DlqIoError as exc:
        _fail(as_json, str(exc), 1)


def _fail(as_json: bool, message: str, code: int) -> NoReturn:
    click.echo(f"clinic-events: dlq: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"error": message}))
    sys.exit(code)


def _cell(value: object) -> Text:
    """A table cell: plain text (no rich markup) with control characters escaped, since DLQ
    headers and keys may hold any bytes and must never reach the terminal raw."""
    return Text(printable(str(value)))


def _printable_json(value: Any) -> Any:
    """A JSON value whose strings are safe for a terminal (JSON escapes C0 controls only)."""
    if isinstance(value, dict):
        return {printable(str(k)): _printable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable_json(inner) for inner in value]
    return printable(value) if isinstance(value, str) else value


def _table(title: str, *columns: str, **options: Any) -> Table:
    """A table that folds long values instead of cutting them (ids must stay copyable)."""
    table = Table(title=title, title_justify="left", **options)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def table_console() -> Console:
    """A console for stdout: a terminal's own width, else one wide enough to wrap no id."""
    console = Console()
    if not console.is_terminal:
        console.width = PIPED_WIDTH
    return console


def _echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


@click.group("dlq")
def dlq_group() -> None:
    """Inspect and replay the dead-letter topic (<main>.dlq)."""


@dlq_group.command("list")
@config_option
@json_option
@_filter_options
def list_command(config_path: Path | None, as_json: bool, **options: Any) -> None:
    """Count DLQ records by error class and event type, with the oldest and newest.

    Exit code: 0 done; 1 failed (no DLQ topic, reading it failed); 2 invalid options (a
    --partition the DLQ lacks) or configuration; 4 Kafka could not be reached (no answer
    within 30 s); 5 Kafka refused our credentials or TLS. With --json, exit 1, 4 and 5
    print {"error": ...} too.
    """
    settings = settings_from(config_path)
    topic, summary = dlq_topic_name(settings.topics.main), DlqSummary()
    with _kafka_errors(as_json):
        for record in scan(settings, topic, _filter(options)):
            summary.add(record)
    groups = [{"error_class": g.error_class, "event_type": g.event_type, "count": g.count,
               "oldest": iso(g.oldest_ms), "newest": iso(g.newest_ms)} for g in summary.groups()]
    if as_json:
        _echo_json({"dlq_topic": topic, "total": summary.total, "groups": groups})
        return
    table = _table(f"{topic}: {summary.total} records", "error class", "event type", "count",
                   "oldest", "newest")
    for group in groups:
        table.add_row(*(_cell(value) for value in group.values()))
    table_console().print(table)


@dlq_group.command("show")
@config_option
@json_option
@_filter_options
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Show at most N records.")
@click.option("--reveal", is_flag=True,
              help="Show patient-identifying fields and raw bytes unmasked (PHI!).")
def show_command(config_path: Path | None, as_json: bool, limit: int, reveal: bool,
                 **options: Any) -> None:
    """Print DLQ records with their provenance and the decoded event (PHI masked).

    A key that is not printable UTF-8 is shown as hex; control characters in headers and
    events are shown escaped. --json gives "key" (text, if valid UTF-8) and "key_hex".

    Exit code: 0 done; 1 failed (no DLQ topic, reading it failed); 2 invalid options (a
    --partition the DLQ lacks) or configuration; 4 Kafka could not be reached (no answer
    within 30 s); 5 Kafka refused our credentials or TLS. With --json, exit 1, 4 and 5
    print {"error": ...} too.
    """
    settings = settings_from(config_path)
    topic = dlq_topic_name(settings.topics.main)
    flt = _filter(options)
    with _kafka_errors(as_json), contextlib.closing(scan(settings, topic, flt)) as found:
        records = list(itertools.islice(found, limit))
    views = [record_view(record, reveal=reveal) for record in records]
    if as_json:
        _echo_json({"dlq_topic": topic, "revealed": reveal, "records": views})
        return
    console = table_console()
    for record, view in zip(records, views, strict=True):
        body = view.pop("event", None) or view.pop("undecodable", None)
        view["key"] = key_text(record.key)  # the exact bytes in hex if not printable text
        table = _table(f"{topic} partition {view['dlq_partition']} offset {view['dlq_offset']}",
                       "header", "value", show_header=False, box=None)
        for name, value in view.items():
            if name not in ("dlq_partition", "dlq_offset", "key_hex") and value is not None:
                table.add_row(name, _cell(json.dumps(value) if isinstance(value, dict)
                                          else value))
        console.print(table)
        console.print_json(data=_printable_json(body))
    if not views:
        console.print(f"no matching records in {topic}")


@dlq_group.command("replay")
@config_option
@json_option
@_filter_options
@click.option("--to", "target", help="Republish to TOPIC instead of each record's original "
              "(an existing topic; neither the DLQ nor the audit topic).")
@click.option("--group", help="Consumer group keeping the replay position "
              "[default: <kafka.group_id>.dlq-replay]; a new one makes an independent pass.")
@click.option("--dry-run", is_flag=True, help="Print what would be replayed; send nothing.")
@click.option("--rate", type=Rate(), help="Republish at most N records per second.")
@click.option("--max-replays", type=click.IntRange(min=1), default=DEFAULT_MAX_REPLAYS,
              show_default=True, help="Skip records already replayed this many times.")
@click.option("--force", is_flag=True,
              help="Replay events the dedup store records as delivered (marked as forced).")
@click.option("--actor", help="Who asks for this replay (ticket, name), for the audit record.")
def replay_command(config_path: Path | None, as_json: bool, target: str | None,
                   group: str | None, dry_run: bool, rate: float | None, max_replays: int,
                   force: bool, actor: str | None, **options: Any) -> None:
    """Republish DLQ records to their original topic, resumably and exactly once.

    Reads from the replay group's committed position up to the DLQ end offsets seen at start,
    then exits. The position means "examined": records the filters did not match are passed
    too (so are offsets before --from-offset), and the summary says how many; --group NAME
    makes an independent pass. Records
    replayed --max-replays times, and (unless --force) events already delivered
    according to the dedup store, are skipped and reported. Writes an audit record to
    <main>.audit unless --dry-run.

    SIGINT (Ctrl-C) or SIGTERM stops the run after the record in progress: what was
    republished is committed, the audit record and the summary say "interrupted", and a
    replay run again continues where it stopped. A second signal stops at once (the open
    transaction is aborted, so nothing is republished twice).

    \b
    Exit code: 0 done; 1 failed (no DLQ topic, republishing or the audit record failed);
    2 invalid options (--to a missing topic, the DLQ or the audit topic; a --partition
    the DLQ lacks) or configuration; 4 Kafka could not be reached (no answer within 30 s);
    5 Kafka refused our credentials or TLS; 130 interrupted by SIGINT, 143 by SIGTERM (128 +
    the signal number). With --json, exit 1, 4 and 5 print {"error": ...} too.
    """
    settings = settings_from(config_path)
    main = settings.topics.main
    try:  # refused before Kafka is asked: a bad --to is a usage error
        request = ReplayRequest(
            dlq_topic=dlq_topic_name(main), audit_topic=audit_topic_name(main),
            group=group or f"{settings.kafka.group_id}.dlq-replay", filter=_filter(options),
            target=target, max_replays=max_replays, force=force, dry_run=dry_run, rate=rate,
            actor=actor)
    except DlqFilterError as exc:
        raise click.UsageError(str(exc)) from exc
    rows: list[dict[str, Any]] = []

    def note(record: DlqRecord, decision: Decision) -> None:
        progress.advance(task)
        if decision is not None:
            rows.append({"dlq_partition": record.partition, "dlq_offset": record.offset,
                         "event_id": record.event_id, "event_type": record.event_type,
                         "error_class": record.error_class,
                         "replay_count": record.headers.replay_count or 0,
                         **({"action": "replay", "topic": decision.topic}
                            if isinstance(decision, Replay) else
                            {"action": "skip", "reason": decision.reason,
                             "detail": decision.detail})})

    errors = Console(stderr=True)  # a progress bar for people only: piped, it is noise
    progress = Progress(console=errors, disable=as_json or not errors.is_terminal,
                        transient=True)
    task = progress.add_task("dry run" if dry_run else "replaying", total=None)
    run = ReplayRun()
    provider = configure_tracing()
    # Spans exported nowhere would only re-parent the replayed records onto spans nobody can
    # see: without an exporter the records keep the trace context they had in the DLQ.
    telemetry = Telemetry(provider if exports("OTEL_TRACES_EXPORTER") else NoOpTracerProvider())
    try:
        with _stop_on_signals() as received:
            try:
                with _kafka_errors(as_json), progress:
                    replay(settings, request, on_record=note, run=run,
                           on_start=lambda total: progress.update(task, total=total),
                           stop_requested=lambda: bool(received), telemetry=telemetry)
            except KeyboardInterrupt:  # a second signal, or Ctrl-C before the handlers were set
                run.outcome = "interrupted"
        if run.outcome != "interrupted":
            _print_replay(request, run, rows, as_json)
            return
        signum = received[0] if received else signal.SIGINT
        done = (f"{run.tally.examined} record(s) examined" if dry_run else
                f"{run.tally.replayed} record(s) replayed and committed")
        click.echo(f"clinic-events: dlq replay interrupted after {done} "
                   f"({signal.Signals(signum).name}); what was committed stays committed, "
                   "run it again to continue", err=True)
        _print_replay(request, run, rows, as_json, stopped_by=signal.Signals(signum).name)
        sys.exit(128 + signum)
    finally:
        _export_spans(provider)


def _export_spans(provider: TracerProvider) -> None:
    """Export the replay's last spans, after its summary: a collector that does not answer
    holds the exit up to shutdown_providers' bound, and a signal meanwhile (the operator's
    second Ctrl-C) gives up on them rather than on the summary or the exit code."""
    with contextlib.suppress(KeyboardInterrupt):
        shutdown_providers(provider)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
    """While the block runs, SIGINT and SIGTERM ask the replay to stop after the record in
    progress (the list yielded collects them); a second one stops it at once by raising
    KeyboardInterrupt. The previous handlers are restored afterwards.

    Installed explicitly, as ``run`` does: without them SIGTERM ends the process before it
    writes the audit record and summary, and a replay started in the background by a
    non-interactive shell, which ignores SIGINT, would not stop on SIGINT at all.
    """
    received: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received:
            click.echo(f"clinic-events: {name} received again: stopping at once (the open "
                       "transaction is aborted)", err=True)
            raise KeyboardInterrupt
        received.append(signum)
        click.echo(f"clinic-events: {name} received, stopping after the record in progress "
                   "(send it again to stop at once)", err=True)

    previous = {signum: signal.signal(signum, request_stop)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _print_replay(request: ReplayRequest, run: ReplayRun, rows: list[dict[str, Any]],
                  as_json: bool, stopped_by: str | None = None) -> None:
    counts = run.tally.as_dict()
    summary = {"outcome": run.outcome, "stopped_by": stopped_by, "dry_run": request.dry_run,
               "dlq_topic": request.dlq_topic, "group": request.group,
               "target_topic": request.target, "filters": request.filter.describe(),
               "counts": counts,
               "dlq_offsets": [{"partition": p, "from": first, "to": last}
                               for p, (first, last) in sorted(run.offsets.items())],
               "audit_topic": request.audit_topic if run.audit is not None else None,
               "passed_over_note": passed_over_note(request, counts["not_matching"])}
    if as_json:
        _echo_json({**summary, "records": rows})
        return
    console = table_console()
    shown = rows if request.dry_run else [row for row in rows if row["action"] == "skip"]
    if shown:
        table = _table("would do" if request.dry_run else "skipped", "partition", "offset",
                       "event id", "event type", "error class", "replays", "action")
        for row in shown:
            action = (f"replay -> {row['topic']}" if row["action"] == "replay"
                      else f"skip: {row['reason']}")
            table.add_row(*(_cell(row[k]) for k in ("dlq_partition", "dlq_offset", "event_id",
                          "event_type", "error_class", "replay_count")), _cell(action))
        console.print(table)
    verb = "would replay" if request.dry_run else "replayed"
    skipped = ", ".join(f"{n} {reason}" for reason, n in counts["skipped"].items()) or "none"
    stopped = f"interrupted ({stopped_by or 'SIGINT'}): " if run.outcome == "interrupted" else ""
    console.print(f"{stopped}{verb} {counts['replayed']} record(s); skipped: {skipped}; "
                  f"examined {counts['examined']} ({counts['not_matching']} not matching) "
                  f"in {request.dlq_topic}, group {request.group}", markup=False)
    if summary["passed_over_note"]:
        console.print(summary["passed_over_note"], markup=False)
    if run.audit is not None:
        console.print(f"audit record written to {request.audit_topic}", markup=False)
    elif not request.dry_run:
        console.print(f"no audit record was written to {request.audit_topic}", markup=False)


def passed_over_note(request: ReplayRequest, not_matching: int) -> str | None:
    """Why records the filters did not match will not come back (None if there were none):
    the group's position means "examined", so only a fresh --group sees them again."""
    if not not_matching:
        return None
    if request.dry_run:
        return (f"a replay with these filters passes over the {not_matching} record(s) not "
                f"matching them: group {request.group} would not examine them again (a fresh "
                "--group NAME would)")
    return (f"{not_matching} record(s) not matching the filters were passed over: group "
            f"{request.group} will not examine them again; replay them with a fresh "
            "--group NAME")
