"""CLI details: duration and rate bounds make an impossible value a usage error; run's summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from consumer.cli.main import main
from consumer.cli.options import Duration, Rate
from consumer.cli.run import describe_stats
from consumer.errors import KafkaUnreachable
from consumer.kafka.provisioning import PartitionCountError, TopicLayoutError


@pytest.mark.parametrize(("text", "ms"), [("30s", 30_000), ("1m30s", 90_000), ("250ms", 250)])
def test_durations_convert_to_milliseconds(text: str, ms: int) -> None:
    assert Duration(minimum_ms=1).convert(text, None, None) == ms


def test_a_duration_below_the_minimum_is_refused() -> None:
    with pytest.raises(click.BadParameter, match=r"must be at least 1ms, got '0s'"):
        Duration(minimum_ms=1).convert("0s", None, None)
    assert Duration().convert("0s", None, None) == 0


@pytest.mark.parametrize("command", [
    ["publish", "--file", "-", "--timeout", "0s"],
    ["lag", "--timeout", "0s"],
    ["lag", "--watch", "--interval", "0s"],
    ["demo", "--timeout", "0s"],
])
def test_a_zero_timeout_is_a_usage_error_before_anything_connects(command: list[str]) -> None:
    result = CliRunner().invoke(main, command, input="")
    assert result.exit_code == 2
    assert "must be at least 1ms, got '0s'" in result.output


@pytest.mark.parametrize(("options", "message"), [
    (["--count", "3"], "--count needs --watch"),
    (["--interval", "1s"], "--interval needs --watch"),
    (["--interval", "1s", "--count", "0"], "--interval and --count need --watch"),
])
def test_lag_pacing_without_watch_is_a_usage_error_before_anything_connects(
    options: list[str], message: str,
) -> None:
    """They pace ``--watch``; without it they were ignored silently."""
    result = CliRunner().invoke(main, ["lag", *options])
    assert result.exit_code == 2
    assert f"Error: {message}" in result.output


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0.0, -1.0])
def test_a_rate_that_is_not_a_finite_number_above_zero_is_refused(value: float) -> None:
    with pytest.raises(click.BadParameter):
        Rate().convert(value, None, None)
    assert Rate().convert(2.5, None, None) == 2.5


@pytest.mark.parametrize("command", [["publish", "--file", "-"], ["dlq", "replay"]])
@pytest.mark.parametrize("text", ["nan", "inf"])
def test_a_rate_of_nan_or_inf_is_a_usage_error_before_anything_connects(
    command: list[str], text: str,
) -> None:
    """``nan`` once crashed publish's token bucket, and made ``dlq replay`` run unthrottled
    and write invalid JSON into its audit record."""
    result = CliRunner().invoke(main, [*command, "--rate", text], input="")
    assert result.exit_code == 2
    assert f"'{text}' is not a finite number > 0" in result.output


def test_run_reports_its_counts_in_words_with_retries_per_tier() -> None:
    """The final "stopped cleanly (...)" line counts what the periodic summaries count,
    parked hops included."""
    stats = {"delivered": 20, "retried": 3, "retried:2": 1, "retried:1": 2, "dead_lettered": 1,
             "parked": 4}
    assert describe_stats(stats) == ("delivered 20, duplicate 0, retried 3 (tier 1: 2, "
                                     "tier 2: 1), parked 4, dead_lettered 1")
    assert describe_stats({}) == "delivered 0, duplicate 0, retried 0, parked 0, dead_lettered 0"


@pytest.mark.parametrize(("error", "exit_code"), [
    (PartitionCountError("clinic.events has 3 partitions, configuration needs 6"), 2),
    (KafkaUnreachable("cannot reach Kafka at 127.0.0.1:9092 to list topics"), 4),
    (TopicLayoutError("could not create topic clinic.events.dlq: Authorization failed"), 1),
])
def test_topics_ensure_json_reports_a_failure_on_stdout_too(
    monkeypatch: pytest.MonkeyPatch, error: TopicLayoutError | KafkaUnreachable, exit_code: int,
) -> None:
    """Too few partitions is bad configuration (2); an unreachable broker is exit 4, as for
    every command; a creation the broker refuses is 1."""
    def refuse(_settings: object) -> None:
        raise error

    monkeypatch.setattr("consumer.cli.topics.ensure_topics_logged", refuse)
    result = CliRunner().invoke(main, ["topics", "ensure", "--json"])
    assert result.exit_code == exit_code
    assert json.loads(result.stdout) == {"error": str(error)}


def test_publish_json_answers_with_an_error_document_when_it_stops_before_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error = KafkaUnreachable("cannot reach Kafka at 127.0.0.1:9092 to list topics")

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise error

    monkeypatch.setattr("consumer.kafka.publishing.ensure_topics_logged", refuse)
    result = CliRunner().invoke(main, ["publish", "--file", "-", "--json"], input="")
    assert result.exit_code == 4
    assert json.loads(result.stdout) == {"error": str(error)}


@pytest.mark.parametrize(("client", "linger"), [
    ({}, "5"), ({"linger.ms": 50}, "50"), ({"queue.buffering.max.ms": 40}, "40")])
def test_a_publish_timeout_within_linger_is_a_usage_error_naming_the_option(
    tmp_path: Path, client: dict[str, int], linger: str,
) -> None:
    """librdkafka refuses such a producer; the operator is told which option to change,
    before anything connects (no broker listens here)."""
    config = tmp_path / "clinic-events.toml"
    config.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\n[kafka.client]\n'
                      + "".join(f'"{k}" = {v}\n' for k, v in client.items()))
    result = CliRunner().invoke(main, ["publish", "--config", str(config), "--file", "-",
                                       "--json", "--timeout", f"{linger}ms"], input="")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"] == (
        f"--timeout must be longer than the producer's linger.ms ({linger} ms), which a "
        "record may wait for its batch")


def test_publish_json_answers_with_an_error_document_for_a_topic_that_is_no_main_topic(
) -> None:
    result = CliRunner().invoke(main, ["publish", "--file", "-", "--json", "--topic",
                                       "clinic.events.dlq"], input="")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"].startswith(
        "--topic: clinic.events.dlq is a dead-letter topic")
