"""``clinic-events serve``: the review page for operations staff; ``serve hash-password``.

The page (``consumer.web``) lists the open dead letters grouped in plain words, shows one
with PHI masked, and lets operators replay or discard them (the same exactly-once, audited
runs as ``dlq replay`` / ``dlq discard``). It listens on ``[serve] host``:``port``
(127.0.0.1:8088 by default) and lets in only ``[serve] users``; ``hash-password`` makes the
argon2 hash a user entry needs.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType

import click
import uvicorn
from opentelemetry.sdk.metrics import MeterProvider

from consumer.cli.metrics import LagSampler
from consumer.cli.options import EXIT_REFUSED, config_option, listen_failure, settings_from
from consumer.config.settings import ServeSettings, Settings
from consumer.dedup.store import open_dedup_store
from consumer.errors import DedupStoreUnavailable
from consumer.kafka.access import KafkaAccessRefused
from consumer.kafka.admin_session import kafka_answers
from consumer.observability.prometheus import PrometheusEndpoint
from consumer.observability.telemetry import shutdown_providers
from consumer.web.app import build_app
from consumer.web.auth import hash_password
from consumer.web.source import KafkaReviewSource

#: How long ``serve`` waits at start-up for Kafka's first answer. A refused login stops it:
#: that does not cure itself, and a page started anyway would show it only to whoever opens
#: it. Silence does not: Kafka may come up later, and the page says so meanwhile.
FIRST_ANSWER_S = 5.0


def page_address(serve: ServeSettings) -> str:
    """Where people open the page: ``public_url``, else the address it listens on."""
    if serve.public_url:
        return f"{serve.public_url}/"
    host = "127.0.0.1" if serve.host in ("0.0.0.0", "::") else serve.host  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{serve.port}/"


def page_socket(serve: ServeSettings) -> socket.socket:
    """The page's listening socket, bound before its address is announced; a port in use or
    an unknown ``--host`` exits 1 with one line (uvicorn would log it after the address)."""
    family = socket.AF_INET6 if ":" in serve.host else socket.AF_INET
    bound = socket.socket(family, socket.SOCK_STREAM)
    try:
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bound.bind((serve.host, serve.port))
    except OSError as exc:
        bound.close()
        click.echo(f"clinic-events: serve: {listen_failure(exc, serve.host, serve.port)}",
                   err=True)
        sys.exit(1)
    return bound


def serve_page(settings: Settings, listening: socket.socket, *, say: bool = True) -> None:
    """Serve the review page on ``listening`` until interrupted (Ctrl-C, SIGTERM)."""
    serve = settings.serve
    secret = serve.session_secret or secrets.token_urlsafe(32)
    app = build_app(serve, KafkaReviewSource(settings), secret=secret)
    if say:
        click.echo(f"review page: {page_address(serve)} ({len(serve.users)} user(s); Ctrl-C "
                   "stops it)", err=True)
    with _lag_metrics(settings, say=say), _stop_signals_end_the_command():
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", server_header=False,
                                               date_header=False))
        server.run(sockets=[listening])


@contextlib.contextmanager
def _stop_signals_end_the_command() -> Iterator[None]:
    """SIGINT and SIGTERM handled as a stop, exit code 0 (as documented).

    uvicorn shuts down gracefully on them, puts back the handlers it found and raises the
    signal again for them: with Python's defaults that ended ``serve`` killed by SIGTERM or
    with click's "Aborted!" and exit code 1. The handlers it finds are these, which do
    nothing: the stop has happened.
    """
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {stop: signal.signal(stop, _stopped) for stop in stops}
    try:
        yield
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def _stopped(_signum: int, _frame: FrameType | None) -> None:
    """The signal uvicorn raises again after its graceful shutdown: nothing left to do."""


@contextlib.contextmanager
def _lag_metrics(settings: Settings, *, say: bool) -> Iterator[None]:
    """With ``[metrics] prometheus_port`` set, ``/metrics`` on that port: the lag, retry and
    DLQ gauges ``run`` exposes, sampled every ``lag_interval`` (no pipeline figures: serve
    processes no events)."""
    port = settings.metrics.prometheus_port
    if port is None:
        yield
        return
    endpoint = PrometheusEndpoint(settings.metrics.prometheus_host, port)
    meters = MeterProvider(metric_readers=[endpoint.reader])
    sampler = LagSampler(settings, meters)
    endpoint.start()
    sampler.start()
    if say:
        click.echo(f"clinic-events: serving metrics at {endpoint.url}", err=True)
    try:
        yield
    finally:
        sampler.close()
        endpoint.close()
        shutdown_providers(meters)


@click.group("serve", invoke_without_command=True)
@config_option
@click.option("--host", help="Listen on this address [default: [serve] host, 127.0.0.1].")
@click.option("--port", type=click.IntRange(1, 65535),
              help="Listen on this port [default: [serve] port, 8088].")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve /metrics (lag, retry and DLQ gauges) on this port; 0 = none "
                   "[default: [metrics] prometheus_port, which run uses too: give serve "
                   "another one on a shared machine].")
@click.pass_context
def serve_group(ctx: click.Context, config_path: Path | None, host: str | None,
                port: int | None, metrics_port: int | None) -> None:
    """Serve the review page: dead letters in plain words, replay and discard.

    Sign-in needs a user in [serve] users (see `clinic-events serve hash-password`).
    Viewers read; operators also replay, discard and reveal PHI, each audited in
    <main>.audit. Exit code: 0 stopped; 1 it cannot listen (a port in use); 2 invalid
    configuration or no users; 5 Kafka refused our credentials or TLS handshake at start-up.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_from(config_path)
    changes = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if changes:
        settings = replace(settings, serve=replace(settings.serve, **changes))  # type: ignore[arg-type]
    if metrics_port is not None:
        settings = replace(settings, metrics=replace(
            settings.metrics, prometheus_port=metrics_port or None))
    if not settings.serve.users:
        click.echo("clinic-events: serve: nobody could sign in: add a user to [serve] users "
                   "(docs/review-page.md; `clinic-events serve hash-password` makes the "
                   "password hash)", err=True)
        sys.exit(2)
    listening = page_socket(settings.serve)
    try:
        answered = kafka_answers(settings, FIRST_ANSWER_S)
    except KafkaAccessRefused as exc:
        click.echo(f"clinic-events: serve: {exc}", err=True)
        sys.exit(EXIT_REFUSED)
    if not answered:
        click.echo(f"clinic-events: serve: Kafka at {settings.kafka.bootstrap_servers} does "
                   "not answer yet; serving the page anyway, it says so until Kafka does",
                   err=True)
    store_problem = dedup_store_problem(settings)
    if store_problem is not None:
        click.echo(f"clinic-events: serve: {store_problem.rstrip('.')}; serving the page "
                   "anyway, but its replays cannot check which events were delivered "
                   "already, and its discards fail, until the store can be opened", err=True)
    serve_page(settings, listening)


def dedup_store_problem(settings: Settings) -> str | None:
    """Why the dedup store cannot be opened, or None. Only the page's replays and discards
    need it, so this is a warning at start-up, not a refusal."""
    try:
        open_dedup_store(settings.dedup.store, settings.dedup.ttl_ms, read_only=True).close()
    except DedupStoreUnavailable as exc:
        return str(exc)
    return None


@serve_group.command("hash-password")
def hash_password_command() -> None:
    """Print the argon2 hash of a password (asked twice, never echoed) for [serve] users.

    Reads one line from standard input when it is not a terminal.
    """
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise click.UsageError("the password must not be empty")
    digest = hash_password(password)
    click.echo(digest)
    click.echo(f'# [serve] users = [{{ name = "NAME", password_hash = "{digest}", '
               'role = "operator" }]', err=True)
