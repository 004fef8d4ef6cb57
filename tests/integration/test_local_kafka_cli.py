"""``clinic-events kafka start | status | stop`` run a real broker from the cached jars."""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from tests.integration.harness import run_cli


def test_start_status_stop_twice_in_a_row(tmp_path: Path) -> None:
    """The CLI starts a broker that answers the admin API, reports it, stops it, twice."""
    for round_number in (1, 2):
        began = time.monotonic()
        started = run_cli(tmp_path, "kafka", "start", "--port", "0", timeout_s=180)
        assert started.returncode == 0, started.stderr
        bootstrap = started.stdout.strip().splitlines()[-1]
        assert bootstrap.startswith("127.0.0.1:")
        if round_number == 2:
            assert time.monotonic() - began < 30, "a start from the cache must be quick"
        try:
            metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15)
            assert metadata.brokers, "the broker must answer metadata requests"
            status = run_cli(tmp_path, "kafka", "status", timeout_s=180)
            assert status.returncode == 0
            assert f"running at {bootstrap}" in status.stdout
        finally:
            stopped = run_cli(tmp_path, "kafka", "stop", timeout_s=180)
        assert stopped.returncode == 0
        assert "stopped" in stopped.stdout
        after = run_cli(tmp_path, "kafka", "status", timeout_s=180)
        assert after.returncode == 3
        assert "not running" in after.stdout
