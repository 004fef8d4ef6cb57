"""``clinic-events simulate-downstream``: a misbehaving clinic API to deliver to in demos.

It serves ``consumer.dev.simulator.DownstreamSimulator`` in the foreground until SIGINT or
SIGTERM (Ctrl-C, ``docker compose stop``), then prints one summary line on standard output,
so a demo can show how many events were delivered, how many attempts failed and, the number
that matters, how many were delivered twice (zero when the consumer de-duplicates). The
listening address goes to standard error first, so ``--port 0`` can be scripted. An address
it cannot listen on (a port in use, an unknown ``--host``) is one line on standard error and
exit code 1, as ``kafka start`` reports a port in use.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import click

from consumer.cli.options import listen_failure
from consumer.dev.simulator import DownstreamSimulator, FailurePlan, SimulatedRequest


def _print_request(record: SimulatedRequest) -> None:
    click.echo(f"{record.status} {record.outcome:<12} attempt={record.attempt} "
               f"key={record.idempotency_key} type={record.event_type}", err=True)


def _start(simulator: DownstreamSimulator, host: str, port: int) -> None:
    """Start serving, or exit 1 with one line: a bind failure is not worth a traceback."""
    try:
        simulator.start()
    except OSError as exc:
        click.echo(f"clinic-events: {listen_failure(exc, host, port)}", err=True)
        sys.exit(1)


@click.command("simulate-downstream")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 inside a container).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on; 0 = any free port.")
@click.option("--transient-rate", type=click.FloatRange(0.0, 1.0), default=0.2, show_default=True,
              help="Share of attempts answered 503, 429 + Retry-After, or 504 after --slow.")
@click.option("--permanent-rate", type=click.FloatRange(0.0, 1.0), default=0.02,
              show_default=True, help="Share of events always rejected with 422.")
@click.option("--fail-first", type=click.IntRange(min=0), default=0, show_default=True,
              help="Answer 503 to the first N attempts of every event.")
@click.option("--retry-after", type=click.IntRange(min=0), default=2, show_default=True,
              help="Retry-After seconds on 503 and 429; 0 = no header on 503 (429 then says 1).")
@click.option("--slow", "slow_response_s", type=click.FloatRange(min=0.0), default=0.0,
              show_default=True, help="Seconds a slow answer takes before its 504.")
@click.option("--seed", type=int, default=7, show_default=True,
              help="Same seed, same failures for the same events.")
@click.option("--always-fail-key", "always_fail_keys", multiple=True,
              help="Idempotency-Key always answered 503 (repeatable).")
@click.option("--permanent-key", "permanent_keys", multiple=True,
              help="Idempotency-Key always answered 422 (repeatable).")
@click.option("-v", "--verbose", is_flag=True, help="Print one line per request on stderr.")
def simulate_command(host: str, port: int, transient_rate: float, permanent_rate: float,
                     fail_first: int, retry_after: int, slow_response_s: float, seed: int,
                     always_fail_keys: tuple[str, ...], permanent_keys: tuple[str, ...],
                     verbose: bool) -> None:
    """Serve a simulated EHR API (POST /events, GET /stats) that fails like real ones.

    Exit code: 0 when stopped by SIGINT or SIGTERM, 1 when it cannot listen (port in use,
    unknown --host).
    """
    plan = FailurePlan(
        transient_rate=transient_rate, permanent_rate=permanent_rate, fail_first=fail_first,
        always_fail_keys=frozenset(always_fail_keys), permanent_keys=frozenset(permanent_keys),
        retry_after_s=retry_after or None, slow_response_s=slow_response_s, seed=seed,
    )
    simulator = DownstreamSimulator(plan, host=host, port=port,
                                    on_request=_print_request if verbose else None)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _start(simulator, host, port)
        click.echo(f"downstream simulator listening on {simulator.events_url} "
                   f"(seed {simulator.seed}); Ctrl-C to stop", err=True)
        while not stop.wait(0.2):
            pass
    finally:
        simulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stats = simulator.stats()
    by_status = " ".join(f"{code}={count}" for code, count in stats["by_status"].items())
    click.echo(f"requests={stats['requests']} events={stats['keys']} "
               f"delivered={stats['delivered']} duplicates={stats['duplicates']} {by_status}"
               .rstrip())
