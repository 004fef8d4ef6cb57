"""``clinic-events lag``: how far the consumer group is behind, and whether that is a problem.

Reads a sample (``consumer.kafka.lag_probe``), judges it against earlier samples in the window
(``consumer.ops.lag.model``, history in ``consumer.ops.lag.history``) and shows it as a table, or as
one JSON document (``--watch --json``: one document per line). The exit code is the worst
status, so cron jobs and monitoring checks can use the command as it is.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from consumer.cli.options import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    Duration,
    config_option,
    json_option,
    settings_from,
)
from consumer.config.settings import Settings
from consumer.kafka.access import KafkaAccessRefused
from consumer.kafka.group_offsets import GroupQueryError
from consumer.kafka.lag_probe import DEFAULT_SCAN_CAP, LagProbe
from consumer.kafka.lag_probe import Progress as OnProgress
from consumer.observability.printable import printable
from consumer.ops.lag.history import HistoryFile, default_history_file
from consumer.ops.lag.model import (
    GroupReport,
    HistoryPoint,
    LagRules,
    Status,
    evaluate,
    report_to_json,
    to_history_point,
)
from consumer.ops.lag.parked import (
    ParkedKeys,
    ParkedReading,
    ParkedUnknown,
    parked_to_json,
    read_parked,
)

_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.ERR: "red", Status.STOP: "bold red"}
_PROGRESS_FROM = 2_000  # records to scan before a progress bar is worth showing


class _Trend:
    """Earlier samples: from the history file (unless disabled) plus those taken in this run."""

    def __init__(self, settings: Settings, state_dir: Path | None, keep: bool, window_ms: int):
        self._file = (HistoryFile(default_history_file(state_dir), group=settings.kafka.group_id,
                                  main_topic=settings.topics.main) if keep else None)
        self._points: list[HistoryPoint] = self._file.load() if self._file else []
        self._window_ms = window_ms

    def record(self, point: HistoryPoint) -> list[HistoryPoint]:
        """The points before ``point``; then remember ``point`` (and save it)."""
        earlier = list(self._points)
        self._points = [*earlier, point][-500:]
        if self._file is not None:
            try:
                self._file.append(point, keep_ms=max(self._window_ms, 3_600_000))
            except OSError as exc:
                click.echo(f"clinic-events: cannot save lag history: {exc}", err=True)
        return earlier


def _refuse_pacing_without_watch(ctx: click.Context) -> None:
    """``--interval`` and ``--count`` pace ``--watch``; given without it they would be
    ignored silently, and the user would wait for samples that never come."""
    given = [f"--{name}" for name in ("interval", "count")
             if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE]
    if given:
        verb = "needs" if len(given) == 1 else "need"
        raise click.UsageError(f"{' and '.join(given)} {verb} --watch", ctx)


@click.command("lag")
@config_option
@json_option
@click.option("--watch", is_flag=True, help="Sample until interrupted (or --count): refreshed "
              "in place on a terminal, every sample printed elsewhere.")
@click.option("--interval", type=Duration(minimum_ms=1), default="5s", show_default=True,
              help="Time between samples with --watch.")
@click.option("--count", type=click.IntRange(min=0), default=0,
              help="With --watch: stop after this many samples (0 = until Ctrl-C).")
@click.option("--window", type=Duration(minimum_ms=1), default="5m", show_default=True,
              help="Samples this recent are compared to detect growth and stalls.")
@click.option("--grace", type=Duration(), default="30s", show_default=True,
              help="How long past its due time a retry record may wait before it is ERR.")
@click.option("--scan-cap", type=click.IntRange(min=1), default=DEFAULT_SCAN_CAP,
              show_default=True, help="Most retry records read per partition for due times.")
@click.option("--timeout", type=Duration(minimum_ms=1), default="15s", show_default=True,
              help="Deadline for each Kafka request and for the record scan.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of lag-history.json [default: $CLINIC_EVENTS_STATE_DIR, "
              "else .clinic-events].")
@click.option("--no-history", is_flag=True, help="Neither read nor write lag-history.json.")
@click.pass_context
def lag_command(ctx: click.Context, config_path: Path | None, as_json: bool, watch: bool,
                interval: int, count: int, window: int, grace: int, scan_cap: int, timeout: int,
                state_dir: Path | None, no_history: bool) -> None:
    """Show the consumer group's lag on the main topic, each retry topic and the DLQ.

    \b
    Per partition: committed offset, end offset, lag in records (from the beginning of the
    partition if the group never committed there) and in time (age of the first unconsumed
    record). Retry topics split unconsumed records into waiting (due later: normal) and
    overdue (due already); the DLQ shows the records it holds, how many are open (neither
    replayed nor discarded, from the DLQ ledger) and the oldest one's age. A
    retry tier [retry] delays no longer include is shown too, while its topic exists: run
    keeps consuming it.

    \b
    Parked keys (record keys whose later events wait behind one in a retry tier, see
    docs/ordering.md) are counted from the dedup store, with the oldest one's age.

    \b
    Status, worst wins:
      OK    no lag, or lag being worked off
      WARN  lag grew over the window; the DLQ holds open dead letters; a topic is missing;
            a run instance states an outage (what it holds back is WARN with it)
      ERR   a retry record is overdue beyond --grace; a main partition is stalled
            (lag > 0, committed offset unchanged over the window); an outage that lasted
            [breaker] error_after
      STOP  the group has no members while there is lag; a run instance halted its dead
            letters (flood guard)

    \b
    Exit code: 0 OK, 1 WARN, 2 ERR, 3 STOP, 4 Kafka could not be asked, 5 Kafka refused
    our credentials or TLS. (2 is also used for invalid options or configuration.) With
    --json, exit 4 and 5 print {"error": ...} too.
    """
    if not watch:
        _refuse_pacing_without_watch(ctx)
    settings = settings_from(config_path)
    rules = LagRules(window_ms=window, grace_ms=grace,
                     outage_error_ms=settings.breaker.error_after_ms)
    trend = _Trend(settings, state_dir, not no_history, window)
    console = Console()
    interactive = console.is_terminal and not as_json
    try:
        with LagProbe(settings, scan_cap=scan_cap, timeout_s=timeout / 1000) as probe:
            if not watch:
                report = _take(probe, trend, rules, show_progress=interactive)
                _emit(report, as_json, console, read_parked(settings))
            else:
                report = _watch(probe, trend, rules, as_json, console, interval, count,
                                lambda: read_parked(settings))
    except (GroupQueryError, KafkaAccessRefused) as exc:
        click.echo(f"clinic-events: {exc}", err=True)
        if as_json:  # scripts parse stdout: an empty one is no answer
            click.echo(json.dumps({"error": str(exc)}))
        sys.exit(EXIT_REFUSED if isinstance(exc, KafkaAccessRefused) else EXIT_UNREACHABLE)
    sys.exit(int(report.status))


def _take(probe: LagProbe, trend: _Trend, rules: LagRules, *, show_progress: bool) -> GroupReport:
    if not show_progress:
        sample = probe.sample()
    else:
        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("reading retry records", visible=False)

            def advance(done: int, total: int) -> None:
                visible = total >= _PROGRESS_FROM
                progress.update(task, completed=done, total=total, visible=visible)

            on_progress: OnProgress = advance
            sample = probe.sample(on_progress)
    return evaluate(sample, trend.record(to_history_point(sample)), rules)


def _watch(probe: LagProbe, trend: _Trend, rules: LagRules, as_json: bool, console: Console,
           interval_ms: int, count: int,
           parked: Callable[[], ParkedReading] = lambda: None) -> GroupReport:
    """Sample every ``interval_ms``: a table refreshed in place on a terminal; elsewhere
    (a pipe, a log file) every sample printed in turn, one JSON document per line with
    ``--json``, so nothing a script or a log keeps is overwritten."""
    report = _take(probe, trend, rules, show_progress=False)
    taken = 1
    in_place = not as_json and console.is_terminal
    live = Live(render(report, parked()), console=console, auto_refresh=False) \
        if in_place else None
    if live is None:
        _emit_sample(report, as_json, console, parked())
    try:
        if live is not None:
            live.start()
        while count == 0 or taken < count:
            time.sleep(interval_ms / 1000)
            report = _take(probe, trend, rules, show_progress=False)
            taken += 1
            if live is not None:
                live.update(render(report, parked()), refresh=True)
            else:
                _emit_sample(report, as_json, console, parked())
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
    return report


def _document(report: GroupReport, parked: ParkedReading) -> dict[str, Any]:
    document = {**report_to_json(report), "parked": parked_to_json(parked)}
    if isinstance(parked, ParkedUnknown):  # null alone reads like ordering being off
        document["parked_unknown"] = parked.reason
    return document


def _emit_sample(report: GroupReport, as_json: bool, console: Console,
                 parked: ParkedReading = None) -> None:
    if as_json:
        click.echo(json.dumps(_document(report, parked)))
    else:
        console.print(render(report, parked))


def _emit(report: GroupReport, as_json: bool, console: Console,
          parked: ParkedReading = None) -> None:
    if as_json:
        click.echo(json.dumps(_document(report, parked), indent=2))
    else:
        console.print(render(report, parked))


def _known(count: int | None) -> str:
    """A count, or "?" where it could not be read."""
    return "?" if count is None else str(count)


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    seconds = ms // 1000
    if seconds < 120:
        return f"{ms / 1000:.1f}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _status(status: Status) -> Text:
    return Text(status.name, style=_STYLE[status])


def render(report: GroupReport, parked: ParkedReading = None) -> Group:
    """The human view: per topic, a total row and one row per lagging or unhealthy partition;
    the parked keys' count and oldest age, or why they are unknown (none when ordering is
    off)."""
    parts: list[RenderableType] = [Text.assemble(
        f"group {report.group}: {report.members} member(s), overall ", _status(report.status))]
    if isinstance(parked, ParkedKeys):
        parts.append(Text(f"parked keys: {parked.keys}" + (
            f", oldest waiting {_age(parked.oldest_age_ms)}" if parked.keys else "")))
    elif parked is not None:
        parts.append(Text(f"parked keys: unknown ({printable(parked.reason)})"))
    for reason in report.system_reasons:
        parts.append(Text.assemble(("run  ", "bold"), _status(report.system_status), "  ",
                                   printable(reason)))
    for topic in report.topics:
        title = Text.assemble((topic.topic, "bold"), f"  {topic.kind}  ", _status(topic.status))
        if not topic.exists:
            parts.append(Text.assemble(title, "  (topic does not exist)"))
            continue
        if topic.lag == 0 and topic.status is Status.OK:
            note = "  nothing waiting" if topic.configured else "  " + "; ".join(topic.reasons)
            parts.append(Text.assemble(title, note))
            continue
        retry, dlq = topic.kind == "retry", topic.kind == "dlq"
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
        headers = ["partition", "status", "committed", "end", "records" if dlq else "lag",
                   "oldest" if dlq else "age", *(("waiting", "overdue") if retry else ()),
                   *(("open",) if dlq else ())]
        for header in headers:
            table.add_column(header, justify="left" if header in ("partition", "status")
                             else "right", no_wrap=True)
        extra = (str(topic.waiting), str(topic.overdue)) if retry else (
            (_known(topic.open),) if dlq else ())
        table.add_row("all", _status(topic.status), "", "", str(topic.lag),
                      _age(topic.max_time_lag_ms), *extra)
        for part in topic.partitions:
            if part.lag == 0 and part.status is Status.OK:
                continue
            extra = (str(part.waiting), str(part.overdue) + ("+" if part.capped else "")
                     ) if retry else ((_known(part.open),) if dlq else ())
            table.add_row(str(part.partition), _status(part.status),
                          "-" if part.committed is None else str(part.committed), str(part.end),
                          str(part.lag), _age(part.time_lag_ms), *extra)
        parts.append(table)
        parts.extend(Text(f"  - {reason}") for reason in topic.reasons)
        if any(p.capped for p in topic.partitions):
            parts.append(Text("  - scan capped (+): waiting/overdue count only the records read"))
    return Group(*parts)
