"""``clinic-events run``: consume and deliver events until SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import click

from consumer.cli.gc_tuning import tune_for_streaming
from consumer.cli.metrics import LagSampler
from consumer.cli.options import (
    config_option,
    layout_exit_code,
    settings_from,
)
from consumer.cli.wiring import build_runner
from consumer.config.settings import DeliverySettings, KafkaSettings, Settings, masked_url
from consumer.errors import ConfigError, KafkaUnreachable
from consumer.kafka.provisioning import TopicLayoutError
from consumer.observability.prometheus import PrometheusEndpoint
from consumer.observability.telemetry import (
    configure_metrics,
    configure_tracing,
    exports,
    shutdown_providers,
)
from consumer.pipeline.outcome_log import configure_logging
from consumer.pipeline.runner import FatalError
from retry_topics.durations import format_duration

#: librdkafka's default ``session.timeout.ms``: how long a killed instance keeps its partitions.
DEFAULT_SESSION_TIMEOUT_MS = 45_000


@click.command("run")
@config_option
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Per event: dead-lettered is WARNING, retried INFO, delivered and "
                   "duplicate DEBUG; at INFO a summary counts every outcome each 10 s.")
def run_command(config_path: Path | None, log_level: str) -> None:
    """Deliver events from the main topic and the retry tiers until stopped.

    The start-up lines name the topics, the group, the delivery target (the URL, or the
    handler), whether hops are transactional ([kafka] transactional_hops), the
    [kafka.client] properties (secret-looking values masked), and that it is joining the
    group: partitions a killed instance held come only once its session has timed out.

    SIGTERM or SIGINT drains in-flight work, flushes, commits and exits 0. Exit code 2 on bad
    configuration (including an unreachable dedup store), 4 if Kafka could not be reached
    at start-up, 5 if it refused our credentials or TLS handshake, 1 if processing could
    not go on safely (the records concerned are redelivered on the next start).
    """
    settings = settings_from(config_path)
    configure_logging(log_level)
    tune_for_streaming()
    provider = configure_tracing()
    port = settings.metrics.prometheus_port
    endpoint = (PrometheusEndpoint(settings.metrics.prometheus_host, port)
                if port is not None else None)
    meters = configure_metrics(readers=[endpoint.reader] if endpoint is not None else ())
    # Without an OTLP exporter or the endpoint nobody reads metrics: no meter provider, no
    # timing of handler calls, no lag sampling.
    metrics_read = exports("OTEL_METRICS_EXPORTER") or endpoint is not None
    try:
        # A provider that exports nothing would still build a span per record: leave it out.
        assembly = build_runner(
            settings, tracer_provider=provider if exports("OTEL_TRACES_EXPORTER") else None,
            meter_provider=meters if metrics_read else None)
    except (TopicLayoutError, KafkaUnreachable) as exc:
        click.echo(f"clinic-events: {exc}", err=True)
        sys.exit(layout_exit_code(exc))
    sampler = LagSampler(settings, meters) if metrics_read else None
    if endpoint is not None:
        try:
            endpoint.start()
        except ConfigError:
            assembly.close()
            raise
        click.echo(f"clinic-events: serving metrics at {endpoint.url}", err=True)
    if sampler is not None:
        sampler.start()

    signals_received: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signals_received:
            click.echo(f"clinic-events: {name} received again: finishing only the calls in "
                       "progress; queued records will be redelivered after a restart", err=True)
            assembly.runner.stop(hurry=True)
        else:
            click.echo(f"clinic-events: {name} received, draining (send it again to stop "
                       "sooner)", err=True)
            assembly.runner.stop()
        signals_received.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    click.echo(f"clinic-events: consuming {settings.topics.main} and "
               f"{len(settings.retry.tiers)} retry tiers as group {settings.kafka.group_id}, "
               f"delivering {delivery_target(settings.delivery)}", err=True)
    click.echo(f"clinic-events: {hops_line(settings.kafka.transactional_hops)}", err=True)
    click.echo(f"clinic-events: {memory_line(settings)}", err=True)
    if settings.kafka.client:  # secret-looking values masked
        shown = ", ".join(f"{name}={value}" for name, value
                          in sorted(settings.kafka.masked_client().items()))
        click.echo(f"clinic-events: [kafka.client] {shown}", err=True)
    click.echo(f"clinic-events: {joining_line(settings.kafka)}", err=True)
    try:
        assembly.runner.run()
    except FatalError as exc:
        click.echo(f"clinic-events: stopped: {exc}", err=True)
        sys.exit(1)
    finally:
        if sampler is not None:
            sampler.close()
        if endpoint is not None:
            endpoint.close()
        try:
            # Before the store closes: the last export still reads gauges from it.
            shutdown_providers(provider, meters)
        finally:
            assembly.close()
        # Stopped: a further signal has nothing left to hurry. Ignored, it cannot kill the
        # interpreter on its way out, which puts the default handlers back first.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    click.echo(f"clinic-events: stopped cleanly ({describe_stats(assembly.runner.stats)})",
               err=True)


def delivery_target(delivery: DeliverySettings) -> str:
    """Where events go, for the start-up line: ``to <url>`` (password masked) or
    ``with handler <package.module:function>``."""
    if delivery.handler is not None:
        return f"with handler {delivery.handler}"
    return f"to {masked_url(delivery.url or '')}"


def hops_line(transactional: bool) -> str:
    """The start-up line on ``[kafka] transactional_hops``: how a retry or DLQ hop becomes
    durable, which decides what a crash can repeat."""
    if transactional:
        return ("[kafka] transactional_hops = true: each retry and DLQ hop commits in one "
                "Kafka transaction with its source offset")
    return ("[kafka] transactional_hops = false: a hop is acknowledged, then its source "
            "offset stored (at-least-once: a crash in between publishes it again)")


def memory_line(settings: Settings) -> str:
    """The start-up line on what ``run`` remembers and whom it tells: the dedup store
    (password masked; a second group sharing it would skip what this one delivered) and the
    host of the notification webhook (its URL carries a token)."""
    dedup = settings.dedup
    kept = (f"dedup store {masked_url(dedup.store)} (outcomes kept "
            f"{format_duration(dedup.ttl_ms)})")
    url = settings.notify.webhook_url
    told = (f"notifications to the webhook at {urlsplit(url).hostname}" if url
            else "no notifications ([notify] webhook_url is not set)")
    return f"{kept}; {told}"


def joining_line(kafka: KafkaSettings) -> str:
    """The start-up line before the group hands out partitions.

    Why: after a kill, the broker keeps the dead instance's partitions until its session
    times out, and until then ``run`` says nothing (the next line is "assigned N
    partitions"); this says what it waits for and how long it may take.
    """
    raw = kafka.client.get("session.timeout.ms")
    timeout = (f"{int(raw) / 1000:g} s (session.timeout.ms)" if raw is not None and raw.isdigit()
               else f"session.timeout.ms={raw}" if raw is not None
               else f"{DEFAULT_SESSION_TIMEOUT_MS // 1000} s by default (session.timeout.ms)")
    return (f"joining group {kafka.group_id}; if a previous instance died without leaving "
            f"(killed, crashed), its partitions are handed over only after its session "
            f"times out, {timeout}")


def describe_stats(stats: Mapping[str, int]) -> str:
    """The run's counts for people: ``delivered 20, duplicate 0, retried 1 (tier 1: 1), ...``.

    The outcomes of the periodic summaries, ``parked`` included. The runner counts retries
    per tier under ``retried:<tier index>``.
    """
    tiers = sorted((int(key.partition(":")[2]), count) for key, count in stats.items()
                   if key.startswith("retried:"))
    parts = []
    for outcome in ("delivered", "duplicate", "retried", "parked", "dead_lettered"):
        count = stats.get(outcome, 0)
        text = f"{outcome} {count}"  # the outcome names of the log lines and metrics
        if outcome == "retried" and tiers:
            text += " (" + ", ".join(f"tier {tier}: {n}" for tier, n in tiers) + ")"
        parts.append(text)
    return ", ".join(parts)
