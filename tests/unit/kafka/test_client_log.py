"""ClientLog: a librdkafka client logger that passes each distinct line on once."""

from __future__ import annotations

import logging

import pytest

from consumer.config.settings import KAFKA_CLIENT_LOGGER
from consumer.kafka.client_log import REPEAT_LOG_INTERVAL_S, ClientLog

CONNECT_FAILED = ("[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to "
                  "ipv4#127.0.0.1:1 failed: Connection refused (after {}ms in state CONNECT)")


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == KAFKA_CLIENT_LOGGER]


def _fail(log: ClientLog, elapsed_ms: int = 0) -> None:
    """One line as confluent-kafka hands it over: ``log(level, fmt, facility, name, text)``."""
    log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1",
            CONNECT_FAILED.format(elapsed_ms))


def test_repeated_client_lines_are_logged_once_and_counted_on_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """580 connect failures (differing only in 'after Nms') make two lines, not 580."""
    caplog.set_level(logging.WARNING, KAFKA_CLIENT_LOGGER)
    log = ClientLog(clock=ManualClock())
    for attempt in range(580):
        _fail(log, elapsed_ms=attempt % 2)
    log.log(logging.WARNING, "%s [%s] %s", "OTHER", "rdkafka#consumer-1", "something else")
    first = f"FAIL [rdkafka#consumer-1] {CONNECT_FAILED.format(0)}"
    assert _lines(caplog) == [(logging.ERROR, first),
                              (logging.WARNING, "OTHER [rdkafka#consumer-1] something else")]
    log.close()
    assert _lines(caplog)[2:] == [
        (logging.ERROR, f"FAIL [rdkafka#consumer-1] {CONNECT_FAILED.format(1)} "
                        "(repeated 579 more times)")]
    log.close()
    assert len(_lines(caplog)) == 3  # reported once


def test_a_long_outage_is_logged_again_with_its_count_after_the_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, KAFKA_CLIENT_LOGGER)
    clock = ManualClock()
    log = ClientLog(clock=clock)
    for _ in range(10):
        _fail(log)
    clock.now += REPEAT_LOG_INTERVAL_S
    _fail(log)
    _fail(log)
    log.close()
    messages = [message for _, message in _lines(caplog)]
    assert len(messages) == 3
    assert messages[1].endswith(f"(and 9 times before in {REPEAT_LOG_INTERVAL_S:.0f} s)")
    assert messages[2].endswith("(repeated 1 more times)")
