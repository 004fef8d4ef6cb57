"""Log lines on stderr: one format for the application, librdkafka and OpenTelemetry."""

from __future__ import annotations

import json
import logging

import pytest

from consumer.config.settings import KAFKA_CLIENT_LOGGER
from consumer.events.codec import EventCodec
from consumer.pipeline.outcome_log import OutcomeSummary, configure_logging, log_outcome
from consumer.pipeline.records import InboundRecord
from retry_topics.headers import RecordHeaders, encode_headers


def test_library_warnings_come_out_as_json_lines_like_the_applications(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("WARNING", json_lines=True)
    logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter").warning(
        "Failed to export span batch")
    logging.getLogger(KAFKA_CLIENT_LOGGER).warning("FAIL connect refused")
    logging.getLogger("opentelemetry.sdk").info("not at WARNING: left out")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["logger"], line["msg"]) for line in lines] == [
        ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "Failed to export span batch"),
        (KAFKA_CLIENT_LOGGER, "FAIL connect refused"),
    ]


def test_an_undecodable_records_dead_letter_line_carries_its_header_event_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``dlq show`` lists the dead letter under its header's event id: grep finds both."""
    identity = encode_headers(RecordHeaders(event_id="evt-7", event_type="intake.submitted"))
    record = InboundRecord("clinic.events", 2, 5, None, b"appt-1", b"\x00not avro",
                           tuple(identity))
    record.decode(EventCodec())
    configure_logging("INFO", json_lines=True)
    log_outcome("dead_lettered", record, error_class="undecodable",
                destination="clinic.events.dlq")
    (line,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert (line["outcome"], line["event_id"], line["event_type"]) == (
        "dead_lettered", "evt-7", "intake.submitted")


def test_header_text_cannot_forge_a_log_line_or_reach_the_terminal_raw(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A producer's header may hold a line break and escape codes: the text line stays one
    line, with them escaped (as ``dlq show`` shows them)."""
    forged = "ev-1\n12:00:00 ERROR   forged line\x1b[31m"
    identity = encode_headers(RecordHeaders(event_id=forged, event_type="intake.submitted"))
    record = InboundRecord("clinic.events", 2, 5, None, b"k", b"\x00not avro", tuple(identity))
    record.decode(EventCodec())
    configure_logging("INFO", json_lines=False)
    log_outcome("dead_lettered", record, error_class="undecodable",
                destination="clinic.events.dlq")
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "\x1b" not in err
    assert "ev-1\\n12:00:00 ERROR   forged line\\x1b[31m" in err


def _record() -> InboundRecord:
    return InboundRecord("clinic.events", 0, 5, None, b"appt-1", b"", ())


@pytest.mark.parametrize(("level", "logged"), [
    ("INFO", ["retried", "dead_lettered"]),
    ("WARNING", ["dead_lettered"]),
    ("DEBUG", ["delivered", "duplicate", "retried", "dead_lettered"]),
])
def test_happy_outcomes_have_their_own_lines_only_at_debug(
    capsys: pytest.CaptureFixture[str], level: str, logged: list[str]
) -> None:
    """At the default INFO level only the outcomes that need attention get a line each."""
    configure_logging(level, json_lines=True)
    for outcome in ("delivered", "duplicate", "retried", "dead_lettered"):
        log_outcome(outcome, _record())
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["outcome"] for line in lines] == logged


def test_the_summary_counts_every_outcome_once_per_interval(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json_lines=True)
    summary = OutcomeSummary(started_s=100.0, interval_s=10.0)
    summary.note("delivered", 40)
    summary.note("dead_lettered")
    summary.tick(109.9)  # not yet
    assert capsys.readouterr().err == ""
    summary.tick(110.0)
    summary.tick(125.0)  # nothing since: no line
    summary.note("duplicate", 2)
    summary.tick(126.0, final=True)  # shutdown tells the rest at once
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["msg"], line["delivered"], line["duplicate"], line["retried"],
             line["dead_lettered"], line["summary_s"]) for line in lines] == [
        ("outcomes", 40, 0, 0, 1, 10.0), ("outcomes", 0, 2, 0, 0, 1.0)]
