"""``clinic-events demo`` end to end: a real broker, the real CLI in a subprocess, its summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.harness import write_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "events.jsonl"


def _example_count() -> int:
    return sum(1 for line in EXAMPLES.read_text().splitlines() if line.strip())


def _demo(bootstrap: str, cwd: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """Run the demo with ``--json``; return its exit code, summary and standard error."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("CLINIC_EVENTS_", "OTEL_"))}
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "demo", "--json", "--timeout", "45s", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"no summary on stdout; stderr:\n{done.stderr}"
    return done.returncode, json.loads(lines[-1]), done.stderr


def _assert_adds_up(summary: dict[str, Any]) -> None:
    settled = summary["delivered"] + summary["dead_lettered"] + summary["duplicate"]
    assert settled == summary["published"] == _example_count()
    assert summary["pending"] == 0
    assert summary["duplicate_deliveries"] == 0
    assert summary["downstream_by_outcome"].get("duplicate", 0) == 0
    assert summary["downstream_by_outcome"].get("delivered", 0) == summary["delivered"]
    assert sum(summary["dead_letter_reasons"].values()) == summary["dead_lettered"]
    assert summary["problems"] == []


def test_demo_settles_every_example_event_through_the_tiers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The default demo delivers or dead-letters every example event exactly once, using
    every retry tier and both dead-letter reasons with its default seed, and tells the same
    story every run: its scattered failures are never taken for an outage."""
    code, summary, stderr = _demo(kafka_bootstrap, tmp_path, "--seed", "18")

    assert code == 0, stderr
    _assert_adds_up(summary)
    assert summary["main_topic"].startswith("clinic.events.demo.")
    assert list(summary["retried"].items()) == [("1s", 5), ("3s", 2), ("6s", 1)]
    assert summary["dead_letter_reasons"] == {"exhausted": 1, "permanent": 1}
    assert summary["elapsed_s"] < 40
    # The run's state stays in the working folder, ready for `dlq list --config ...`.
    assert (tmp_path / ".clinic-events" / "demo.toml").is_file()
    log = (tmp_path / ".clinic-events" / "demo.log").read_text()
    assert "delivered" in log
    assert "downstream unavailable" not in log


def test_demo_run_again_on_the_same_configuration_delivers_nothing_twice(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """With --config, a second run publishes the same events again and the consumer skips
    them all as duplicates: the downstream is not called for any of them."""
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                          delays=("1s",))
    options = ("--config", str(config), "--events", str(EXAMPLES),
               "--transient-rate", "0.2", "--permanent-rate", "0", "--seed", "3")

    first_code, first, first_err = _demo(kafka_bootstrap, tmp_path, *options)
    second_code, second, second_err = _demo(kafka_bootstrap, tmp_path, *options)

    assert first_code == 0, first_err
    _assert_adds_up(first)
    assert first["main_topic"] == topic_prefix
    assert second_code == 0, second_err
    _assert_adds_up(second)
    assert second["duplicate"] == _example_count()
    assert second["downstream_requests"] == 0
