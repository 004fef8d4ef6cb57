"""Log lines on stderr: one format for the application, librdkafka and OpenTelemetry."""

from __future__ import annotations

import json
import logging

import pytest

from consumer.config import KAFKA_CLIENT_LOGGER
from consumer.outcome_log import configure_logging


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
