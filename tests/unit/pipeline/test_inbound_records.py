"""Consumed messages become records on the poll thread; values are decoded by the processor."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Message

from consumer.events.codec import EventCodec
from consumer.kafka.clients import message_headers, to_inbound
from consumer.pipeline.records import NO_HEADERS
from retry_topics.headers import RecordHeaders, encode_headers
from tests.unit.sample_events import sample_event

CODEC = EventCodec()


def _message(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> Message:
    wire: list[tuple[str, str | bytes | None]] | None = None if headers is None else [*headers]
    return Message(topic="clinic.events.retry.5s", partition=3, offset=41, key=b"appt-1",
                   value=value, headers=wire, timestamp=(1, 1_700_000_000_000))


def test_a_record_is_detached_with_its_headers_and_left_undecoded() -> None:
    headers = encode_headers(RecordHeaders(attempts=2, due_at_ms=1_700_000_005_000))
    record = to_inbound(_message(b"not avro", headers), "clinic.events.retry.5s", 3)
    assert (record.topic, record.partition, record.offset) == ("clinic.events.retry.5s", 3, 41)
    assert record.timestamp_ms == 1_700_000_000_000
    assert record.headers.due_at_ms == 1_700_000_005_000
    assert record.attempt == 3
    assert record.event is None
    assert record.decode_error is None  # nothing decoded on the poll thread


def test_a_record_without_headers_shares_the_empty_headers() -> None:
    record = to_inbound(_message(b""), "clinic.events", 0)
    assert record.raw_headers == ()
    assert record.headers is NO_HEADERS
    assert record.attempt == 1


def test_malformed_provenance_headers_do_not_make_a_record_unprocessable() -> None:
    record = to_inbound(_message(b"", [("clinic.attempts", b"two")]), "clinic.events", 0)
    assert record.headers is NO_HEADERS
    assert record.raw_headers == (("clinic.attempts", b"two"),)


def test_decode_sets_the_event_and_its_identity_once() -> None:
    event = sample_event("appointment.scheduled")
    record = to_inbound(_message(CODEC.encode(event)), "clinic.events", 0)
    record.decode(CODEC)
    assert record.event is not None
    assert (record.event_id, record.event_type) == (event["event_id"], "appointment.scheduled")
    decoded = record.event
    record.decode(CODEC)
    assert record.event is decoded


def test_undecodable_values_keep_their_error_and_bytes() -> None:
    record = to_inbound(_message(b"\x00garbage"), "clinic.events", 0)
    record.decode(CODEC)
    assert record.event is None
    assert record.event_id is None
    assert record.decode_error is not None
    assert record.decode_error.raw == b"\x00garbage"
    assert record.value == b"\x00garbage"


def test_an_undecodable_records_identity_is_what_its_headers_state() -> None:
    """For outcome lines (as ``dlq show``), never for dedup: ``event_id`` stays None."""
    identity = encode_headers(RecordHeaders(event_id="evt-9", event_type="intake.submitted"))
    record = to_inbound(_message(b"\x00garbage", identity), "clinic.events", 0)
    record.decode(CODEC)
    assert record.stated_identity() == ("evt-9", "intake.submitted")
    assert record.event_id is None


def test_a_decoded_records_identity_is_its_events_without_decoding_headers() -> None:
    event = sample_event("appointment.scheduled")
    identity = encode_headers(RecordHeaders(event_id="evt-other", event_type="other"))
    record = to_inbound(_message(CODEC.encode(event), identity), "clinic.events", 0)
    record.decode(CODEC)
    assert record.stated_identity() == (event["event_id"], "appointment.scheduled")
    assert record.decoded_headers is None


def test_a_publishers_headers_are_kept_raw_until_read() -> None:
    """Event id and type (what ``publish`` stamps) steer nothing: decoding waits for a reader."""
    identity = encode_headers(RecordHeaders(event_id="evt-1", event_type="intake.submitted"))
    record = to_inbound(_message(b"", identity), "clinic.events", 0)
    assert record.decoded_headers is None
    assert record.attempt == 1
    assert record.headers.event_id == "evt-1"
    assert record.decoded_headers is record.headers


def test_a_malformed_header_beside_no_attempts_still_makes_a_first_attempt() -> None:
    """As when headers were decoded eagerly: malformed known headers count as none at all."""
    record = to_inbound(_message(b"", [("clinic.replay-count", b"many"),
                                       ("clinic.event-id", b"evt-1")]), "clinic.events", 0)
    assert record.attempt == 1
    assert record.headers is NO_HEADERS


@pytest.mark.parametrize(("given", "expected"), [
    ([("a", b"x"), ("b", None)], (("a", b"x"), ("b", None))),  # as librdkafka hands them
    ([("a", b"x"), ("b", "y")], (("a", b"x"), ("b", b"y"))),  # str values: UTF-8 encoded
    ({"a": b"x", "b": "y"}, (("a", b"x"), ("b", b"y"))),  # the dict form
])
def test_header_values_are_bytes_or_none_whatever_form_the_client_gave(
    given: Any, expected: tuple[tuple[str, bytes | None], ...],
) -> None:
    message = Message(topic="t", partition=0, offset=0, key=None, value=b"", headers=given)
    assert message_headers(message) == expected
    assert to_inbound(message, "t", 0).raw_headers == expected


def test_a_trace_context_is_noticed_in_the_same_scan_without_decoding() -> None:
    for name in ("traceparent", "tracestate"):
        record = to_inbound(_message(b"", [(name, b"x")]), "clinic.events", 0)
        assert record.traced
        assert record.decoded_headers is None
    assert not to_inbound(_message(b"", [("clinic.event-id", b"e")]), "clinic.events", 0).traced
