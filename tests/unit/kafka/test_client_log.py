"""ClientLog: a librdkafka client logger that passes each distinct line on once."""

from __future__ import annotations

import json
import logging
import re

import pytest
from confluent_kafka import KafkaError

from consumer.config.settings import KAFKA_CLIENT_LOGGER
from consumer.kafka.client_log import REPEAT_LOG_INTERVAL_S, ClientLog, ConnectionLog

CONNECT_FAILED = ("[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to "
                  "ipv4#127.0.0.1:1 failed: Connection refused (after {}ms in state CONNECT)")


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == KAFKA_CLIENT_LOGGER]


def _fail(log: ClientLog | ConnectionLog, elapsed_ms: int = 0) -> None:
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


def test_lines_the_caller_reports_itself_are_logged_at_info_others_at_their_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, KAFKA_CLIENT_LOGGER)
    log = ClientLog(clock=ManualClock(), reported=re.compile("fenced by a newer instance"))
    fatal = "Fatal error: Local: This instance has been fenced by a newer instance"
    log.log(logging.CRITICAL, "%s [%s] %s", "FATAL", "rdkafka#producer-5", fatal)
    log.log(logging.ERROR, "%s [%s] %s", "OTHER", "rdkafka#producer-5", "something else")
    log.log(logging.DEBUG, "%s [%s] %s", "TXN", "rdkafka#producer-5", "fenced by a newer instance")
    assert _lines(caplog) == [
        (logging.INFO, f"FATAL [rdkafka#producer-5] {fatal}"),
        (logging.ERROR, "OTHER [rdkafka#producer-5] something else"),
        (logging.DEBUG, "TXN [rdkafka#producer-5] fenced by a newer instance")]


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


def _stats(*states: str) -> str:
    brokers = {f"127.0.0.1:9092/{n}": {"state": s, "nodeid": n} for n, s in enumerate(states)}
    return json.dumps({"brokers": brokers})


def test_an_outage_of_run_s_clients_is_one_line_down_and_one_line_back_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """200 connect failures and errors while the broker restarts make two lines."""
    caplog.set_level(logging.INFO, KAFKA_CLIENT_LOGGER)
    clock = ManualClock()
    log = ConnectionLog("consumer", clock=clock)
    log.on_stats(_stats("UP"))  # connected: nothing to say
    for attempt in range(150):
        _fail(log, elapsed_ms=attempt)
        clock.now += 0.05
    for _ in range(50):
        log.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    log.on_stats(_stats("INIT"))  # still down
    assert log.unreachable
    log.on_stats(_stats("UP"))
    lines = _lines(caplog)
    assert len(lines) == 2, lines
    assert lines[0][0] == logging.ERROR
    assert lines[0][1].startswith("Kafka is unreachable (consumer): FAIL [rdkafka#consumer-1]")
    assert lines[1] == (logging.WARNING, "Kafka is reachable again (consumer): 199 client "
                                         "line(s) suppressed in 7 s")
    assert log.suppressed == 0
    log.log(logging.WARNING, "%s", "something else")  # outside an outage: passed on
    log.close()
    assert _lines(caplog)[2:] == [(logging.WARNING, "something else")]


def test_a_long_outage_is_recalled_with_its_count_and_a_close_reports_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, KAFKA_CLIENT_LOGGER)
    clock = ManualClock()
    log = ConnectionLog("producer", clock=clock)
    _fail(log)
    for _ in range(10):
        clock.now += REPEAT_LOG_INTERVAL_S / 5
        _fail(log)
    log.close()
    messages = [text for _, text in _lines(caplog)]
    assert len(messages) == 4
    assert messages[1] == ("Kafka is still unreachable (producer) after 60 s: 5 client line(s) "
                           "suppressed so far")
    assert messages[3] == ("Kafka was still unreachable (producer) when the client closed: "
                           "10 client line(s) suppressed")


def test_a_connection_closed_while_the_broker_is_up_is_no_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, KAFKA_CLIENT_LOGGER)
    log = ConnectionLog("consumer")
    log.log(logging.INFO, "%s", "127.0.0.1:9092/1: Disconnected (after 600000ms in state UP)")
    assert not log.unreachable
    assert len(_lines(caplog)) == 1
