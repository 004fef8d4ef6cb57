"""Tracing: one trace per event across every hop, following the messaging conventions."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import Producer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from consumer.dev.simulator import DownstreamSimulator, FailurePlan
from consumer.events.codec import EventCodec
from consumer.events.model import entity_key
from consumer.kafka.clients import message_headers
from consumer.kafka.dlq_io import ReplayRequest, replay
from consumer.observability.telemetry import Telemetry
from consumer.ops.dlq.model import DlqFilter
from retry_topics import headers as h
from tests.integration.harness import (
    new_event,
    read_topic,
    running_consumer,
    settings_for,
    wait_until,
    write_config,
)

PHI_VALUES = ("Maria", "Okafor", "1984-03-02", "+15551234567", "MBR99887766")


def _publish_traced(provider: TracerProvider, bootstrap: str, topic: str,
                    event: dict[str, object]) -> str:
    """Publish like an upstream system does: inside a ``send`` span, traceparent in headers."""
    telemetry = Telemetry(provider)
    with telemetry.send_span(topic, str(event["event_id"])) as span:
        headers = telemetry.headers_with_traceparent([])
        trace_id = format(span.get_span_context().trace_id, "032x")
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=entity_key(event), value=EventCodec().encode(event),
                     headers=list(headers))
    assert producer.flush(30) == 0
    return trace_id


def _attribute_values(spans: list[ReadableSpan]) -> str:
    return " ".join(str(v) for s in spans for v in (s.attributes or {}).values())


def test_an_event_keeps_one_trace_from_publish_through_retries_to_the_dlq(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Publish, each topic attempt, each retry hop and the DLQ share the publisher's trace."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    event = new_event("intake.submitted")
    plan = FailurePlan(always_fail_keys=frozenset({str(event["event_id"])}))
    with DownstreamSimulator(plan) as sim:
        settings = settings_for(write_config(tmp_path, bootstrap=kafka_bootstrap,
                                             main=topic_prefix, url=sim.events_url,
                                             delays=("1s", "1500ms")))
        with running_consumer(settings, tracer_provider=provider):
            trace_id = _publish_traced(provider, kafka_bootstrap, topic_prefix, event)
            assert read_topic(kafka_bootstrap, f"{topic_prefix}.dlq", 1, timeout_s=40)
            assert wait_until(lambda: len([
                s for s in exporter.get_finished_spans() if s.name.startswith("process")]) == 3,
                10)
        downstream_traceparents = {r.traceparent for r in sim.requests()}

    spans = [s for s in exporter.get_finished_spans()
             if s.attributes and s.attributes.get("messaging.message.id") == event["event_id"]]
    assert {format(s.context.trace_id, "032x") for s in spans} == {trace_id}

    process = sorted((s for s in spans if s.kind == SpanKind.CONSUMER),
                     key=lambda s: s.start_time or 0)
    assert [s.name for s in process] == [
        f"process {topic_prefix}", f"process {topic_prefix}.retry.1s",
        f"process {topic_prefix}.retry.1500ms",
    ]
    sends = sorted((s for s in spans if s.kind == SpanKind.PRODUCER and
                    s.name != f"send {topic_prefix}"), key=lambda s: s.start_time or 0)
    assert [s.name for s in sends] == [
        f"send {topic_prefix}.retry.1s", f"send {topic_prefix}.retry.1500ms",
        f"send {topic_prefix}.dlq",
    ]
    # each hop's process span is the child of the previous hop's send span
    for send, next_process in zip(sends, process[1:], strict=False):
        assert next_process.parent is not None
        assert next_process.parent.span_id == send.context.span_id
    for span in process:
        attributes = span.attributes or {}
        assert attributes["messaging.system"] == "kafka"
        assert attributes["messaging.operation.type"] == "process"
        assert attributes["messaging.destination.name"] == span.name.removeprefix("process ")
        assert attributes["messaging.consumer.group.name"] == settings.kafka.group_id
        assert attributes["error.type"] == "http.503"
        assert span.status.status_code == StatusCode.ERROR
    # the downstream saw the trace of the attempt that called it
    assert all(tp is not None and tp.split("-")[1] == trace_id for tp in downstream_traceparents)
    assert not any(value in _attribute_values(spans) for value in PHI_VALUES)


def test_a_dlq_replay_is_one_more_send_hop_of_the_events_trace(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """An operator's replay, maybe days later, shows in the event's trace: a ``send`` span,
    child of the DLQ ``send`` span, whose context the replayed record carries on."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    event = new_event("appointment.cancelled")
    event_id = str(event["event_id"])
    with DownstreamSimulator(FailurePlan(permanent_keys=frozenset({event_id}))) as sim:
        settings = settings_for(write_config(tmp_path, bootstrap=kafka_bootstrap,
                                             main=topic_prefix, url=sim.events_url))
        with running_consumer(settings, tracer_provider=provider):
            trace_id = _publish_traced(provider, kafka_bootstrap, topic_prefix, event)
            assert read_topic(kafka_bootstrap, f"{topic_prefix}.dlq", 1, timeout_s=30)
            assert wait_until(lambda: any(
                s.name == f"send {topic_prefix}.dlq" for s in exporter.get_finished_spans()), 10)
    (dlq_send,) = [s for s in exporter.get_finished_spans()
                   if s.name == f"send {topic_prefix}.dlq"]

    run = replay(settings, ReplayRequest(
        dlq_topic=f"{topic_prefix}.dlq", ledger_topic=f"{topic_prefix}.dlq-ledger",
        audit_topic=f"{topic_prefix}.audit", filter=DlqFilter()), telemetry=Telemetry(provider))

    assert run.tally.replayed == 1
    (replay_send,) = [s for s in exporter.get_finished_spans()
                      if s.parent is not None and s.parent.span_id == dlq_send.context.span_id]
    assert replay_send.name == f"send {topic_prefix}"
    assert replay_send.kind == SpanKind.PRODUCER
    assert format(replay_send.context.trace_id, "032x") == trace_id
    assert (replay_send.attributes or {})["messaging.message.id"] == event_id
    replayed = [m for m in read_topic(kafka_bootstrap, topic_prefix, 2)
                if h.decode_headers(message_headers(m)).replay_count == 1]
    assert len(replayed) == 1
    traceparents = [v for name, v in message_headers(replayed[0]) if name == "traceparent"]
    context = replay_send.context
    assert traceparents == [
        f"00-{trace_id}-{context.span_id:016x}-{int(context.trace_flags):02x}".encode()]
