"""``clinic-events serve`` starting: while Kafka does not answer (it says so and serves),
on a port in use (one line, exit 1)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from consumer.dev.local_kafka import free_port
from consumer.web.auth import hash_password
from tests.integration.harness import cli_env, run_cli, wait_until, write_config


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback)
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_warns_that_kafka_and_the_store_do_not_answer_and_serves_the_page_anyway(
    tmp_path: Path, stop: signal.Signals,
) -> None:
    """Kafka may come up later: the page is served meanwhile (and says so itself). The
    dedup store only serves replays and discards: named, not a reason to refuse. SIGTERM
    and Ctrl-C stop it with exit code 0."""
    port = free_port()
    silent = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path, bootstrap=silent, main="serve-start", extra=(
        f'[serve]\nport = {port}\nusers = [{{ name = "ana", password_hash = '
        f'"{hash_password("pw")}", role = "viewer" }}]\n'))
    errors = tmp_path / "serve.err"
    store = f"redis://:s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there either
    with errors.open("wb") as stderr:
        serve = subprocess.Popen([sys.executable, "-m", "consumer", "serve", "--config",
                                  str(config)], stdout=subprocess.DEVNULL, stderr=stderr,
                                 env={**cli_env(tmp_path), "CLINIC_EVENTS_DEDUP_STORE": store})
    try:
        assert wait_until(lambda: _answers(f"http://127.0.0.1:{port}/login"), timeout_s=30), \
            errors.read_text()
        assert serve.poll() is None
    finally:
        serve.send_signal(stop)
        code = serve.wait(timeout=30)
    said = errors.read_text()
    assert code == 0, said
    assert "Aborted!" not in said
    assert f"Kafka at {silent} does not answer yet" in said
    assert "serving the page anyway" in said
    assert f"dedup.store '{store.replace('s3cret', '****')}' cannot be opened" in said
    assert "its discards fail, until the store can be opened" in said
    assert "s3cret" not in said


def test_serve_on_a_port_in_use_says_so_in_one_line_before_any_address(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, bootstrap=f"127.0.0.1:{free_port()}", main="in-use",
                              extra=(f'[serve]\nport = {port}\nusers = [{{ name = "ana", '
                                     f'password_hash = "{hash_password("pw")}", role = '
                                     '"viewer" }]\n'))
        result = run_cli(tmp_path, "serve", "--config", str(config), timeout_s=30)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"clinic-events: serve: port {port} is already in use; choose another with --port"]
