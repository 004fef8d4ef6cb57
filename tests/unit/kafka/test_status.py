"""Reading the status topic (what ``lag`` shows per instance), with a stand-in client."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

import consumer.kafka.status
from consumer.config.settings import load_settings
from consumer.kafka.status import read_states
from retry_topics.system_state import SystemState

STATE = SystemState(instance="host:1:abc", condition="outage", since_ms=1_000,
                    reason="503", stated_at_ms=2_000, waiting=3)


class Message:
    def __init__(self, partition: int, value: bytes | None = None, *, eof: bool = False) -> None:
        self._partition, self._value, self._eof = partition, value, eof

    def error(self) -> KafkaError | None:
        return KafkaError(KafkaError._PARTITION_EOF) if self._eof else None

    def partition(self) -> int:
        return self._partition

    def key(self) -> bytes:
        return b"host:1:abc"

    def value(self) -> bytes | None:
        return self._value


class LibrdkafkaLikeReader:
    """Hands out what it has, but, like librdkafka, only after the whole timeout unless it
    has the ``n`` records asked for; notes the time it would have waited."""

    def __init__(self, messages: list[Message]) -> None:
        self._messages = messages
        self.waited_s = 0.0

    def list_topics(self, topic: str, timeout: float) -> Any:
        partitions = {0: object(), 1: object()}
        return type("M", (), {"topics": {topic: type("T", (), {
            "error": None, "partitions": partitions})()}})()

    def assign(self, _partitions: Any) -> None: ...

    def consume(self, n: int, timeout: float) -> list[Message]:
        taken, self._messages = self._messages[:n], self._messages[n:]
        if len(taken) < n:
            self.waited_s += timeout
        return taken

    def close(self) -> None: ...


def test_the_status_topic_is_read_to_its_end_without_waiting_out_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lag`` took its whole timeout (15 s) on every call: one consume asked for 500
    records with the full timeout, which librdkafka waits out past the partitions' end."""
    reader = LibrdkafkaLikeReader([Message(0, STATE.to_json()), Message(0, eof=True),
                                   Message(1, eof=True)])
    monkeypatch.setattr(consumer.kafka.status, "kafka_client", lambda *_args: reader)
    config = tmp_path / "c.toml"
    config.write_text("")
    states = read_states(load_settings(config, env={}), timeout_s=10.0)
    assert states == [STATE]
    assert reader.waited_s <= 0.5


def test_a_broker_down_while_reading_is_one_logged_line_and_a_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """librdkafka logs a failed connect every ~50 ms while the broker is down, and ``run``
    samples the status topic every ``lag_interval``: each line was logged, 94 in 5 s."""
    refused = "FAIL [thrd:127.0.0.1:9092/bootstrap]: Connect to ipv4#127.0.0.1:9092 failed: " \
              "Connection refused (after {}ms in state CONNECT)"

    class DownReader(LibrdkafkaLikeReader):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__([])
            self._logger = config["logger"]

        def list_topics(self, topic: str, timeout: float) -> Any:
            for after in range(100):
                self._logger.log(logging.ERROR, refused.format(after))
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    monkeypatch.setattr(consumer.kafka.status, "kafka_client",
                        lambda _kind, config, _name: DownReader(config))
    config = tmp_path / "c.toml"
    config.write_text("")
    with caplog.at_level(logging.INFO):
        assert read_states(load_settings(config, env={}), timeout_s=5.0) == []
    lines = [r.getMessage() for r in caplog.records if "Connection refused" in r.getMessage()]
    assert lines == [refused.format(0), f"{refused.format(99)} (repeated 99 more times)"]
