"""Commands against a broker that refuses our login: the cause, named within seconds, exit 5.

The broker is the project-local one with a second listener, SASL_PLAINTEXT with
SCRAM-SHA-512 and one user (``clinic`` / ``S3cret``), started for this module only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.dev.local_kafka import LocalKafka, free_port
from consumer.web.auth import hash_password
from tests.integration.harness import run_cli, write_config

USER, PASSWORD = "clinic", "S3cret"
NAMED = "authentication failed for user `clinic` (SCRAM-SHA-512)"
NAMED_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def listeners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(plaintext, SCRAM) listeners of a broker of its own (the session's has no SASL)."""
    broker = LocalKafka(tmp_path_factory.mktemp("kafka-sasl"), scram_users={USER: PASSWORD})
    plaintext = broker.start(port=0)
    assert broker.sasl_bootstrap is not None
    try:
        yield plaintext, broker.sasl_bootstrap
    finally:
        broker.stop()


@pytest.fixture
def sasl_bootstrap(listeners: tuple[str, str]) -> str:
    return listeners[1]


def _config(tmp_path: Path, bootstrap: str, main: str, password: str, more: str = "") -> Path:
    return write_config(tmp_path, bootstrap=bootstrap, main=main, extra=(
        '"security.protocol" = "SASL_PLAINTEXT"\n"sasl.mechanisms" = "SCRAM-SHA-512"\n'
        f'"sasl.username" = "{USER}"\n"sasl.password" = "{password}"\n{more}'))


@pytest.mark.parametrize("command", [
    ("topics", "ensure", "--json"),
    ("lag", "--json", "--no-history"),
    ("dlq", "list", "--json"),
    ("publish", "--no-create-topics", "--json", "--file", "-"),
])
def test_a_wrong_password_is_named_within_seconds_with_exit_5(
    sasl_bootstrap: str, topic_prefix: str, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Each command says the login failed, for whom and how, in seconds, and exits 5."""
    config = _config(tmp_path, sasl_bootstrap, topic_prefix, "wrong")
    started = time.monotonic()
    result = run_cli(tmp_path, *command, "--config", str(config), stdin="")
    elapsed = time.monotonic() - started
    assert result.returncode == 5, result.stderr
    assert NAMED in result.stderr
    assert NAMED in json.loads(result.stdout.strip().splitlines()[-1])["error"]
    assert "wrong" not in result.stderr
    assert elapsed < NAMED_WITHIN_S + 3, f"took {elapsed:.1f} s"  # + the CLI's start-up


def test_the_right_password_works(sasl_bootstrap: str, topic_prefix: str,
                                  tmp_path: Path) -> None:
    """With the right password the same listener creates the topics and lag reads them."""
    config = _config(tmp_path, sasl_bootstrap, topic_prefix, PASSWORD)
    ensured = run_cli(tmp_path, "topics", "ensure", "--json", "--config", str(config))
    assert ensured.returncode == 0, ensured.stderr
    assert topic_prefix in json.loads(ensured.stdout)["created"]
    lag = run_cli(tmp_path, "lag", "--json", "--no-history", "--config", str(config))
    assert lag.returncode in (0, 1), lag.stderr  # OK, or WARN (no member yet)
    assert "error" not in json.loads(lag.stdout)


def test_a_sasl_login_at_the_plaintext_listener_is_named_within_seconds_with_exit_5(
    listeners: tuple[str, str], topic_prefix: str, tmp_path: Path,
) -> None:
    """The listener offers no SASL at all: librdkafka knows at once, and so must the
    operator, not after 30 s as an unreachable broker."""
    plaintext = listeners[0]
    config = _config(tmp_path, plaintext, topic_prefix, PASSWORD)
    started = time.monotonic()
    result = run_cli(tmp_path, "topics", "ensure", "--json", "--config", str(config))
    elapsed = time.monotonic() - started
    assert result.returncode == 5, result.stderr
    assert f"the listener at {plaintext} offers no SASL login" in result.stderr
    assert PASSWORD not in result.stderr
    assert elapsed < NAMED_WITHIN_S + 3, f"took {elapsed:.1f} s"


def test_serve_does_not_start_when_kafka_refuses_the_login(
    sasl_bootstrap: str, topic_prefix: str, tmp_path: Path,
) -> None:
    """A page that started anyway would show the refusal only to whoever opens it."""
    page = (f'[serve]\nport = {free_port()}\nusers = [{{ name = "ana", password_hash = '
            f'"{hash_password("pw")}", role = "viewer" }}]\n')
    config = _config(tmp_path, sasl_bootstrap, topic_prefix, "wrong", page)
    started = time.monotonic()
    result = run_cli(tmp_path, "serve", "--config", str(config), timeout_s=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 5, result.stderr
    assert NAMED in result.stderr
    assert "wrong" not in result.stderr
    assert elapsed < NAMED_WITHIN_S + 3, f"took {elapsed:.1f} s"


def test_a_client_without_sasl_at_the_sasl_listener_is_told_what_it_may_need(
    sasl_bootstrap: str, topic_prefix: str, tmp_path: Path,
) -> None:
    """The listener closes each connection once it is up; librdkafka says only "closed by
    peer", so this stays "cannot reach Kafka" (exit 4), with a hint where to look."""
    config = write_config(tmp_path, bootstrap=sasl_bootstrap, main=topic_prefix)
    result = run_cli(tmp_path, "lag", "--json", "--no-history", "--config", str(config))
    assert result.returncode == 4, result.stderr
    error = json.loads(result.stdout.strip().splitlines()[-1])["error"]
    assert f"the broker at {sasl_bootstrap} closed every connection as soon as it was made: " \
           "a listener that needs SASL or TLS?" in error
