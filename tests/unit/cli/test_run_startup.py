"""``run``'s start-up lines: what an operator needs to tell which configuration is in use."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from consumer.cli.main import main
from consumer.cli.run import delivery_target
from consumer.config.settings import DeliverySettings


class _StoppedRunner:
    def __init__(self) -> None:
        self.stats: dict[str, int] = {}

    def run(self) -> None:
        """Returns at once, as after a clean stop."""


class _Assembly:
    runner = _StoppedRunner()

    def close(self) -> None:
        """Nothing to release."""


@pytest.fixture
def run_without_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run`` with ``build_runner`` stubbed: no broker, no store, no handler import."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")

    def build(settings: object, **_kwargs: Any) -> _Assembly:
        return _Assembly()

    monkeypatch.setattr("consumer.cli.run.build_runner", build)


@pytest.mark.usefixtures("run_without_kafka")
@pytest.mark.parametrize(("delivery", "target"), [
    ("", "delivering to http://127.0.0.1:8080/events"),
    ('url = "https://api.example/events"\n', "delivering to https://api.example/events"),
    ('handler = "mypkg.handlers:deliver"\n', "delivering with handler mypkg.handlers:deliver"),
])
def test_the_start_up_line_names_the_delivery_target(
    tmp_path: Path, delivery: str, target: str
) -> None:
    path = tmp_path / "clinic-events.toml"
    path.write_text(f'[kafka]\ngroup_id = "g1"\n[delivery]\n{delivery}')
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert (f"clinic-events: consuming clinic.events and 4 retry tiers as group g1, {target}\n"
            in result.output)


def test_a_password_in_the_delivery_url_is_masked() -> None:
    delivery = DeliverySettings(url="https://svc:s3cret@api.example:8443/events", handler=None,
                                timeout_ms=1000, concurrency=1)
    assert delivery_target(delivery) == "to https://svc:****@api.example:8443/events"


@pytest.mark.usefixtures("run_without_kafka")
def test_the_pass_through_client_properties_are_shown_with_secrets_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLINIC_EVENTS_KAFKA_CLIENT_SASL_USERNAME", "clinic")
    path = tmp_path / "clinic-events.toml"
    path.write_text('[kafka.client]\n"sasl.password" = "hunter2"\n'
                    '"sasl.oauthbearer.config" = "clientSecret=hunter3"\n'
                    '"security.protocol" = "SASL_SSL"\n"sasl.mechanism" = "PLAIN"\n')
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert ("clinic-events: [kafka.client] sasl.mechanism=PLAIN, sasl.oauthbearer.config=****, "
            "sasl.password=****, sasl.username=clinic, security.protocol=SASL_SSL\n"
            ) in result.output
    assert "hunter" not in result.output


@pytest.mark.usefixtures("run_without_kafka")
def test_no_client_line_without_pass_through_properties(tmp_path: Path) -> None:
    path = tmp_path / "clinic-events.toml"
    path.write_text("")
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "[kafka.client]" not in result.output


@pytest.mark.usefixtures("run_without_kafka")
@pytest.mark.parametrize(("setting", "line"), [
    ("", "clinic-events: [kafka] transactional_hops = true: each retry and DLQ hop commits in "
         "one Kafka transaction with its source offset\n"),
    ("transactional_hops = false\n", "clinic-events: [kafka] transactional_hops = false: a hop "
     "is acknowledged, then its source offset stored (at-least-once: a crash in between "
     "publishes it again)\n"),
])
def test_the_start_up_lines_say_whether_hops_are_transactional(
    tmp_path: Path, setting: str, line: str,
) -> None:
    path = tmp_path / "clinic-events.toml"
    path.write_text(f"[kafka]\n{setting}")
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert line in result.output


@pytest.mark.usefixtures("run_without_kafka")
@pytest.mark.parametrize(("client", "timeout"), [
    ("", "45 s by default (session.timeout.ms)"),
    ('[kafka.client]\n"session.timeout.ms" = "10000"\n', "10 s (session.timeout.ms)"),
])
def test_run_says_it_joins_the_group_and_why_partitions_may_take_a_while(
    tmp_path: Path, client: str, timeout: str,
) -> None:
    """After a restart that follows a kill, nothing else is said until the dead instance's
    session times out and the group assigns partitions: say so at once."""
    path = tmp_path / "clinic-events.toml"
    path.write_text(f'[kafka]\ngroup_id = "g1"\n{client}')
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert ("clinic-events: joining group g1; if a previous instance died without leaving "
            "(killed, crashed), its partitions are handed over only after its session times "
            f"out, {timeout}\n") in result.output
    assert "stopped cleanly (delivered 0, duplicate 0, retried 0, parked 0, dead_lettered 0)" \
        in result.output


@pytest.mark.usefixtures("run_without_kafka")
def test_once_stopped_run_ignores_further_signals(tmp_path: Path) -> None:
    """A signal landing while the interpreter exits, after the clean stop, must not kill it
    (exit code 0, not death by the signal): the interpreter puts default handlers back
    first, except for ignored signals."""
    path = tmp_path / "clinic-events.toml"
    path.write_text('[kafka]\ngroup_id = "g1"\n')
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


@pytest.mark.usefixtures("run_without_kafka")
@pytest.mark.parametrize(("config", "env", "line"), [
    ("", {}, "dedup store sqlite:///.clinic-events/dedup.sqlite3 (outcomes kept 7d); no "
             "notifications ([notify] webhook_url is not set)"),
    ('[dedup]\nstore = "redis://:s3cret@cache.internal:6379/2"\nttl = "2d"\n',
     {"CLINIC_EVENTS_NOTIFY_WEBHOOK_URL": "https://hooks.example/services/T0/B0/t0ken"},
     "dedup store redis://:****@cache.internal:6379/2 (outcomes kept 2d); notifications to "
     "the webhook at hooks.example"),
])
def test_the_start_up_lines_name_the_dedup_store_and_the_webhook_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str, env: dict[str, str],
    line: str,
) -> None:
    """Which store remembers outcomes decides what counts as a duplicate (a second group
    sharing it skips what the first delivered): say it, and who gets notified, at start-up;
    never the store's password or the webhook's token."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "clinic-events.toml"
    path.write_text(config)
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert f"clinic-events: {line}\n" in result.output
    assert "s3cret" not in result.output
    assert "t0ken" not in result.output
