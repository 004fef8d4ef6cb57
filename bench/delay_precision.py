"""How precisely retry tiers keep their delays: never early, and how late, on a real broker.

Run from the repository root: ``python -m bench.delay_precision [--delays 1s 5s 30s]``.

Why a program: the target (never early; p99 lateness <= 50 ms for delays of 1 s to 10 min
on an idle consumer) is a property of the pause/seek/resume mechanism against a real broker,
measured here rather than asserted by a timed test.

Mechanism: a topic set with one retry tier per ``--delays`` value, a simulated downstream
that fails every event exactly once per tier it is meant to reach (``fail_first``), and the
real runner. Events are published a few per second so the consumer is mostly idle. For each
retried attempt, lateness = the downstream's receive time of that attempt minus the
``clinic.due-at`` of the retry record that caused it (both wall clock, same machine). The
program prints min (must be >= 0: never early), p50, p99 and max per tier, and the two
targets (judged on the worst tier) with PASS or MISS. ``python -m bench.targets`` runs this
measurement too, beside the other targets.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.verdicts import Target, Unit, render_table
from consumer.dev.local_kafka import LocalKafka
from consumer.dev.simulator import DownstreamSimulator, FailurePlan
from consumer.kafka.clients import message_headers
from retry_topics.durations import parse_duration_ms
from retry_topics.headers import decode_headers
from tests.integration.harness import (
    new_event,
    produce,
    read_topic,
    running_consumer,
    settings_for,
    write_config,
)

DEFAULT_DELAYS = ("1s", "5s")
DEFAULT_RATE = 4.0  # events published per second: the consumer is mostly idle
LATENESS_P99_MS = 50.0


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(bootstrap: str, folder: Path, delays: Sequence[str], events: int,
            rate: float) -> dict[str, Any]:
    main = f"precision.{uuid.uuid4().hex[:8]}"
    tiers = len(delays)
    with DownstreamSimulator(FailurePlan(fail_first=tiers)) as sim:
        # Every event fails its first calls by design, which the outage breaker would take
        # for a downstream that is down (and hold every event): this measures the tiers.
        config = write_config(folder, bootstrap=bootstrap, main=main, url=sim.events_url,
                              delays=tuple(delays), partitions=3,
                              extra="[breaker]\nenabled = false")
        settings = settings_for(config)
        published = [new_event() for _ in range(events)]
        longest_s = sum(parse_duration_ms(d) for d in delays) / 1000
        with running_consumer(settings):
            for event in published:
                produce(bootstrap, main, [event])
                time.sleep(1 / rate)  # pacing the publisher keeps the consumer mostly idle
            ids = {str(e["event_id"]) for e in published}
            sim.wait_for(lambda: ids <= set(sim.delivered_keys()), longest_s + events / rate + 30)
        attempts: dict[tuple[str, int], int] = {}
        for request in sim.requests():
            if request.idempotency_key:
                attempts[(request.idempotency_key, request.attempt)] = request.wall_ms
    report: dict[str, Any] = {"events": events, "tiers": {}}
    for index, tier in enumerate(settings.retry.tiers, start=1):
        lateness: list[float] = []
        for message in read_topic(bootstrap, tier.topic, events, 30):
            headers = decode_headers(message_headers(message))
            received = attempts.get((str(headers.event_id), index + 1))
            if headers.due_at_ms is not None and received is not None:
                lateness.append(received - headers.due_at_ms)
        report["tiers"][tier.topic] = {
            "samples": len(lateness),
            "min_ms": min(lateness), "p50_ms": statistics.median(lateness),
            "p99_ms": _percentile(lateness, 0.99), "max_ms": max(lateness),
            "early": sum(1 for value in lateness if value < 0),
        } if lateness else {"samples": 0}
    return report


def lateness_targets(report: dict[str, Any]) -> list[Target]:
    """p99 lateness <= 50 ms in every tier, and never early: each judged on the worst tier."""
    rows = {topic: row for topic, row in report["tiers"].items() if row["samples"]}
    if not rows:
        raise ValueError("no retried attempt was measured")
    worst = max(rows, key=lambda topic: rows[topic]["p99_ms"])
    earliest = min(rows, key=lambda topic: rows[topic]["min_ms"])
    samples = sum(row["samples"] for row in rows.values())
    return [
        Target(key="5a", name="retry lateness p99, worst tier", value=rows[worst]["p99_ms"],
               bound=LATENESS_P99_MS, unit=Unit.MS, at_least=False,
               note=f"({worst}; {samples} retries in {len(rows)} tiers)"),
        Target(key="5b", name="retry lateness min (negative: early)",
               value=rows[earliest]["min_ms"], bound=0.0, unit=Unit.MS, at_least=True,
               note=f"({earliest})"),
    ]


def render(report: dict[str, Any]) -> str:
    """The per-tier table."""
    lines = [f"retry delay precision, {report['events']} events, one retry per tier each",
             f"{'tier topic':<40} {'n':>4} {'min':>8} {'p50':>8} {'p99':>8} {'max':>8}  early"]
    for topic, row in report["tiers"].items():
        if not row["samples"]:
            lines.append(f"{topic:<40} no samples")
            continue
        lines.append(f"{topic:<40} {row['samples']:>4} {row['min_ms']:>6.0f}ms "
                     f"{row['p50_ms']:>6.0f}ms {row['p99_ms']:>6.0f}ms {row['max_ms']:>6.0f}ms  "
                     f"{row['early']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", nargs="+", default=list(DEFAULT_DELAYS),
                        help="retry tier delays to measure [default: 1s 5s]")
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE,
                        help="events published per second")
    parser.add_argument("--bootstrap", default=None,
                        help="an existing broker [default: start a local one]")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("clinic_events").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = None if args.bootstrap else LocalKafka(folder / "kafka")
        bootstrap = args.bootstrap or (broker.start(port=0) if broker else "")
        try:
            report = measure(bootstrap, folder, args.delays, args.events, args.rate)
        finally:
            if broker is not None:
                broker.stop()
    if args.json:
        print(json.dumps(report))
        return 0
    print(render(report))
    if any(row["samples"] for row in report["tiers"].values()):
        print()
        print(render_table(lateness_targets(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
