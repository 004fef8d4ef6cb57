"""``clinic-events demo``: the whole flow on one machine, watched live, ending with a summary.

Steps, each announced on the way:

1. **Broker**: ``$KAFKA_BOOTSTRAP_SERVERS`` (or ``CLINIC_EVENTS_KAFKA_BOOTSTRAP_SERVERS``) if
   set, else the broker ``--config`` names, else the project-local broker if it already runs,
   else the local broker is started (``consumer.dev.local_kafka``). Only a broker the demo started
   is stopped at the end, and not with ``--keep-broker``.
2. **Downstream**: ``DownstreamSimulator`` on a free port, failing a seeded share of requests
   the way EHR APIs do (503, 429 + ``Retry-After``, 504; 422 for a share of events).
3. **Settings**: without ``--config``, a demo configuration with short tiers (1s, 3s, 6s), two
   quick in-process attempts 50 ms apart, and a *fresh* main topic and consumer group per run
   (``clinic.events.demo.<run id>``) with a dedup database emptied at the start, so every run
   tells the same story. It is written to ``.clinic-events/demo.toml`` so the run's topics can
   be inspected afterwards (``clinic-events dlq list --config .clinic-events/demo.toml``).
   With ``--config``, that file's topics, tiers, group and dedup store are used as they are;
   only ``delivery.url`` is pointed at the simulator.
4. **Consumer**: ``build_runner`` after ``ensure_topics``, run in a background thread.
5. **Publish** the events file (``examples/events.jsonl``), then **watch** ``runner.stats``
   and the simulator until every published event is settled (delivered, dead-lettered or
   skipped as a duplicate) or the timeout passes: a ``rich`` live view on a terminal, one line
   per change (and every few seconds) otherwise. Outcome logs go to ``.clinic-events/demo.log``
   so they do not scroll the view away.
6. **Stop** the consumer (drain, commit), read this run's dead letters with their
   ``clinic.dlq-reason``, stop the simulator, print the summary (``--json`` for scripts).

Exit code: 0 when every event settled and the downstream saw no duplicate delivery; 1 on
timeout, a duplicate delivery, a publishing failure or a consumer failure; 2 on bad options
or configuration; 130 when interrupted.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from types import FrameType

import click
from opentelemetry.sdk.trace import TracerProvider
from rich.console import Console, RenderableType
from rich.live import Live

from consumer.cli.gc_tuning import tune_for_streaming
from consumer.cli.options import Duration, json_option
from consumer.cli.serve import page_address, page_socket, serve_page
from consumer.cli.wiring import build_runner
from consumer.config.settings import ServeUser, Settings, load_settings
from consumer.dev.demo_view import (
    DeadLetterLine,
    DemoResult,
    DemoSnapshot,
    live_view,
    plain_line,
    snapshot,
    summary_view,
)
from consumer.dev.local_kafka import LocalKafka
from consumer.dev.simulator import DownstreamSimulator, FailurePlan
from consumer.errors import KafkaUnreachable
from consumer.kafka.admin_session import ensure_topics_logged
from consumer.kafka.dlq_io import DlqIoError, scan
from consumer.kafka.provisioning import TopicLayoutError
from consumer.kafka.publishing import EventPublisher, PublishSummary
from consumer.observability.telemetry import Telemetry, configure_tracing, shutdown_providers
from consumer.ops.dlq.model import DlqFilter
from consumer.pipeline.outcome_log import TextFormatter
from consumer.pipeline.runner import Runner
from consumer.web.auth import hash_password
from retry_topics.durations import format_duration
from retry_topics.naming import dlq_ledger_topic_name, dlq_topic_name

DEFAULT_EVENTS = Path("examples/events.jsonl")
#: In ``consumer/dev``; ``examples/events.jsonl`` is a link to it, so both are one file.
PACKAGED_EVENTS = "demo_events.jsonl"
DEMO_DELAYS = ("1s", "3s", "6s")
DEFAULT_SEED = 18  # with the default rates: retries in every tier, one 422, one exhausted
PLAIN_EVERY_S = 5.0  # a plain progress line at least this often, even without change
SAMPLE_EVERY_S = 0.1
STOP_TIMEOUT_S = 30.0


def _state_base() -> Path:
    """The project-local state folder (the one ``consumer.dev.local_kafka`` uses)."""
    return Path(os.environ.get("CLINIC_EVENTS_STATE_DIR", ".clinic-events"))


@dataclass(frozen=True, slots=True)
class _Broker:
    bootstrap: str
    origin: str
    started: LocalKafka | None = None


class _RunnerThread:
    """The runner in a background thread; its failure is kept for the summary."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="demo-runner", daemon=True)

    def _run(self) -> None:
        try:
            self._runner.run()
        except BaseException as exc:  # noqa: BLE001 - reported in the summary
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._runner.stop()
        self._thread.join(STOP_TIMEOUT_S)


@click.command("demo")
@click.option("--config", "config_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Settings file to use instead of the demo configuration (its topics, tiers, "
              "group and dedup store; delivery goes to the simulator) [default: short demo "
              "tiers 1s, 3s, 6s and a fresh main topic per run].")
@click.option("--events", "events_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"JSON Lines events to publish [default: {DEFAULT_EVENTS} if there, else "
              "the same example events shipped with the package].")
@click.option("--transient-rate", type=click.FloatRange(0.0, 1.0), default=0.3,
              show_default=True,
              help="Share of downstream attempts failed with 503, 429 + Retry-After or 504.")
@click.option("--permanent-rate", type=click.FloatRange(0.0, 1.0), default=0.05,
              show_default=True, help="Share of events the downstream always rejects (422).")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True,
              help="Same seed, same failures for the same events.")
@click.option("--keep-broker", is_flag=True,
              help="Leave a local broker the demo started running (one it found is always "
              "left running).")
@click.option("--timeout", "timeout_ms", type=Duration(minimum_ms=1), default="120s",
              show_default=True,
              help="Give up if the events have not all settled after this long.")
@click.option("--serve", "serve", is_flag=True,
              help="Afterwards, serve the review page on the demo's dead letters (sign-in "
              "printed) until Ctrl-C; the broker runs until then.")
@json_option
def demo_command(config_path: Path | None, events_path: Path | None, transient_rate: float,
                 permanent_rate: float, seed: int, keep_broker: bool, timeout_ms: int,
                 serve: bool, as_json: bool) -> None:
    """Run the whole flow locally, watch it live, then print a summary.

    Starts (or finds) a broker, creates the topics, serves a clinic API that fails like real
    EHR APIs, publishes the example events and runs the consumer on them. The summary shows
    delivered, retried per tier, dead-lettered (with reasons) and duplicate deliveries
    downstream, which must be 0. Exit code 0 when every event was delivered or dead-lettered
    and none twice; 1 otherwise (or on timeout). Logs go to .clinic-events/demo.log.
    """
    events_file = _events_file(events_path)
    lines = events_file.read_bytes().splitlines(keepends=True)
    base = load_settings(config_path) if config_path is not None else None  # errors first
    plan = FailurePlan(transient_rate=transient_rate, permanent_rate=permanent_rate, seed=seed)

    def say(message: str) -> None:
        click.echo(f"demo: {message}", err=as_json)

    with _sigterm_as_interrupt():
        broker = _find_broker(base, config_path, say)
        broker_stops = broker.started is not None and not keep_broker
        try:
            result, settings = _run(base, broker, plan, lines, events_file, timeout_ms,
                                    as_json, say, broker_stops=broker_stops)
            if serve and not result.interrupted:
                _serve_review_page(settings, say)
            elif result.dead_letters and not as_json:
                say("review them on a page: make demo ARGS=--serve (clinic-events demo --serve)")
        finally:
            if broker_stops and broker.started is not None:
                gc.collect()  # free the runner's Kafka clients first, or they log refusals
                say("stopping the local Kafka broker the demo started (--keep-broker keeps it)")
                broker.started.stop()
    if result.interrupted:
        sys.exit(130)
    sys.exit(0 if result.ok else 1)


def _events_file(given: Path | None) -> Path:
    """The events to publish: ``given``, else ``examples/events.jsonl`` in the current
    folder (a clone's root), else the same example events shipped with the package, so an
    installed ``clinic-events demo`` runs from anywhere."""
    if given is not None:
        return given
    if DEFAULT_EVENTS.is_file():
        return DEFAULT_EVENTS
    packaged = Path(str(resources.files("consumer.dev") / PACKAGED_EVENTS))
    if packaged.is_file():
        return packaged
    raise click.UsageError(f"neither {DEFAULT_EVENTS} nor the package's {PACKAGED_EVENTS} was "
                           "found (an incomplete install?); pass --events FILE")


def _file_names_broker(path: Path) -> bool:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False  # load_settings has reported it already
    kafka = raw.get("kafka")
    return isinstance(kafka, dict) and "bootstrap_servers" in kafka


def _find_broker(base: Settings | None, config_path: Path | None,
                 say: Callable[[str], None]) -> _Broker:
    for name in ("CLINIC_EVENTS_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"):
        if os.environ.get(name):
            return _Broker(os.environ[name], f"from ${name}; left running")
    if base is not None and config_path is not None and _file_names_broker(config_path):
        return _Broker(base.kafka.bootstrap_servers, f"named by {config_path}; left running")
    local = LocalKafka()
    status = local.status()
    if status.running and status.bootstrap:
        return _Broker(status.bootstrap, "the local broker, already running; left running")
    say(f"starting a local Kafka broker (state in {local.state_dir}; the first start fetches "
        "the jars with Maven)")
    return _Broker(local.start(), "the local broker, started for this demo", started=local)


def _run(base: Settings | None, broker: _Broker, plan: FailurePlan, lines: list[bytes],
         events_file: Path, timeout_ms: int, as_json: bool,
         say: Callable[[str], None], *, broker_stops: bool) -> tuple[DemoResult, Settings]:
    with DownstreamSimulator(plan) as simulator:
        settings, config_file = _settings(base, broker, simulator.events_url)
        say(f"Kafka at {settings.kafka.bootstrap_servers} ({broker.origin})")
        say(f"simulated clinic API at {simulator.events_url}: {plan.transient_rate:.0%} of "
            f"attempts fail (503 / 429 + Retry-After / 504), {plan.permanent_rate:.0%} of "
            f"events are rejected with 422 (seed {simulator.seed})")
        try:
            ensure_topics_logged(settings)
        except (TopicLayoutError, KafkaUnreachable) as exc:
            raise click.ClickException(str(exc)) from exc
        delays = tuple(format_duration(tier.delay_ms) for tier in settings.retry.tiers)
        main = settings.topics.main
        say(f"topics ready: {main}, retry tiers {', '.join(delays)}, {dlq_topic_name(main)}")
        log_file = _state_base() / "demo.log"
        with _logs_to(log_file), _tracer_provider() as provider:
            tune_for_streaming()
            assembly = build_runner(settings, tracer_provider=provider, ensure=False,
                                    drain_timeout_s=10)
            try:
                result = _publish_and_watch(settings, assembly.runner, simulator, provider,
                                            lines, events_file, delays, timeout_ms, as_json,
                                            say)
            finally:
                assembly.close()
    _print_summary(result, as_json)
    if not as_json:
        say(f"outcome log lines are in {log_file}")
        where = config_file if config_file is not None else "FILE"
        if result.dead_letters:
            say(f"inspect the dead letters: {inspect_dead_letters(where, broker_stops)}")
    return result, settings


def _serve_review_page(settings: Settings, say: Callable[[str], None]) -> None:
    """Serve the review page on the demo's topics with a one-off operator, until Ctrl-C.

    Replayed records go back to the demo's main topic; the demo's consumer has stopped, so
    they are delivered by the next ``clinic-events run --config .clinic-events/demo.toml``.
    """
    password = secrets.token_urlsafe(12)
    user = ServeUser(name="demo", password_hash=hash_password(password), role="operator")
    settings = replace(settings, serve=replace(settings.serve, users=(user,)))
    listening = page_socket(settings.serve)
    say(f"review page: {page_address(settings.serve)} (sign in as demo, password "
        f"{password}; Ctrl-C stops it)")
    with contextlib.suppress(KeyboardInterrupt):
        serve_page(settings, listening, say=False)


def inspect_dead_letters(config: Path | str, broker_stops: bool) -> str:
    """The commands that list the run's dead letters once the demo has ended.

    A broker the demo started is stopped at the end, but its data is kept, and a restart
    reuses its port: the listing works again after ``kafka start``.
    """
    listing = f"clinic-events dlq list --config {config}"
    return f"clinic-events kafka start, then {listing}" if broker_stops else listing


def _settings(base: Settings | None, broker: _Broker, url: str) -> tuple[Settings, Path | None]:
    """The run's settings, delivering to the simulator; the demo's own file when written.

    librdkafka's own log lines go to stderr, where they would tear the live view; only its
    errors are kept (``log_level`` 3) unless the configuration sets ``log_level`` itself.
    """
    config_file = None
    if base is None:
        config_file = _write_demo_config(broker.bootstrap, url)
        base = load_settings(config_file)
    kafka = replace(base.kafka, bootstrap_servers=broker.bootstrap,
                    client={"log_level": "3", **base.kafka.client})
    return replace(base, kafka=kafka,
                   delivery=replace(base.delivery, url=url, handler=None)), config_file


def _write_demo_config(bootstrap: str, url: str) -> Path:
    """Write the demo configuration for a fresh run: new topics and group, empty dedup."""
    state = _state_base()
    state.mkdir(parents=True, exist_ok=True)
    dedup = state / "demo-dedup.sqlite3"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{dedup}{suffix}").unlink(missing_ok=True)  # fresh per run: same story each time
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    path = state / "demo.toml"
    path.write_text(_DEMO_TOML.format(
        bootstrap=json.dumps(bootstrap), run_id=run_id,
        delays=", ".join(json.dumps(d) for d in DEMO_DELAYS),
        dedup=json.dumps(f"sqlite:///{dedup}"), url=json.dumps(url), path=path))
    return path


_DEMO_TOML = """\
# Written by `clinic-events demo` for its latest run (each run gets a fresh main topic,
# consumer group and dedup database). Inspect what it left behind, for example:
#   clinic-events dlq list --config {path}
[kafka]
bootstrap_servers = {bootstrap}
group_id = "clinic-events-demo.{run_id}"

[topics]
main = "clinic.events.demo.{run_id}"
partitions = 3

[retry]
delays = [{delays}]
in_process_attempts = 2
in_process_backoff = "50ms"
# A Retry-After above this goes straight to a retry tier instead of a quick retry.
in_process_max_backoff = "500ms"
backoff = "fixed"

[dedup]
store = {dedup}

# The simulator fails scattered events, never the whole API. A chance run of failures among
# the first calls would read as an outage, and the breaker's probes would then shift which
# attempt each event is on, so the same seed would no longer tell the same story.
[breaker]
enabled = false

[delivery]
url = {url}
timeout = "2s"
concurrency = 8
"""


def _publish_and_watch(settings: Settings, runner: Runner, simulator: DownstreamSimulator,
                       provider: TracerProvider, lines: list[bytes], events_file: Path,
                       delays: tuple[str, ...], timeout_ms: int, as_json: bool,
                       say: Callable[[str], None]) -> DemoResult:
    background = _RunnerThread(runner)
    background.start()
    started = time.monotonic()
    since_ms = time.time_ns() // 1_000_000
    deadline = started + timeout_ms / 1000
    interrupted = False
    try:
        published = _publish(settings, provider, lines)
        say(f"published {published.sent} events from {events_file}"
            + (f" ({published.rejected} invalid lines skipped)" if published.rejected else "")
            + (f", {published.failed} FAILED" if published.failed else ""))
        view = _Watch(runner, simulator, published.sent, delays, started, settings.topics.main)
        try:
            view.run(background, deadline, as_json)
        except KeyboardInterrupt:
            interrupted = True
    finally:
        background.stop()
    if background.alive():
        say(f"the consumer did not stop within {STOP_TIMEOUT_S:.0f}s")
    final = replace(view.take(), elapsed_s=view.last.elapsed_s)  # counts after the drain
    error = background.error
    return DemoResult(
        snap=final, main_topic=settings.topics.main, tier_delays=delays,
        dead_letters=_dead_letters(settings, since_ms, say) if final.dead_lettered else (),
        rejected_lines=published.rejected, publish_failures=published.failed,
        timed_out=view.timed_out and not final.finished,
        interrupted=interrupted,
        runner_error=None if error is None else f"{type(error).__name__}: {error}",
    )


def _publish(settings: Settings, provider: TracerProvider, lines: list[bytes]) -> PublishSummary:
    with EventPublisher(settings, telemetry=Telemetry(provider), create_topics=False) as publisher:
        publisher.publish_lines(lines)
        return publisher.flush()


class _Watch:
    """Samples the counts until every published event settled, showing them as it goes."""

    def __init__(self, runner: Runner, simulator: DownstreamSimulator, published: int,
                 delays: tuple[str, ...], started: float, main_topic: str) -> None:
        self._runner, self._simulator = runner, simulator
        self._published, self._delays, self._started = published, delays, started
        self._main_topic = main_topic
        self.last = self.take()
        self.timed_out = False

    def take(self) -> DemoSnapshot:
        return snapshot(self._runner.stats, tiers=len(self._delays), published=self._published,
                        downstream=self._simulator.stats(),
                        elapsed_s=time.monotonic() - self._started)

    def run(self, background: _RunnerThread, deadline: float, as_json: bool) -> bool:
        """True once every event settled; False on timeout or when the consumer stopped."""
        if sys.stdout.isatty() and not as_json:
            with Live(self._render(self.last), console=Console(), refresh_per_second=8,
                      transient=True) as live:
                return self._loop(background, deadline, lambda s: live.update(self._render(s)))
        printed: list[tuple[float, str]] = []

        def show(snap: DemoSnapshot) -> None:
            line = plain_line(replace(snap, elapsed_s=0.0), tier_delays=self._delays)
            if not printed or printed[-1][1] != line or \
                    snap.elapsed_s - printed[-1][0] >= PLAIN_EVERY_S or snap.finished:
                click.echo(plain_line(snap, tier_delays=self._delays), err=as_json)
                printed.append((snap.elapsed_s, line))

        return self._loop(background, deadline, show)

    def _render(self, snap: DemoSnapshot) -> RenderableType:
        return live_view(snap, main_topic=self._main_topic, tier_delays=self._delays)

    def _loop(self, background: _RunnerThread, deadline: float,
              show: Callable[[DemoSnapshot], None]) -> bool:
        while True:
            self.last = snap = self.take()
            show(snap)
            if snap.finished:
                return True
            if not background.alive():
                return False
            if time.monotonic() >= deadline:
                self.timed_out = True
                return False
            time.sleep(SAMPLE_EVERY_S)


def _dead_letters(settings: Settings, since_ms: int,
                  say: Callable[[str], None]) -> tuple[DeadLetterLine, ...]:
    """This run's dead letters (records since it started), with their reasons."""
    try:
        return tuple(
            DeadLetterLine(event_id=record.event_id, event_type=record.event_type,
                           reason=record.headers.dlq_reason or "?",
                           error_class=record.error_class,
                           error_message=record.headers.error_message or "")
            for record in scan(settings, dlq_topic_name(settings.topics.main),
                               dlq_ledger_topic_name(settings.topics.main),
                               DlqFilter(since_ms=since_ms)))
    except (DlqIoError, KafkaUnreachable) as exc:
        say(f"could not read the dead letters: {exc}")
        return ()


def _print_summary(result: DemoResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_json()))
        return
    console = Console()
    console.print()
    for part in summary_view(result):
        console.print(part)


@contextlib.contextmanager
def _logs_to(path: Path) -> Iterator[None]:
    """Send the application's log lines to ``path`` so they do not scroll the view away."""
    root = logging.getLogger("clinic_events")
    saved = (root.handlers[:], root.level, root.propagate)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(TextFormatter())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    try:
        yield
    finally:
        root.handlers[:], root.level, root.propagate = saved
        handler.close()


@contextlib.contextmanager
def _tracer_provider() -> Iterator[TracerProvider]:
    """Spans (and traceparent headers) always; exported only if OTEL_TRACES_EXPORTER says so.

    The default OTLP exporter would warn on the terminal every few seconds when no collector
    listens, which is the usual case for a local demo.
    """
    provider = configure_tracing() if os.environ.get("OTEL_TRACES_EXPORTER") else TracerProvider()
    try:
        yield provider
    finally:
        shutdown_providers(provider)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the demo like Ctrl-C does, so a broker it started is still stopped."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
