"""``examples/handler.py``, the handler the README teaches, keeps the handler contract.

It is imported and called here as ``run`` would: loaded from its ``module:callable`` spec
and wrapped by ``CallableDelivery``, with real events.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consumer import DeliveryContext, PermanentError, TransientError
from consumer.config.settings import load_settings
from consumer.delivery.handlers import CallableDelivery, load_callable
from consumer.events.model import event_from_json
from examples import handler as example
from retry_topics.classification import ExceptionRules
from tests.unit.sample_events import sample_event

EVENTS_FILE = Path(__file__).resolve().parents[2] / "examples" / "events.jsonl"


def _context(event: dict[str, Any], attempt: int = 1) -> DeliveryContext:
    return DeliveryContext(event_id=event["event_id"], event_type=event["event_type"],
                           topic="clinic.events", partition=0, offset=7, attempt=attempt,
                           traceparent=None)


def _delivery(client: example.FakeEhrClient) -> CallableDelivery:
    return CallableDelivery(example.EhrDelivery(client), ExceptionRules())


def test_the_configured_spec_loads_the_module_level_handler() -> None:
    assert load_callable("examples.handler:deliver") is example.deliver


def test_an_event_is_written_to_the_ehr_once_however_often_it_is_delivered() -> None:
    client = example.FakeEhrClient(facilities={"clinic-north"})
    event = sample_event("appointment.scheduled", event_id="evt-1")
    delivery = _delivery(client)
    delivery.deliver(event, _context(event))
    delivery.deliver(event, _context(event, attempt=2))  # at-least-once: it may come again
    assert client.resources == {("appointment", "appt-2001"): example.StoredResource(
        "appointment", "evt-1", "appointment.scheduled")}
    assert client.idempotency_keys == {"evt-1"}


def test_a_busy_ehr_is_transient_with_its_retry_after_and_the_retry_succeeds() -> None:
    client = example.FakeEhrClient(facilities={"clinic-north"}, busy_calls=1,
                                   retry_after_s=1.5)
    event = sample_event("intake.submitted")
    delivery = _delivery(client)
    with pytest.raises(TransientError) as caught:
        delivery.deliver(event, _context(event))
    assert caught.value.error_class == "ehr.busy"
    assert caught.value.retry_after_ms == 1500
    delivery.deliver(event, _context(event, attempt=2))
    assert ("intake", "intake-1001") in client.resources


def test_an_unreachable_ehr_is_transient() -> None:
    class Unreachable(example.FakeEhrClient):
        def upsert(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionRefusedError("connection refused")

    event = sample_event("eligibility.check_requested")
    with pytest.raises(TransientError) as caught:
        _delivery(Unreachable(facilities={"clinic-north"})).deliver(event, _context(event))
    assert caught.value.error_class == "ehr.unreachable"


def test_a_rejected_event_is_permanent_and_its_message_names_no_patient() -> None:
    client = example.FakeEhrClient(facilities={"clinic-south"})
    event = sample_event("intake.submitted")
    with pytest.raises(PermanentError) as caught:
        _delivery(client).deliver(event, _context(event))
    assert caught.value.error_class == "ehr.rejected"
    assert "clinic-north" in str(caught.value)
    for phi in ("Maria", "Okafor", "pat-501", "MBR99887766", "+15551234567"):
        assert phi not in str(caught.value)
    assert client.resources == {}


def test_the_example_events_are_delivered_or_rejected_by_clinic() -> None:
    client = example.FakeEhrClient(facilities={"clinic-north", "clinic-riverside"})
    delivery = _delivery(client)
    rejected = []
    lines = EVENTS_FILE.read_text(encoding="utf-8").splitlines()
    for line in lines:
        event = event_from_json(json.loads(line))
        try:
            delivery.deliver(event, _context(event))
        except PermanentError:
            rejected.append(event["clinic_id"])
    assert set(rejected) == {"clinic-harbor"}  # and not empty
    assert len(client.idempotency_keys) == len(lines) - len(rejected)


def _readme_block(language: str, containing: str) -> str:
    readme = (EVENTS_FILE.parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = readme.split(f"```{language}\n")[1:]
    return next(block.split("```")[0] for block in blocks if containing in block)


def test_the_readme_excerpt_is_taken_from_the_example() -> None:
    source = {line.strip() for line in Path(example.__file__).read_text("utf-8").splitlines()}
    excerpt = _readme_block("python", "class EhrDelivery")
    missing = [line for line in excerpt.splitlines() if line.strip() not in source]
    assert missing == []


def test_the_readme_configuration_loads_and_names_the_example(tmp_path: Path) -> None:
    config = tmp_path / "clinic-events.toml"
    config.write_text(_readme_block("toml", "[delivery]"), encoding="utf-8")
    settings = load_settings(config, env={})
    assert settings.delivery.handler == "examples.handler:deliver"
    assert settings.delivery.url is None
    assert load_callable(settings.delivery.handler) is example.deliver
