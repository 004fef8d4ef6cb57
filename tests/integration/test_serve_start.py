"""``clinic-events serve`` starting while Kafka does not answer: it says so and serves."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

from consumer.dev.local_kafka import free_port
from consumer.web.auth import hash_password
from tests.integration.harness import cli_env, wait_until, write_config


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback)
            return bool(response.status == 200)
    except OSError:
        return False


def test_serve_warns_that_kafka_does_not_answer_and_serves_the_page_anyway(
    tmp_path: Path,
) -> None:
    """Kafka may come up later: the page is served meanwhile (and says so itself)."""
    port = free_port()
    silent = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path, bootstrap=silent, main="serve-start", extra=(
        f'[serve]\nport = {port}\nusers = [{{ name = "ana", password_hash = '
        f'"{hash_password("pw")}", role = "viewer" }}]\n'))
    errors = tmp_path / "serve.err"
    with errors.open("wb") as stderr:
        serve = subprocess.Popen([sys.executable, "-m", "consumer", "serve", "--config",
                                  str(config)], stdout=subprocess.DEVNULL, stderr=stderr,
                                 env=cli_env(tmp_path))
    try:
        assert wait_until(lambda: _answers(f"http://127.0.0.1:{port}/login"), timeout_s=30), \
            errors.read_text()
        assert serve.poll() is None
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    said = errors.read_text()
    assert f"Kafka at {silent} does not answer yet" in said
    assert "serving the page anyway" in said
