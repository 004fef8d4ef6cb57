"""``clinic-events kafka start | status | stop`` run a real broker from the cached jars."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        capture_output=True, text=True, env=env, timeout=180, check=False,
    )


def test_start_status_stop_twice_in_a_row(tmp_path: Path) -> None:
    """The CLI starts a broker that answers the admin API, reports it, stops it, twice."""
    env = {**os.environ, "CLINIC_EVENTS_STATE_DIR": str(tmp_path / "state")}
    for round_number in (1, 2):
        began = time.monotonic()
        started = _cli("kafka", "start", "--port", "0", env=env)
        assert started.returncode == 0, started.stderr
        bootstrap = started.stdout.strip().splitlines()[-1]
        assert bootstrap.startswith("127.0.0.1:")
        if round_number == 2:
            assert time.monotonic() - began < 30, "a start from the cache must be quick"
        try:
            metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15)
            assert metadata.brokers, "the broker must answer metadata requests"
            status = _cli("kafka", "status", env=env)
            assert status.returncode == 0
            assert f"running at {bootstrap}" in status.stdout
        finally:
            stopped = _cli("kafka", "stop", env=env)
        assert stopped.returncode == 0
        assert "stopped" in stopped.stdout
        after = _cli("kafka", "status", env=env)
        assert after.returncode == 3
        assert "not running" in after.stdout
