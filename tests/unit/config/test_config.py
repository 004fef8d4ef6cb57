"""Settings: file + environment precedence, validation messages, the example config."""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer
from tenacity import RetryCallState, Retrying

from consumer.cli.main import main
from consumer.config.settings import KAFKA_CLIENT_LOGGER, load_settings
from consumer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clinic-events.toml"
    path.write_text(text)
    return path


def test_the_shipped_example_says_only_the_defaults_but_its_example_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its header says the values are the defaults except where a comment says otherwise:
    the [classification] rules are the one such place."""
    monkeypatch.chdir(tmp_path)  # no clinic-events.toml: the defaults alone
    example = load_settings(ROOT / "clinic-events.example.toml", env={})
    defaults = load_settings(None, env={})
    assert dataclasses.replace(example, classification=defaults.classification,
                               source=defaults.source) == defaults


def test_the_shipped_example_is_valid_and_matches_the_defaults() -> None:
    settings = load_settings(ROOT / "clinic-events.example.toml", env={})
    assert settings.retry.delays_ms == (5_000, 30_000, 120_000, 600_000)
    assert [t.topic for t in settings.retry.tiers] == [
        "clinic.events.retry.5s", "clinic.events.retry.30s", "clinic.events.retry.2m",
        "clinic.events.retry.10m"]
    assert settings.retry.dlq_topic == "clinic.events.dlq"
    assert settings.retry.in_process.attempts == 3
    assert settings.retry.in_process.backoff == "exponential_jitter"
    assert settings.dedup.ttl_ms == 7 * 24 * 3_600_000
    assert settings.delivery.timeout_ms == 10_000
    assert settings.delivery.concurrency == 16
    assert settings.kafka.group_id == "clinic-events"


def test_environment_beats_the_file_and_kafka_bootstrap_servers_is_honoured(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path, '[kafka]\nbootstrap_servers = "file:9092"\n[retry]\ndelays = ["1s"]\n')
    assert load_settings(path, env={}).kafka.bootstrap_servers == "file:9092"
    assert load_settings(path, env={"KAFKA_BOOTSTRAP_SERVERS": "generic:9092"}
                         ).kafka.bootstrap_servers == "generic:9092"
    settings = load_settings(path, env={
        "KAFKA_BOOTSTRAP_SERVERS": "generic:9092",
        "CLINIC_EVENTS_KAFKA_BOOTSTRAP_SERVERS": "specific:9092",
        "CLINIC_EVENTS_RETRY_DELAYS": "2s, 20s",
        "CLINIC_EVENTS_DELIVERY_CONCURRENCY": "4",
    })
    assert settings.kafka.bootstrap_servers == "specific:9092"
    assert settings.retry.delays_ms == (2_000, 20_000)
    assert settings.delivery.concurrency == 4


@pytest.mark.parametrize("value", ['["2s", "20s"]', "[ '2s','20s' ]"])
def test_a_list_variable_may_be_written_as_a_toml_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # no clinic-events.toml here
    settings = load_settings(None, env={
        "CLINIC_EVENTS_RETRY_DELAYS": value,
        "CLINIC_EVENTS_CLASSIFICATION_PERMANENT": '["builtins.ValueError"]',
    })
    assert settings.retry.delays_ms == (2_000, 20_000)
    assert settings.classification.permanent == ("builtins.ValueError",)


def test_a_list_variable_that_is_not_a_toml_array_names_both_forms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"CLINIC_EVENTS_RETRY_DELAYS must be comma-separated "
                                          r"\(a,b\) or a TOML array"):
        load_settings(None, env={"CLINIC_EVENTS_RETRY_DELAYS": '["2s", 20s]'})


def test_generated_delays_expand_into_fixed_tiers(tmp_path: Path) -> None:
    path = _write(tmp_path, '[retry]\ndelays_from = { initial = "5s", multiplier = 4, '
                            'max = "10m", tiers = 4 }\n')
    assert load_settings(path, env={}).retry.delays_ms == (5_000, 20_000, 80_000, 320_000)


def test_quick_retries_may_wait_nothing(tmp_path: Path) -> None:
    """A first in-process wait of 0 is meaningful (retry at once), unlike the durations
    refused below."""
    path = _write(tmp_path, '[retry]\nin_process_backoff = "0ms"\nbackoff = "fixed"\n')
    first_wait = load_settings(path, env={}).retry.in_process.wait_strategy()
    assert first_wait(RetryCallState(Retrying(), fn=None, args=(), kwargs={})) == 0


def test_handler_replaces_url(tmp_path: Path) -> None:
    path = _write(tmp_path, '[delivery]\nhandler = "mypkg.handlers:deliver"\n')
    delivery = load_settings(path, env={}).delivery
    assert (delivery.handler, delivery.url) == ("mypkg.handlers:deliver", None)


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[retry]\ndelay = [\"5s\"]\n", {}, r"unknown key \[retry\] delay; valid keys"),
        ("[retries]\n", {}, r"unknown section \[retries\]; valid sections: kafka"),
        ("[retry]\ndelays = []\n", {}, r"retry.delays must be a non-empty list"),
        ("[retry]\ndelays = [\"5 seconds\"]\n", {}, r"retry.delays: .*valid units are ms, s"),
        ("[retry]\ndelays = [\"30s\", \"5s\"]\n", {}, r"\[retry\]"),
        ("[retry]\nbackoff = \"linear\"\n", {}, r"retry.backoff must be one of immediate, fixed"),
        ("[dedup]\nstore = \"postgres://x\"\n", {}, r"dedup.store must start with sqlite://"),
        ("[delivery]\nconcurrency = 0\n", {}, r"delivery.concurrency must be an integer >= 1"),
        ("[delivery]\nurl = \"ftp://x\"\n", {}, r"delivery.url must be an http"),
        ("", {"CLINIC_EVENTS_DELIVERY_URL": "http://ehr.example/events\n"},
         r"delivery.url holds a control character or ends in a space \(a trailing newline\?\), "
         r"got 'http://ehr.example/events\\n'"),
        ("[delivery]\nurl = \"http://:8080/events\"\n", {}, r"delivery.url names no host"),
        ("", {"CLINIC_EVENTS_DELIVERY_URL": "https://svc:s3cret@ehr.example/events\n"},
         r"\(a trailing newline\?\), got 'https://svc:\*\*\*\*@ehr.example/events\\n'$"),
        ("[delivery]\nurl = \"https://svc:p#ss@ehr.example/events\"\n", {},
         r"delivery.url is not a valid URL: its password holds a character URLs reserve "
         r"\('#', '/', '\?' or '@'\); percent-encode it \(%23, %2F, %3F, %40\), got "
         r"'https://\*\*\*\*@ehr.example/events'$"),
        ("[serve]\npublic_url = \"https://[review/\"\n", {},
         r"serve.public_url is not a valid URL: Invalid IPv6 URL"),
        ("", {"CLINIC_EVENTS_KAFKA_BOOTSTRAP": "x"}, r"CLINIC_EVENTS_KAFKA_BOOTSTRAP"),
        ("", {"CLINIC_EVENTS_DELIVERY_CONCURRENCY": "many"}, r"must be an integer"),
        ("[kafka\n", {}, r"not valid TOML"),
        ("[retry]\ndelays = [\"0s\", \"5s\"]\n", {},
         r"retry.delays must be at least 1ms, got '0s'"),
        ("[delivery]\ntimeout = \"0s\"\n", {}, r"delivery.timeout must be at least 1ms, got '0s'"),
        ("", {"CLINIC_EVENTS_DELIVERY_TIMEOUT": "0ms"},
         r"delivery.timeout must be at least 1ms, got '0ms'"),
        ("[dedup]\nttl = \"0d\"\n", {}, r"dedup.ttl must be at least 1ms, got '0d'"),
        ("[retry]\ndelays = [\"5s\"]\ndelays_from = { initial = \"5s\", multiplier = 4, "
         "max = \"10m\", tiers = 4 }\n", {},
         r"retry.delays and retry.delays_from are both set; set one"),
        ("[retry]\ndelays_from = { initial = \"5m\", multiplier = 4, max = \"10s\", "
         "tiers = 4 }\n", {},
         r"retry.delays_from.max \(10s\) must be at least delays_from.initial \(5m\)"),
        ("[retry]\ndelays_from = { initial = \"0s\", multiplier = 4, max = \"10s\", "
         "tiers = 4 }\n", {}, r"retry.delays_from.initial must be at least 1ms"),
        ("[retry]\ndelays_from = { initial = \"5s\", multiplier = 0.5, max = \"10m\", "
         "tiers = 4 }\n", {}, r"retry.delays_from.multiplier must be a number >= 1, got 0.5"),
        ("[retry]\ndelays_from = { initial = \"5s\", multiplier = \"4\", max = \"10m\", "
         "tiers = 4 }\n", {}, r"retry.delays_from.multiplier must be a number >= 1, got '4'"),
        ("", {"CLINIC_EVENTS_RETRY_IN_PROCESS_BACKOFF": "1s",
              "CLINIC_EVENTS_RETRY_IN_PROCESS_MAX_BACKOFF": "10ms"},
         r"retry.in_process_max_backoff \(10ms\) must be at least retry.in_process_backoff "
         r"\(1s\)"),
        ("[retry]\nin_process_backoff = \"6s\"\n", {},
         r"retry.in_process_max_backoff \(5s\) must be at least retry.in_process_backoff"),
        ("[topics]\nmain = \"bad topic!\"\n", {},
         r"^topics.main: topic name 'bad topic!' contains invalid characters"),
        ("[kafka]\ntransactional_hops = \"yes\"\n", {},
         r"^kafka.transactional_hops must be true or false, got 'yes'$"),
        (f"[topics]\nmain = \"{'a' * 240}\"\n", {},
         r"^topics.main: a topic name derived from it is not valid \(topic name a{24}\.\.\."
         r"a{14}\.retry\.30s is 250 characters long; .*\); shorten topics.main$"),
    ],
)
def test_bad_configuration_names_the_key_and_valid_values(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(_write(tmp_path, text), env=env)


def test_transactional_hops_are_on_unless_turned_off(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    assert load_settings(path, env={}).kafka.transactional_hops is True
    off = load_settings(path, env={"CLINIC_EVENTS_KAFKA_TRANSACTIONAL_HOPS": "false"})
    assert off.kafka.transactional_hops is False


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_unrelated_clinic_events_variables_are_ignored(tmp_path: Path) -> None:
    settings = load_settings(None, env={"CLINIC_EVENTS_STATE_DIR": "/tmp/x"})
    assert settings.topics.main == "clinic.events"


def test_secret_client_settings_are_masked(tmp_path: Path) -> None:
    path = _write(tmp_path, '[kafka.client]\n"sasl.password" = "hunter2"\n'
                            '"security.protocol" = "SASL_SSL"\n')
    kafka = load_settings(path, env={}).kafka
    assert kafka.client["sasl.password"] == "hunter2"
    assert kafka.masked_client() == {"sasl.password": "****", "security.protocol": "SASL_SSL"}


def test_cli_exits_2_with_one_line_naming_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "[retry]\ndelays = []\n")
    result = CliRunner().invoke(main, ["topics", "ensure", "--config", str(path)])
    assert result.exit_code == 2
    assert "retry.delays" in result.output


def test_run_refuses_to_start_on_an_unreachable_dedup_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    path = _write(tmp_path, '[dedup]\nstore = "redis://127.0.0.1:1/0"\n')
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert "dedup.store" in result.output


def test_each_client_kind_gets_only_the_pass_through_properties_it_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, free_tcp_port: int,
) -> None:
    """librdkafka warns at every start about a property of the other client kind; shared
    ones (security, timeouts) reach every client."""
    path = _write(tmp_path, f'[kafka]\nbootstrap_servers = "127.0.0.1:{free_tcp_port}"\n'
                            '[kafka.client]\n"session.timeout.ms" = "10000"\n'
                            '"linger.ms" = "20"\n"socket.timeout.ms" = "5000"\n')
    settings = load_settings(path, env={})
    producer_config = settings.producer_config()
    consumer_config = settings.consumer_config(**{"group.id": "g"})
    assert "session.timeout.ms" not in producer_config
    assert producer_config["linger.ms"] == "20"
    assert "linger.ms" not in consumer_config
    assert consumer_config["session.timeout.ms"] == "10000"
    admin_config = settings.admin_config()
    assert not {"session.timeout.ms", "linger.ms"} & admin_config.keys()
    assert {c["socket.timeout.ms"] for c in (producer_config, consumer_config, admin_config)} \
        == {"5000"}
    with caplog.at_level(logging.DEBUG, logger=KAFKA_CLIENT_LOGGER):
        producer, consumer = Producer(producer_config), Consumer(consumer_config)
        producer.poll(0.2)
        consumer.poll(0.2)
        consumer.close()
        producer.flush(0)
    assert [r.getMessage() for r in caplog.records if "CONFWARN" in r.getMessage()] == []


def test_librdkafka_log_lines_go_through_python_logging(
    caplog: pytest.LogCaptureFixture, free_tcp_port: int,
) -> None:
    """A client built from the settings logs to ``clinic_events.kafka``, not raw to stderr."""
    settings = load_settings(env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_tcp_port}"})
    producer = Producer(settings.producer_config(**{"message.timeout.ms": 1000}))
    deadline = time.monotonic() + 10
    with caplog.at_level(logging.WARNING, logger=KAFKA_CLIENT_LOGGER):
        producer.produce("t", b"x")
        while time.monotonic() < deadline and not any(
                r.name == KAFKA_CLIENT_LOGGER for r in caplog.records):
            producer.poll(0.1)
    producer.flush(0)
    assert any("Connection refused" in r.getMessage() for r in caplog.records
               if r.name == KAFKA_CLIENT_LOGGER)
    assert settings.consumer_config()["logger"].name == KAFKA_CLIENT_LOGGER
    assert "logger" not in settings.admin_config()  # not polled: its lines stay on stderr


@pytest.fixture
def free_tcp_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_admin_clients_reconnect_to_a_down_broker_about_once_a_second_unless_configured(
    tmp_path: Path,
) -> None:
    """librdkafka's default backoff logs a connect failure every ~50 ms while a CLI waits."""
    default = load_settings(_write(tmp_path, ""), env={}).admin_config()
    assert (default["reconnect.backoff.ms"], default["reconnect.backoff.max.ms"]) == (1000, 10000)
    tuned = load_settings(_write(tmp_path, '[kafka.client]\n"reconnect.backoff.ms" = "200"\n'),
                          env={})
    assert tuned.admin_config()["reconnect.backoff.ms"] == "200"
    assert "reconnect.backoff.ms" not in load_settings(
        _write(tmp_path, ""), env={}).consumer_config()  # the data path keeps reconnecting fast


def test_admin_clients_get_no_producer_only_or_logger_properties(tmp_path: Path) -> None:
    path = _write(tmp_path, '[kafka.client]\n"linger.ms" = "20"\n"socket.timeout.ms" = "5000"\n')
    settings = load_settings(path, env={})
    admin = settings.admin_config()
    assert "linger.ms" not in admin
    assert "logger" not in admin
    assert admin["socket.timeout.ms"] == "5000"
    assert settings.producer_config()["linger.ms"] == "20"


DELAYS_FROM = '{ initial = "5s", multiplier = 4, max = "10m", tiers = 4 }'
GENERATED = (5_000, 20_000, 80_000, 320_000)


def test_delays_from_can_come_from_the_environment_and_replaces_the_files_delays(
    tmp_path: Path,
) -> None:
    """Environment beats file across the alternatives: generated tiers even though the file
    lists delays, and listed delays even though the file generates them."""
    listed = _write(tmp_path, '[retry]\ndelays = ["1s", "2s"]\n')
    env = {"CLINIC_EVENTS_RETRY_DELAYS_FROM": DELAYS_FROM}
    assert load_settings(None, env=env).retry.delays_ms == GENERATED
    assert load_settings(listed, env=env).retry.delays_ms == GENERATED
    generating = _write(tmp_path, f"[retry]\ndelays_from = {DELAYS_FROM}\n")
    assert load_settings(generating, env={"CLINIC_EVENTS_RETRY_DELAYS": "3s,4s"}
                         ).retry.delays_ms == (3_000, 4_000)


@pytest.mark.parametrize(("env", "message"), [
    ({"CLINIC_EVENTS_RETRY_DELAYS_FROM": "5s"},
     r"CLINIC_EVENTS_RETRY_DELAYS_FROM must be an inline TOML table, e.g. \{ initial"),
    ({"CLINIC_EVENTS_RETRY_DELAYS_FROM": "{ initial = 5s }"},
     r"CLINIC_EVENTS_RETRY_DELAYS_FROM must be an inline TOML table"),
    ({"CLINIC_EVENTS_RETRY_DELAYS_FROM": '{ initial = "0s", multiplier = 2, max = "1m", '
                                         "tiers = 2 }"},
     r"retry.delays_from.initial must be at least 1ms"),
    ({"CLINIC_EVENTS_RETRY_DELAYS_FROM": '{ initial = "5s" }'},
     r"retry.delays_from must be a table with exactly initial, multiplier, max, tiers"),
    ({"CLINIC_EVENTS_RETRY_DELAYS_FROM": DELAYS_FROM, "CLINIC_EVENTS_RETRY_DELAYS": "5s"},
     r"CLINIC_EVENTS_RETRY_DELAYS and CLINIC_EVENTS_RETRY_DELAYS_FROM are both set; set one"),
    ({"CLINIC_EVENTS_DELIVER_URL": "http://x"},
     r"unknown variable CLINIC_EVENTS_DELIVER_URL; settings variables are "
     r"CLINIC_EVENTS_<SECTION>_<KEY> with sections KAFKA, TOPICS, RETRY, DEDUP, DELIVERY, "
     r"CLASSIFICATION, METRICS, BREAKER, DEAD_LETTER, ORDERING, SERVE, NOTIFY .*other variables: "
     r"CLINIC_EVENTS_CONFIG, "
     r"CLINIC_EVENTS_STATE_DIR, CLINIC_EVENTS_CACHE_DIR"),
    ({"CLINIC_EVENTS_KAFKA_CLIENT_": "x"}, r"CLINIC_EVENTS_KAFKA_CLIENT_ names no librdkafka"),
    ({"CLINIC_EVENTS_KAFKA_CLIENT": '"security.protocol=SSL"'},
     r"CLINIC_EVENTS_KAFKA_CLIENT must be an inline TOML table"),
    ({"CLINIC_EVENTS_KAFKA_CLIENTID": "x"},
     r"unknown key CLINIC_EVENTS_KAFKA_CLIENTID; valid keys in \[kafka\]: .*"
     r"CLINIC_EVENTS_KAFKA_CLIENT_<PROPERTY> sets one librdkafka property"),
    ({"CLINIC_EVENTS_DELIVERY_URL": "http://x", "CLINIC_EVENTS_DELIVERY_HANDLER": "m:f"},
     r"CLINIC_EVENTS_DELIVERY_URL and CLINIC_EVENTS_DELIVERY_HANDLER are both set; set one: "
     r"CLINIC_EVENTS_DELIVERY_URL or CLINIC_EVENTS_DELIVERY_HANDLER, not both"),
])
def test_bad_environment_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, env=env)


def test_kafka_client_properties_can_come_from_the_environment(tmp_path: Path) -> None:
    """One variable per property (``_`` read as ``.``) or an inline table; the environment
    beats the file property by property, and the single-property form beats the table."""
    path = _write(tmp_path, '[kafka.client]\n"security.protocol" = "PLAINTEXT"\n'
                            '"sasl.username" = "file-user"\n')
    settings = load_settings(path, env={
        "CLINIC_EVENTS_KAFKA_CLIENT_SECURITY_PROTOCOL": "SASL_SSL",
        "CLINIC_EVENTS_KAFKA_CLIENT_CLIENT_ID": "from-env",
        "CLINIC_EVENTS_KAFKA_CLIENT": '{ "linger.ms" = 20, "client.id" = "from-table" }',
    })
    assert settings.kafka.client == {"security.protocol": "SASL_SSL", "sasl.username": "file-user",
                                     "client.id": "from-env", "linger.ms": "20"}
    assert settings.producer_config()["security.protocol"] == "SASL_SSL"


def test_variables_that_are_not_settings_are_allowed() -> None:
    settings = load_settings(None, env={"CLINIC_EVENTS_STATE_DIR": "/tmp/x",
                                        "CLINIC_EVENTS_CACHE_DIR": "/tmp/y"})
    assert settings.topics.main == "clinic.events"


def test_delivery_url_and_handler_in_one_file_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, '[delivery]\nurl = "http://x/events"\nhandler = "m:f"\n')
    with pytest.raises(ConfigError, match=r"delivery.url and delivery.handler are both set; "
                                          r"set one: delivery.url or delivery.handler, not both"):
        load_settings(path, env={})


def test_delivery_target_from_the_environment_replaces_the_files_other_one(
    tmp_path: Path,
) -> None:
    with_handler = _write(tmp_path, '[delivery]\nhandler = "m:f"\n')
    delivery = load_settings(with_handler, env={"CLINIC_EVENTS_DELIVERY_URL": "http://e/v"}
                             ).delivery
    assert (delivery.url, delivery.handler) == ("http://e/v", None)
    with_url = _write(tmp_path, '[delivery]\nurl = "http://f/v"\n')
    delivery = load_settings(with_url, env={"CLINIC_EVENTS_DELIVERY_HANDLER": "m:g"}).delivery
    assert (delivery.url, delivery.handler) == (None, "m:g")
    delivery = load_settings(None, env={}).delivery
    assert (delivery.url, delivery.handler) == ("http://127.0.0.1:8080/events", None)


def test_kafka_client_must_be_a_table_of_plain_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[kafka.client\] must be a table"):
        load_settings(_write(tmp_path, '[kafka]\nclient = "x"\n'),
                      env={"CLINIC_EVENTS_KAFKA_CLIENT_CLIENT_ID": "y"})
    with pytest.raises(ConfigError, match=r"\[kafka.client\] 'sasl' must be a string, number"):
        load_settings(_write(tmp_path, '[kafka.client.sasl]\nusername = "u"\n'), env={})


def test_cli_refuses_a_misspelt_variable_with_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["topics", "ensure", "--config",
                                       str(_write(tmp_path, ""))],
                                env={"CLINIC_EVENTS_DELIVER_URL": "http://x"})
    assert result.exit_code == 2
    assert result.output.startswith(
        "clinic-events: configuration error: unknown variable CLINIC_EVENTS_DELIVER_URL")


@pytest.mark.parametrize("name", ["enable.auto.offset.store", "acks", "group.id",
                                  "isolation.level"])
def test_a_property_clinic_events_manages_is_refused_in_kafka_client(
    tmp_path: Path, name: str
) -> None:
    """It would silently lose to the value the guarantees need, or break them."""
    path = _write(tmp_path, f'[kafka.client]\n"{name}" = "x"\n')
    with pytest.raises(ConfigError, match=rf"\[kafka.client\] {name} is set by clinic-events"):
        load_settings(path, env={})


def test_kafka_client_changes_the_defaults_but_not_what_a_client_requires(
    tmp_path: Path
) -> None:
    settings = load_settings(_write(tmp_path, '[kafka.client]\n"linger.ms" = "50"\n'), env={})
    config = settings.producer_config({"linger.ms": 5}, acks="all")
    assert (config["linger.ms"], config["acks"]) == ("50", "all")
    assert settings.producer_config({"linger.ms": 5}, **{"linger.ms": 1})["linger.ms"] == 1
