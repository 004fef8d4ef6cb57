"""Admin clients log through the ``clinic_events.kafka`` logger, each distinct line once.

Real librdkafka clients against a port nobody listens on: no broker is needed to see how a
client that cannot connect reports it.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import KafkaException

from consumer.cli.main import main
from consumer.config.settings import KAFKA_CLIENT_LOGGER, Settings, load_settings
from consumer.kafka.admin_session import AdminSession
from consumer.kafka.client_log import ClientLog
from consumer.kafka.provisioning import ensure_topics


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def unreachable(tmp_path: Path) -> Path:
    path = tmp_path / "clinic-events.toml"
    path.write_text(f'[kafka]\nbootstrap_servers = "127.0.0.1:{_closed_port()}"\n'
                    f'[dedup]\nstore = "memory://"\n')
    return path


def _settings(config: Path) -> Settings:
    return load_settings(config, env={})


def test_connect_failures_reach_the_logger_once_with_a_count_and_nothing_raw(
    unreachable: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=KAFKA_CLIENT_LOGGER)
    with AdminSession(_settings(unreachable)) as session:
        with pytest.raises(KafkaException):
            session.client.list_topics(timeout=2.5)  # librdkafka retries every 0.5 s or so
        call_ended = time.time()

    records = [record for record in caplog.records if record.name == KAFKA_CLIENT_LOGGER
               and "Connection refused" in record.getMessage()]
    assert len(records) == 2, records  # the first failure, then its repeats counted
    assert records[1].getMessage().endswith("more times)"), records
    # served while the call blocked, not only handed over when the client closed
    assert records[0].created < call_ended - 1.0
    assert "%3|" not in capfd.readouterr().err  # librdkafka's own stderr format


def test_closing_twice_is_harmless(unreachable: Path) -> None:
    session = AdminSession(_settings(unreachable))
    session.close()
    session.close()


def test_topics_ensure_against_no_broker_is_exit_4_with_one_clear_error(
    unreachable: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:
    def quick(*args: object, **kwargs: object) -> object:
        return ensure_topics(*args, **{**kwargs, "timeout_s": 1.5})  # type: ignore[arg-type]

    monkeypatch.setattr("consumer.kafka.admin_session.ensure_topics", quick)
    result = CliRunner().invoke(main, ["topics", "ensure", "--config", str(unreachable)])

    assert result.exit_code == 4, result.output
    assert result.stderr.endswith(
        "to list topics: Failed to get metadata: Local: Broker transport failure "
        "(waited 1.5 s)\n"), result.stderr
    assert "KafkaError{" not in result.stderr
    assert "%3|" not in capfd.readouterr().err


def test_lag_probes_record_reader_logs_through_a_client_log_too(
    unreachable: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker gone down mid ``lag --watch`` made the reader log ~100 identical lines."""
    from consumer.kafka import lag_probe

    built: list[dict[str, object]] = []

    def capture(_factory: object, config: dict[str, object], _kind: str) -> object:
        built.append(config)
        return object()

    monkeypatch.setattr(lag_probe, "kafka_client", capture)
    with lag_probe.LagProbe(_settings(unreachable)) as probe:
        monkeypatch.setattr(probe, "_reader", None)
        probe._reader_consumer()
        monkeypatch.setattr(probe, "_reader", None)  # nothing real to close
    assert isinstance(built[0]["logger"], ClientLog)
