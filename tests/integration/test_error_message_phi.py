"""A Python handler's error text, quoting the event's PHI, on a real broker and in ``dlq show``."""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from consumer.delivery.handlers import CallableDelivery, DeliveryContext
from retry_topics import headers as h
from tests.integration.harness import (
    header,
    new_event,
    produce,
    read_topic,
    run_cli,
    running_consumer,
    settings_for,
    wait_until,
    write_config,
)

NAME = ("Ada", "Testperson")
MEMBER = "TEST-MBR-000101"


def _reject(event: dict[str, Any], _context: DeliveryContext) -> None:
    demographics = event["payload"]["demographics"]
    raise ValueError(f"no coverage for {demographics['first_name']} "
                     f"{demographics['last_name']}, member "
                     f"{event['payload']['insurance_member_id']}")


def _leaks(text: str) -> list[str]:
    return [value for value in (*NAME, MEMBER) if value.lower() in text.lower()]


def test_a_handlers_value_error_reaches_the_dlq_and_dlq_show_without_the_patients_name(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A ValueError quoting the patient's name and member id is masked in every hop's header."""
    caplog.set_level(logging.DEBUG)
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                          delays=("1s",))
    settings = settings_for(config)
    event = new_event("intake.submitted", insurance_member_id=MEMBER)
    event["payload"]["demographics"].update(first_name=NAME[0], last_name=NAME[1],
                                            date_of_birth=date(1985, 4, 12))
    handler = CallableDelivery(_reject, settings.classification)  # ValueError: transient
    with running_consumer(settings, handler=handler) as assembly:
        produce(kafka_bootstrap, topic_prefix, [event])
        (dead,) = read_topic(kafka_bootstrap, f"{topic_prefix}.dlq", 1)
        assert wait_until(lambda: assembly.runner.stats["dead_lettered"] == 1, 10)
    (retried,) = read_topic(kafka_bootstrap, f"{topic_prefix}.retry.1s", 1)
    for message in (retried, dead):
        text = (header(message, h.ERROR_MESSAGE) or b"").decode()
        assert text == "ValueError: no coverage for *** ***, member ***"
    assert _leaks(caplog.text) == []

    human = run_cli(tmp_path, "dlq", "show", "--config", str(config))
    document = run_cli(tmp_path, "dlq", "show", "--json", "--config", str(config))
    assert (human.returncode, document.returncode) == (0, 0), human.stderr + document.stderr
    (shown,) = json.loads(document.stdout)["records"]
    assert shown["error_message"] == "ValueError: no coverage for *** ***, member ***"
    assert _leaks(human.stdout + human.stderr + document.stdout) == []
    revealed = run_cli(tmp_path, "dlq", "show", "--json", "--reveal", "--config", str(config))
    assert MEMBER in revealed.stdout  # the value still holds it, for whoever may see it
