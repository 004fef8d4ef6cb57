"""A handler's error text leaves the pipeline without the failing event's PHI."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consumer.delivery.handlers import CallableDelivery, DeliveryContext
from consumer.errors import PermanentError, TransientError
from consumer.observability.telemetry import Telemetry
from retry_topics.classification import ExceptionRules
from retry_topics.headers import decode_headers
from tests.unit.pipeline.test_processing import MAIN, Fixture, ScriptedHandler, record
from tests.unit.sample_events import sample_event

PHI = ("Ada", "Testperson", "TEST-MBR-000101", "000101", "1985-04-12", "PAT-770011")
MESSAGE = ("no coverage for Ada Testperson, member TEST-MBR-000101, born 1985-04-12, "
           "patient PAT-770011; payload {payload!r}")


def _intake() -> dict[str, Any]:
    event = sample_event("intake.submitted", event_id="evt-phi")
    event["payload"].update(patient_id="PAT-770011", insurance_member_id="TEST-MBR-000101")
    event["payload"]["demographics"].update(first_name="Ada", last_name="Testperson",
                                            date_of_birth=date(1985, 4, 12))
    return event


class PythonHandler(ScriptedHandler):
    """A configured Python callable (run by CallableDelivery) that always raises ValueError."""

    def __init__(self, rules: ExceptionRules) -> None:
        super().__init__()

        def reject(event: dict[str, Any], _context: DeliveryContext) -> None:
            raise ValueError(MESSAGE.format(payload=event["payload"]))

        self._delivery = CallableDelivery(reject, rules)

    def deliver(self, event: dict[str, Any], context: DeliveryContext) -> None:
        self.calls.append(context)
        self._delivery.deliver(event, context)


def _leaks(text: str) -> list[str]:
    return [value for value in PHI if value.lower() in text.lower()]


@pytest.mark.parametrize(("rules", "topic"), [
    (ExceptionRules(permanent=("builtins.ValueError",)), f"{MAIN}.dlq"),
    (ExceptionRules(), f"{MAIN}.retry.5s"),
])
def test_a_python_handlers_value_error_reaches_the_next_hop_masked(
    rules: ExceptionRules, topic: str,
) -> None:
    fx = Fixture(PythonHandler(rules), rules=rules)
    fx.run(record(_intake()))
    (sent_to, _, _, headers), = fx.publisher.sent
    assert sent_to == topic
    decoded = decode_headers(headers)
    assert decoded.error_message is not None
    assert decoded.error_message.startswith("ValueError: no coverage for *** ***, member ***")
    assert _leaks(decoded.error_message) == []
    assert decoded.error_class == "builtins.ValueError"


@pytest.mark.parametrize("error", [
    PermanentError(MESSAGE.format(payload=_intake()["payload"]), error_class="plan.rejected"),
    TransientError(MESSAGE.format(payload=_intake()["payload"]).upper(), error_class="plan.busy"),
    ValueError(MESSAGE.format(payload=_intake()["payload"])),
])
def test_any_handlers_error_text_is_masked_against_its_events_values(error: Exception) -> None:
    """Intent errors carry the handler's own words; other exceptions their ``str``."""
    fx = Fixture(ScriptedHandler(error))
    fx.run(record(_intake()))
    message = decode_headers(fx.publisher.sent[0][3]).error_message
    assert message is not None
    assert "no coverage for" in message.lower()
    assert _leaks(message) == []


def test_spans_of_a_failed_attempt_carry_no_message() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rules = ExceptionRules(permanent=("builtins.ValueError",))
    fx = Fixture(PythonHandler(rules), rules=rules, telemetry=Telemetry(provider))
    fx.run(record(_intake()))
    spans = exporter.get_finished_spans()
    assert {span.name.split()[0] for span in spans} == {"process", "send"}
    for span in spans:
        texts = [str(value) for value in (span.attributes or {}).values()]
        texts.append(span.status.description or "")
        texts += [f"{event.name} {dict(event.attributes or {})}" for event in span.events]
        assert _leaks(" ".join(texts)) == [], span.name
