"""``[kafka.client]`` properties librdkafka refuses: one configuration error line, exit code 2.

librdkafka checks properties when a client is built, before any network I/O, so no broker
is needed: the port below is one nothing listens on.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from consumer.cli.main import main
from consumer.config.settings import load_settings
from consumer.errors import ConfigError
from consumer.kafka.clients import (
    build_admin,
    build_consumer,
    build_producer,
    kafka_client,
    looks_secret,
)
from consumer.kafka.provisioning import ClientSettingsError, TopicReport, ensure_topics

BAD_PROPERTIES = [
    ('"foo.bar" = "1"', 'No such configuration property: "foo.bar"'),
    ('"security.protocol" = "BOGUS"', 'Invalid value "BOGUS" for configuration property '
                                      '"security.protocol"'),
    ('"socket.timeout.ms" = "abc"', 'configuration property "socket.timeout.ms"'),
    ('"error_cb" = "5"', "error_cb"),  # confluent-kafka's TypeError: not a callable
]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "clinic-events.toml"
    path.write_text(f'[kafka]\nbootstrap_servers = "127.0.0.1:{port}"\n'
                    '[dedup]\nstore = "memory://"\n')
    return path


def _with_client(path: Path, line: str) -> Path:
    path.write_text(path.read_text() + f"[kafka.client]\n{line}\n")
    return path


@pytest.fixture
def no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")


@pytest.mark.parametrize(("line", "reason"), BAD_PROPERTIES)
def test_every_client_builder_turns_a_refused_property_into_a_config_error(
    config_file: Path, line: str, reason: str
) -> None:
    settings = load_settings(_with_client(config_file, line), env={})
    for build in (build_admin, build_consumer, build_producer):
        with pytest.raises(ConfigError, match=r"^\[kafka\.client\]: librdkafka refused the "
                                              r"(admin client|consumer|producer) settings") as err:
            build(settings)
        assert reason in str(err.value)
        assert "CONFIGURATION.md" in str(err.value)


def test_kafka_client_maps_value_and_type_errors_and_passes_a_good_client_through() -> None:
    def refuses(config: dict[str, object]) -> object:
        raise ValueError("bad value for linger.ms")

    with pytest.raises(ConfigError, match=r"producer settings: bad value for linger\.ms"):
        kafka_client(refuses, {}, "producer")
    consumer = kafka_client(Consumer, {"group.id": "g"}, "consumer")
    consumer.close()


def test_provisioning_refuses_admin_settings_before_asking_the_broker(config_file: Path) -> None:
    settings = load_settings(_with_client(config_file, '"foo.bar" = "1"'), env={})
    with pytest.raises(ClientSettingsError, match=r'No such configuration property: "foo\.bar"'):
        ensure_topics(settings, timeout_s=1)


@pytest.mark.parametrize("command", [
    ["topics", "ensure"], ["topics", "ensure", "--json"], ["run"], ["lag"],
    ["publish", "--file", "-"], ["publish", "--file", "-", "--no-create-topics"],
])
@pytest.mark.parametrize(("line", "reason"), BAD_PROPERTIES)
@pytest.mark.usefixtures("no_export")
def test_commands_exit_2_with_one_line_naming_kafka_client(
    config_file: Path, command: list[str], line: str, reason: str
) -> None:
    path = _with_client(config_file, line)
    result = CliRunner().invoke(main, [*command, "--config", str(path)], input="")
    assert result.exit_code == 2, result.output
    name, value = (part.strip('"') for part in line.split(" = "))
    assert result.output.startswith(
        f"clinic-events: configuration error: [kafka.client] {name} = {value!r}: ")
    assert reason in result.output
    assert result.output.count("\n") == 1, "one line, no traceback"


@pytest.mark.parametrize("command", [
    ["topics", "ensure"], ["run"], ["lag"], ["publish", "--file", "-"], ["dlq", "list"],
])
@pytest.mark.parametrize(("line", "kind"), [
    ('"session.timeout.ms" = "abc"', "consumer"),  # only consumers read it
    # only producers read it (and was a default); librdkafka names it queue.buffering.max.ms
    ('"linger.ms" = "abc"', "producer"),
])
@pytest.mark.usefixtures("no_export")
def test_a_property_one_client_kind_refuses_stops_every_command_before_it_acts(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], line: str,
    kind: str,
) -> None:
    """Whichever clients a command builds: no topic is created, nothing is sent."""
    def must_not_run(*_args: object, **_kwargs: object) -> TopicReport:
        raise AssertionError("topics were ensured before the settings were checked")

    monkeypatch.setattr("consumer.cli.wiring.ensure_topics_logged", must_not_run)
    monkeypatch.setattr("consumer.cli.topics.ensure_topics_logged", must_not_run)
    monkeypatch.setattr("consumer.kafka.publishing.ensure_topics_logged", must_not_run)
    path = _with_client(config_file, line)
    result = CliRunner().invoke(main, [*command, "--config", str(path)], input="")
    assert result.exit_code == 2, result.output
    name = line.split(" = ")[0].strip('"')
    assert result.output.startswith(
        f"clinic-events: configuration error: [kafka.client] {name} = 'abc': librdkafka "
        f"refused the {kind} settings: Invalid value for configuration property")
    assert result.output.count("\n") == 1, "one line, no traceback"


def test_admin_client_type_is_what_build_admin_returns(config_file: Path) -> None:
    assert isinstance(build_admin(load_settings(config_file, env={})), AdminClient)
    producer = build_producer(load_settings(config_file, env={}))
    assert isinstance(producer, Producer)
    producer.flush(0)


@pytest.mark.parametrize(("lines", "named"), [
    # librdkafka's message names no property; without security.protocol it checks no sasl.*
    ('"security.protocol" = "SASL_PLAINTEXT"\n"sasl.mechanisms" = "SCRAM-SHA-999"\n'
     '"sasl.username" = "clinic"\n"sasl.password" = "S3cret"',
     "[kafka.client] sasl.mechanisms = 'SCRAM-SHA-999': "),
    ('"security.protocol" = "SASL_PLAINTEXT"\n"sasl.mechanisms" = "PLAIN-X"',
     "[kafka.client] sasl.mechanisms = 'PLAIN-X': "),
])
def test_a_refused_sasl_mechanism_is_named_not_the_security_protocol(
    config_file: Path, lines: str, named: str
) -> None:
    path = _with_client(config_file, lines)
    result = CliRunner().invoke(main, ["topics", "ensure", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert f"clinic-events: configuration error: {named}" in result.output


@pytest.mark.parametrize("name", ["sasl.pasword", "sasl.passwd", "ssl.key.pasword",
                                  "sasl.secert", "sasl.password.typo"])
def test_a_misspelt_secret_property_is_named_with_its_value_masked(
    config_file: Path, name: str
) -> None:
    path = _with_client(config_file, f'"{name}" = "S3cret-value"')
    result = CliRunner().invoke(main, ["topics", "ensure", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert f"[kafka.client] {name} = '****': " in result.output
    assert "S3cret" not in result.output


@pytest.mark.parametrize(("name", "secret"), [
    ("sasl.password", True), ("sasl.pasword", True), ("sasl.oauthbearer.client.secret", True),
    ("ssl.key.password", True), ("sasl.username", False), ("sasl.mechanisms", False),
    ("security.protocol", False), ("ssl.ca.location", False), ("linger.ms", False),
    ("socket.keepalive.enable", False), ("client.id", False),
])
def test_looks_secret(name: str, secret: bool) -> None:
    assert looks_secret(name) is secret
