"""``clinic-events dlq list | show | replay | discard``: review and resolve dead letters.

A dead letter is a work item, open until it is replayed or discarded; the DLQ ledger
(``<main>.dlq-ledger``) records which. ``list`` groups open records by error class and event
type; ``show`` prints records with their provenance and the decoded event,
patient-identifying fields masked unless ``--reveal`` (both take ``--include-resolved`` to
see resolved records too, with their status); ``replay`` republishes matching open records
to their original topic (or ``--to``) exactly once each, and ``discard`` marks them resolved
with a ``--reason``, both audited. Every command takes ``--json`` for scripts; people get
``rich`` tables and, while replaying, a progress bar on stderr.

A filtered replay passes over nothing: the records it did not match stay open, and the next
replay, filtered or not, replays them.
"""

from __future__ import annotations

import contextlib
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
from consumer.errors import DedupStoreError, KafkaUnreachable
from consumer.events.codec import EVENT_TYPES
from consumer.kafka.access import KafkaAccessRefused
from consumer.kafka.dlq_io import (
    Decision,
    DiscardRequest,
    DlqIoError,
    ReplayRequest,
    ReplayRun,
    discard,
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
    AlreadyResolved,
    Discard,
    DlqFilter,
    DlqFilterError,
    DlqRecord,
    DlqSummary,
    Replay,
    Skip,
    iso,
    key_text,
    parse_time_ms,
    record_view,
)
from retry_topics.naming import audit_topic_name, dlq_ledger_topic_name, dlq_topic_name

F = TypeVar("F", bound=Callable[..., Any])

#: Columns rich is given when stdout is not a terminal. Rich would assume 80 there and fold
#: event ids and error classes across lines, breaking grep and copy-paste of piped output; a
#: table only takes the width its content needs.
PIPED_WIDTH = 10_000
#: Held events ``dlq list`` names under its table; the rest are counted.
PARKED_HEADS_SHOWN = 5

_FILTER_OPTIONS = (
    click.option("--error-class", "error_classes", multiple=True,
                 help="Error class, dotted path or last part (repeatable); 'parked': "
                      "dead letters parked behind another event."),
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


def _include_resolved_option(func: F) -> F:
    return click.option("--include-resolved", is_flag=True,
                        help="Also records already replayed or discarded (with a status).")(func)


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
    reached, 5 when it refuses our credentials or TLS handshake (as for ``lag``); so does a
    dedup store that fails a replay's lookup (exit code 1); a filter
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
    except (DlqIoError, DedupStoreError) as exc:
        _fail(as_json, str(exc), 1)


def _fail(as_json: bool, message: str, code: int) -> NoReturn:
    click.echo(f"clinic-events: dlq: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"error": message}))
    sys.exit(code)


def _cell(value: object) -> Text:
    """A table cell: plain text (no rich markup) with control characters escaped, since DLQ
    headers and keys may hold any bytes and must never reach the terminal raw; ``-`` for
    what a record does not have (an undecodable one's event id)."""
    return Text("-" if value is None else printable(str(value)))


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
    """Review, replay and discard the dead-letter topic (<main>.dlq)."""


@dlq_group.command("list")
@config_option
@json_option
@_filter_options
@_include_resolved_option
def list_command(config_path: Path | None, as_json: bool, include_resolved: bool,
                 **options: Any) -> None:
    """Count open DLQ records by error class and event type, with the oldest and newest.

    Open: neither replayed nor discarded. --include-resolved counts resolved records too
    (an "open" column says how many of each group are still open). Dead letters parked
    behind a held event of their key (DLQ reason "parked") are grouped as "parked (behind
    N heads)", and the heads are named below the table ("parked_behind" in --json).

    Exit code: 0 done; 1 failed (no DLQ topic, reading it failed); 2 invalid options (a
    --partition the DLQ lacks) or configuration; 4 Kafka could not be reached (no answer
    within 30 s); 5 Kafka refused our credentials or TLS. With --json, exit 1, 4 and 5
    print {"error": ...} too.
    """
    settings = settings_from(config_path)
    main = settings.topics.main
    topic, summary = dlq_topic_name(main), DlqSummary(include_resolved=include_resolved)
    with _kafka_errors(as_json):
        for record in scan(settings, topic, dlq_ledger_topic_name(main), _filter(options)):
            summary.add(record)
    found = summary.groups()
    groups = [{"error_class": g.error_class, "event_type": g.event_type, "count": g.count,
               "open": g.open, "oldest": iso(g.oldest_ms), "newest": iso(g.newest_ms),
               "parked_behind": sorted(g.parked_behind)} for g in found]
    left_out = summary.resolved_left_out
    held, discarded = summary.heads()
    if as_json:
        _echo_json({"dlq_topic": topic, "include_resolved": include_resolved,
                    "total": summary.total, "statuses": dict(sorted(summary.statuses.items())),
                    "resolved_left_out": left_out, "groups": groups,
                    "discarded_heads": discarded})
        return
    what = "records" if include_resolved else "open records"
    columns = ["error class", "event type", "count", "open", "oldest", "newest"]
    if not include_resolved:
        columns.remove("open")
    table = _table(f"{topic}: {summary.total} {what}", *columns)
    cells = ["event_type", "count", *(["open"] if include_resolved else []), "oldest", "newest"]
    for group, row in zip(found, groups, strict=True):
        table.add_row(_cell(group.label), *(_cell(row[name]) for name in cells))
    console = table_console()
    console.print(table)
    if held:
        console.print(f"parked: dead letters waiting behind {len(held)} held event(s): "
                      f"{_some(held)}; replaying a head replays its parked followers after it "
                      "(dlq show --event-id <head>)", markup=False)
    if discarded:
        console.print(f"parked: dead letters behind {len(discarded)} discarded event(s): "
                      f"{_some(discarded)}; the first follower of each is its key's head now: "
                      "replay or discard them (--error-class parked)", markup=False)
    if left_out:
        console.print(f"{left_out} resolved record(s) (replayed or discarded) not counted; "
                      "--include-resolved counts them", markup=False)


def _some(ids: list[str]) -> str:
    """The first ``PARKED_HEADS_SHOWN`` ids, and how many more."""
    more = len(ids) - PARKED_HEADS_SHOWN
    return ", ".join(ids[:PARKED_HEADS_SHOWN]) + (f" and {more} more" if more > 0 else "")


@dlq_group.command("show")
@config_option
@json_option
@_filter_options
@_include_resolved_option
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Show at most N records.")
@click.option("--reveal", is_flag=True,
              help="Show patient-identifying fields and raw bytes unmasked (PHI!).")
def show_command(config_path: Path | None, as_json: bool, include_resolved: bool, limit: int,
                 reveal: bool, **options: Any) -> None:
    """Print open DLQ records with their provenance and the decoded event (PHI masked).

    --include-resolved shows replayed and discarded records too; each record's "status"
    says which (open, replayed, discarded) and "resolution" how, when, by whom and why.
    A parked dead letter says which event it waits behind ("parked_behind"). When more
    records match than --limit, it says how many ("total" in --json).
    A key that is not printable UTF-8 is shown as hex; control characters in headers and
    events are shown escaped. --json gives "key" (text, if valid UTF-8) and "key_hex".

    Exit code: 0 done; 1 failed (no DLQ topic, reading it failed); 2 invalid options (a
    --partition the DLQ lacks) or configuration; 4 Kafka could not be reached (no answer
    within 30 s); 5 Kafka refused our credentials or TLS. With --json, exit 1, 4 and 5
    print {"error": ...} too.
    """
    settings = settings_from(config_path)
    main = settings.topics.main
    topic = dlq_topic_name(main)
    flt = _filter(options)
    records: list[DlqRecord] = []
    total = 0  # every matching record is counted, so a cut at --limit can say so
    with _kafka_errors(as_json), \
            contextlib.closing(scan(settings, topic, dlq_ledger_topic_name(main), flt)) as found:
        for record in found:
            if include_resolved or record.resolution is None:
                total += 1
                if len(records) < limit:
                    records.append(record)
    views = [record_view(record, reveal=reveal) for record in records]
    if as_json:
        _echo_json({"dlq_topic": topic, "revealed": reveal,
                    "include_resolved": include_resolved, "total": total,
                    "shown": len(views), "records": views})
        return
    console = table_console()
    for record, view in zip(records, views, strict=True):
        body = view.pop("event", None) or view.pop("undecodable", None)
        view["key"] = key_text(record.key)  # the exact bytes in hex if not printable text
        table = _table(f"{topic} partition {view['dlq_partition']} offset {view['dlq_offset']}",
                       "header", "value", show_header=False, box=None)
        for name, value in view.items():
            if name == "parked_behind" and value is not None:
                table.add_row("parked behind", _cell(
                    f"{value} (waits for that event; replaying it replays this one after it)"))
            elif name not in ("dlq_partition", "dlq_offset", "key_hex") and value is not None:
                table.add_row(name, _cell(json.dumps(value) if isinstance(value, dict)
                                          else value))
        console.print(table)
        console.print_json(data=_printable_json(body))
    what = f"matching {'' if include_resolved else 'open '}records"
    if not views:
        console.print(f"no {what} in {topic}")
    elif total > len(views):
        console.print(f"showing {len(views)} of {total} {what} in {topic}; --limit {total} "
                      "shows them all", markup=False)


@dlq_group.command("replay")
@config_option
@json_option
@_filter_options
@click.option("--to", "target", help="Republish to TOPIC instead of each record's original "
              "(an existing topic; not the DLQ, its ledger or the audit topic).")
@click.option("--dry-run", is_flag=True, help="Print what would be replayed; send nothing.")
@click.option("--rate", type=Rate(), help="Republish at most N records per second.")
@click.option("--max-replays", type=click.IntRange(min=1), default=DEFAULT_MAX_REPLAYS,
              show_default=True, help="Leave open the records of events replayed this "
              "many times already (dead-lettered again each time), unless --force.")
@click.option("--force", is_flag=True,
              help="Replay open records also when the dedup store records the event as "
                   "delivered (marked as forced) or it reached --max-replays.")
@click.option("--actor", help="Who asks for this replay (ticket, name), for the audit record.")
def replay_command(config_path: Path | None, as_json: bool, target: str | None,
                   dry_run: bool, rate: float | None, max_replays: int, force: bool,
                   actor: str | None, **options: Any) -> None:
    """Republish open DLQ records to their original topic, exactly once each.

    Examines the DLQ up to its end offsets seen at start and replays every matching record
    that is still open (neither replayed nor discarded), then exits. Each replayed record is
    marked resolved in <main>.dlq-ledger in the same transaction as its copy, so a filtered
    replay passes over nothing: a later replay, filtered or not, replays every record still
    open, and none twice, also when replays are interrupted or run side by side (a second
    run takes over and the first stops with exit 1). The dead letters parked behind a
    replayed event (its key's next events, held in the DLQ with it) are replayed right
    after it, whatever the filters. Records of events replayed
    --max-replays times, and (unless --force) events already delivered according to the
    dedup store, are left open and reported. Writes an audit record to <main>.audit unless
    --dry-run.

    SIGINT (Ctrl-C) or SIGTERM stops the run after the record in progress: what was
    republished is committed, the audit record and the summary say "interrupted", and a
    replay run again continues with the records still open. A second signal stops at once
    (the open transaction is aborted, so nothing is republished twice).

    \b
    Exit code: 0 done; 1 failed (no DLQ, ledger or audit topic, republishing, the audit
    record or the dedup store failed, another replay or discard took over); 2 invalid
    options (--to a missing topic, the DLQ, its ledger or the audit topic; a --partition
    the DLQ lacks) or configuration; 4 Kafka could not be reached (no answer within 30 s);
    5 Kafka refused our credentials or TLS; 130 interrupted by SIGINT, 143 by SIGTERM (128 +
    the signal number). With --json, exit 1, 4 and 5 print {"error": ...} too.
    """
    settings = settings_from(config_path)
    main = settings.topics.main
    try:  # refused before Kafka is asked: a bad --to is a usage error
        request = ReplayRequest(
            dlq_topic=dlq_topic_name(main), ledger_topic=dlq_ledger_topic_name(main),
            audit_topic=audit_topic_name(main), filter=_filter(options), target=target,
            max_replays=max_replays, force=force, dry_run=dry_run, rate=rate, actor=actor)
    except DlqFilterError as exc:
        raise click.UsageError(str(exc)) from exc
    provider = configure_tracing()
    # Spans exported nowhere would only re-parent the replayed records onto spans nobody can
    # see: without an exporter the records keep the trace context they had in the DLQ.
    telemetry = Telemetry(provider if exports("OTEL_TRACES_EXPORTER") else NoOpTracerProvider())
    try:
        _drive(request, as_json, lambda **hooks: replay(settings, request, telemetry=telemetry,
                                                        **hooks))
    finally:
        _export_spans(provider)


@dlq_group.command("discard")
@config_option
@json_option
@_filter_options
@click.option("--reason", required=True,
              help="Why the records need no replay (kept with each record and audited).")
@click.option("--all", "everything", is_flag=True,
              help="Discard every open record (needed when no filter is given).")
@click.option("--dry-run", is_flag=True, help="Print what would be discarded; change nothing.")
@click.option("--actor", help="Who asks for this discard (ticket, name), for the audit record.")
def discard_command(config_path: Path | None, as_json: bool, reason: str, everything: bool,
                    dry_run: bool, actor: str | None, **options: Any) -> None:
    """Mark open DLQ records resolved without replaying them, audited.

    Takes the filters of replay; without any, --all is required. Each discarded record is
    marked in <main>.dlq-ledger with who, when and --reason, so no replay sends it; records
    already replayed or discarded are counted, not changed. Writes an audit record to
    <main>.audit unless --dry-run. Stops on SIGINT or SIGTERM as replay does.

    \b
    Exit code: 0 done; 1 failed (no DLQ, ledger or audit topic, writing failed, another
    replay or discard took over); 2 invalid options (no --reason, no filter without --all,
    a --partition the DLQ lacks) or configuration; 4 Kafka could not be reached (no answer
    within 30 s); 5 Kafka refused our credentials or TLS; 130 interrupted by SIGINT, 143
    by SIGTERM. With --json, exit 1, 4 and 5 print {"error": ...} too.
    """
    settings = settings_from(config_path)
    main = settings.topics.main
    flt = _filter(options)
    if not flt.describe() and not everything:
        raise click.UsageError("discard needs a filter (--event-id, --error-class, ...); "
                               "--all discards every open record")
    try:
        request = DiscardRequest(
            dlq_topic=dlq_topic_name(main), ledger_topic=dlq_ledger_topic_name(main),
            audit_topic=audit_topic_name(main), filter=flt, reason=reason, dry_run=dry_run,
            actor=actor)
    except DlqFilterError as exc:
        raise click.UsageError(str(exc)) from exc
    _drive(request, as_json, lambda **hooks: discard(settings, request, **hooks))


def _drive(request: ReplayRequest | DiscardRequest, as_json: bool,
           start: Callable[..., ReplayRun]) -> None:
    """Run a replay or discard (``start`` with the hooks) under the signal handlers, with a
    progress bar for people, then print its summary; an interrupted run exits 128 + signal."""
    rows: list[dict[str, Any]] = []

    def note(record: DlqRecord, decision: Decision) -> None:
        progress.advance(task)
        if decision is not None:
            rows.append({"dlq_partition": record.partition, "dlq_offset": record.offset,
                         "event_id": record.event_id, "event_type": record.event_type,
                         "error_class": record.error_class,
                         "replay_count": record.headers.replay_count or 0,
                         **_action(decision)})

    errors = Console(stderr=True)  # a progress bar for people only: piped, it is noise
    progress = Progress(console=errors, disable=as_json or not errors.is_terminal,
                        transient=True)
    verb = "replaying" if request.action == "replay" else "discarding"
    task = progress.add_task("dry run" if request.dry_run else verb, total=None)
    run = ReplayRun()
    with _stop_on_signals() as received:
        try:
            with _kafka_errors(as_json), progress:
                start(on_record=note, run=run, stop_requested=lambda: bool(received),
                      on_start=lambda total: progress.update(task, total=total))
        except KeyboardInterrupt:  # a second signal, or Ctrl-C before the handlers were set
            run.outcome = "interrupted"
    if run.outcome != "interrupted":
        _print_run(request, run, rows, as_json)
        return
    signum = received[0] if received else signal.SIGINT
    done = (f"{run.tally.examined} record(s) examined" if request.dry_run else
            f"{run.tally.replayed} record(s) replayed and committed"
            if request.action == "replay" else
            f"{run.tally.discarded} record(s) discarded and committed")
    click.echo(f"clinic-events: dlq {request.action} interrupted after {done} "
               f"({signal.Signals(signum).name}); what was committed stays committed, "
               "run it again to continue", err=True)
    _print_run(request, run, rows, as_json, stopped_by=signal.Signals(signum).name)
    sys.exit(128 + signum)


def _action(decision: Replay | Skip | Discard | AlreadyResolved) -> dict[str, Any]:
    """What a run did with one matching record, for its summary's records."""
    if isinstance(decision, Replay):
        return {"action": "replay", "topic": decision.topic,
                **({"parked_behind": decision.follows} if decision.follows else {})}
    if isinstance(decision, Discard):
        return {"action": "discard"}
    if isinstance(decision, AlreadyResolved):
        return {"action": "already-resolved", "status": decision.resolution.status}
    return {"action": "skip", "reason": decision.reason, "detail": decision.detail}


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


def _print_run(request: ReplayRequest | DiscardRequest, run: ReplayRun,
               rows: list[dict[str, Any]], as_json: bool, stopped_by: str | None = None) -> None:
    replaying = isinstance(request, ReplayRequest)
    counts = run.tally.as_dict(request.action)
    summary: dict[str, Any] = {
        "outcome": run.outcome, "stopped_by": stopped_by, "action": request.action,
        "dry_run": request.dry_run, "dlq_topic": request.dlq_topic,
        "ledger_topic": request.ledger_topic,
        **({"target_topic": request.target} if isinstance(request, ReplayRequest)
           else {"reason": request.reason}),
        "filters": request.filter.describe(), "counts": counts,
        "dlq_offsets": [{"partition": p, "from": first, "to": last}
                        for p, (first, last) in sorted(run.offsets.items())],
        "audit_topic": request.audit_topic if run.audit is not None else None,
        "left_open_note": left_open_note(request, counts.get("skipped", {})),
        "notes": run.notes}
    if as_json:
        _echo_json({**summary, "records": rows})
        return
    console = table_console()
    shown = [row for row in rows if row["action"] != "already-resolved"
             and (request.dry_run or row["action"] == "skip")]
    if shown:
        title = "would do" if request.dry_run else "left open"
        table = _table(title, "partition", "offset", "event id", "event type", "error class",
                       "replays", "action")
        for row in shown:
            action = {"replay": f"replay -> {row.get('topic')}", "discard": "discard",
                      "skip": f"skip: {row.get('reason')}"}[row["action"]]
            if row.get("parked_behind"):
                action += f" (parked behind {row['parked_behind']})"
            table.add_row(*(_cell(row[k]) for k in ("dlq_partition", "dlq_offset", "event_id",
                          "event_type", "error_class", "replay_count")), _cell(action))
        console.print(table)
    done = counts["replayed"] if replaying else counts["discarded"]
    followers = counts.get("parked_followers", 0)
    along = f" ({followers} of them parked behind a replayed event)" if followers else ""
    verb = {(True, True): "would replay", (True, False): "replayed",
            (False, True): "would discard", (False, False): "discarded"}[
        (replaying, request.dry_run)]
    skipped = (", ".join(f"{n} {reason}" for reason, n in counts["skipped"].items()) or "none"
               if replaying else None)
    stopped = f"interrupted ({stopped_by or 'SIGINT'}): " if run.outcome == "interrupted" else ""
    console.print(f"{stopped}{verb} {done} record(s){along}; "
                  + (f"left open: {skipped}; " if skipped is not None else "")
                  + f"already resolved: {counts['already_resolved']}; "
                  f"examined {counts['examined']} ({counts['not_matching']} not matching) "
                  f"in {request.dlq_topic}", markup=False)
    if summary["left_open_note"]:
        console.print(summary["left_open_note"], markup=False)
    for note in run.notes:
        console.print(f"note: {note}", markup=False)
    if run.audit is not None:
        console.print(f"audit record written to {request.audit_topic}", markup=False)
    elif not request.dry_run:
        console.print(f"no audit record was written to {request.audit_topic}", markup=False)


def left_open_note(request: ReplayRequest | DiscardRequest,
                   skipped: dict[str, int]) -> str | None:
    """What to do about the matching records a replay left open (None if there were none):
    every later replay offers them again until they are replayed or discarded."""
    left = sum(skipped.values())
    if not left or not isinstance(request, ReplayRequest):
        return None
    forceable = skipped.get("max-replays", 0) + skipped.get("already-delivered", 0)
    hint = " or, once the cause is fixed, replay them with --force" if forceable else ""
    would = "would stay" if request.dry_run else "stay"
    return (f"{left} matching record(s) {would} open: discard them (dlq discard --reason "
            f"...){hint}")
