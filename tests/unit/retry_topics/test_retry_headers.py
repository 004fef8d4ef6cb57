"""The wire contract: header encoding, decoding, replacement, redaction and hop rules."""

from __future__ import annotations

import dataclasses
import re

import pytest

from retry_topics import headers as h
from retry_topics.classification import Classification
from retry_topics.errors import HeaderError, RetryTopicsError
from retry_topics.headers import (
    FailureInfo,
    Provenance,
    RecordHeaders,
    decode_headers,
    encode_headers,
    replace_header,
)
from retry_topics.hops import next_hop_headers, replay_headers
from retry_topics.redaction import MAX_ERROR_MESSAGE_BYTES, cap_utf8, redact_message

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PROVENANCE = Provenance(topic="clinic.events", partition=3, offset=41, timestamp_ms=1_700_000_000)
FULL = RecordHeaders(
    attempts=2,
    due_at_ms=1_700_000_030_000,
    original_topic="clinic.events",
    original_partition=3,
    original_offset=41,
    original_timestamp_ms=1_700_000_000_000,
    first_failure_at_ms=1_700_000_001_000,
    last_failure_at_ms=1_700_000_002_000,
    error_class="httpx.ConnectTimeout",
    error_message="timed out — réessayer",
    classification=Classification.TRANSIENT,
    dlq_reason="exhausted",
    replay_count=1,
    event_id="evt-123",
    event_type="appointment.scheduled",
    traceparent=TRACEPARENT,
    tracestate="vendor=1",
    other=(("x-upstream", b"\x00\xff"), ("x-empty", b"")),
)


# ---- names and encoding ------------------------------------------------------------------


def test_header_names_are_the_documented_contract() -> None:
    contract = [
        (h.ATTEMPTS, "clinic.attempts"),
        (h.DUE_AT, "clinic.due-at"),
        (h.ORIGINAL_TOPIC, "clinic.original-topic"),
        (h.ORIGINAL_PARTITION, "clinic.original-partition"),
        (h.ORIGINAL_OFFSET, "clinic.original-offset"),
        (h.ORIGINAL_TIMESTAMP, "clinic.original-timestamp"),
        (h.FIRST_FAILURE_AT, "clinic.first-failure-at"),
        (h.LAST_FAILURE_AT, "clinic.last-failure-at"),
        (h.ERROR_CLASS, "clinic.error-class"),
        (h.ERROR_MESSAGE, "clinic.error-message"),
        (h.CLASSIFICATION, "clinic.classification"),
        (h.DLQ_REASON, "clinic.dlq-reason"),
        (h.REPLAY_COUNT, "clinic.replay-count"),
        (h.EVENT_ID, "clinic.event-id"),
        (h.EVENT_TYPE, "clinic.event-type"),
        (h.PARKED_BEHIND, "clinic.parked-behind"),
        (h.TRACEPARENT, "traceparent"),
        (h.TRACESTATE, "tracestate"),
    ]
    for constant, documented in contract:
        assert constant == documented
    assert {documented for _, documented in contract} == h.KNOWN_HEADERS


def test_integers_are_decimal_ascii_and_text_is_utf8() -> None:
    encoded = dict(encode_headers(FULL))
    assert encoded["clinic.attempts"] == b"2"
    assert encoded["clinic.due-at"] == b"1700000030000"
    assert encoded["clinic.original-partition"] == b"3"
    assert encoded["clinic.error-message"] == "timed out — réessayer".encode()
    assert encoded["traceparent"] == TRACEPARENT.encode("ascii")


def test_encode_puts_known_headers_first_then_other_in_order() -> None:
    names = [name for name, _ in encode_headers(FULL)]
    assert names[:2] == ["clinic.attempts", "clinic.due-at"]
    assert names[-2:] == ["x-upstream", "x-empty"]
    assert len(names) == len(set(names)) == 17 + 2


def test_absent_fields_are_not_written() -> None:
    assert encode_headers(RecordHeaders()) == []
    assert encode_headers(RecordHeaders(attempts=0)) == [("clinic.attempts", b"0")]


def test_round_trip_of_every_field() -> None:
    assert decode_headers(encode_headers(FULL)) == FULL


def test_round_trip_of_partial_headers() -> None:
    partial = RecordHeaders(attempts=1, event_id="evt-1", other=(("k", b"v"),))
    assert decode_headers(encode_headers(partial)) == partial


def test_decode_none_and_empty() -> None:
    assert decode_headers(None) == RecordHeaders()
    assert decode_headers([]) == RecordHeaders()


def test_decode_preserves_unknown_headers_including_duplicates_and_nulls() -> None:
    raw: list[tuple[str, bytes | None]] = [
        ("b3", b"abc"),
        ("clinic.attempts", b"1"),
        ("b3", b"def"),
        ("x-null", None),
    ]
    decoded = decode_headers(raw)
    assert decoded.attempts == 1
    assert decoded.other == (("b3", b"abc"), ("b3", b"def"), ("x-null", None))
    assert encode_headers(decoded)[-1] == ("x-null", b"")  # a null value travels as empty bytes


def test_last_occurrence_of_a_known_header_wins() -> None:
    decoded = decode_headers([("clinic.attempts", b"1"), ("clinic.attempts", b"2")])
    assert decoded.attempts == 2


def test_known_header_with_null_value_is_absent() -> None:
    assert decode_headers([("clinic.event-id", None)]).event_id is None


@pytest.mark.parametrize("raw", [b"", b"abc", b"-1", b"+1", b" 1", b"1.0", b"1e3", "٣".encode()])
def test_malformed_integer_names_the_header(raw: bytes) -> None:
    with pytest.raises(
        HeaderError, match=re.escape("'clinic.due-at' must be a decimal ASCII integer")
    ) as err:
        decode_headers([("clinic.due-at", raw)])
    assert err.value.header == "clinic.due-at"
    assert isinstance(err.value, ValueError)
    assert isinstance(err.value, RetryTopicsError)


def test_leading_zeros_are_accepted() -> None:
    assert decode_headers([("clinic.replay-count", b"007")]).replay_count == 7


def test_invalid_utf8_names_the_header() -> None:
    with pytest.raises(
        HeaderError, match=re.escape("'clinic.error-class' is not valid UTF-8")
    ) as caught:
        decode_headers([("clinic.error-class", b"\xff\xfe")])
    assert caught.value.header == "clinic.error-class"


def test_a_decoded_classification_is_the_enum() -> None:
    decoded = decode_headers([("clinic.classification", b"permanent")])
    assert decoded.classification is Classification.PERMANENT
    assert encode_headers(decoded) == [("clinic.classification", b"permanent")]


@pytest.mark.parametrize(
    ("name", "raw"), [("clinic.classification", b"maybe"), ("clinic.dlq-reason", b"bored")]
)
def test_unknown_enum_values_name_the_header(name: str, raw: bytes) -> None:
    with pytest.raises(HeaderError, match=f"'{name}' must be one of") as caught:
        decode_headers([(name, raw)])
    assert caught.value.header == name


@pytest.mark.parametrize("value", [-1, True])
def test_encode_rejects_invalid_integers(value: int) -> None:
    with pytest.raises(
        HeaderError, match=re.escape("'clinic.attempts' must be a non-negative integer")
    ):
        encode_headers(RecordHeaders(attempts=value))


def test_encode_rejects_text_that_utf8_cannot_carry() -> None:
    with pytest.raises(HeaderError, match=re.escape("'clinic.event-id' is not encodable as UTF-8")):
        encode_headers(RecordHeaders(event_id="evt-\udc80"))


def test_known_headers_cannot_hide_in_other() -> None:
    with pytest.raises(HeaderError, match="must be set as fields"):
        RecordHeaders(other=(("traceparent", b"x"),))


def test_encode_caps_a_long_error_message() -> None:
    encoded = dict(encode_headers(RecordHeaders(error_message="é" * 2000)))
    message = encoded["clinic.error-message"]
    assert len(message) <= MAX_ERROR_MESSAGE_BYTES
    assert message.decode("utf-8").endswith("…")


def test_provenance_and_failure_views() -> None:
    assert RecordHeaders().provenance is None
    assert RecordHeaders().failure is None
    assert RecordHeaders(original_topic="t", original_partition=0).provenance is None
    assert FULL.provenance == Provenance(
        topic="clinic.events", partition=3, offset=41, timestamp_ms=1_700_000_000_000
    )
    assert FULL.failure == FailureInfo(
        attempts=2,
        first_failure_at_ms=1_700_000_001_000,
        last_failure_at_ms=1_700_000_002_000,
        error_class="httpx.ConnectTimeout",
        error_message="timed out — réessayer",
        classification=Classification.TRANSIENT,
    )


def test_with_provenance_and_with_failure_round_trip_through_the_views() -> None:
    failure = FailureInfo(
        attempts=1,
        first_failure_at_ms=10,
        last_failure_at_ms=10,
        error_class="builtins.TimeoutError",
        error_message="slow",
        classification=Classification.TRANSIENT,
    )
    built = RecordHeaders().with_provenance(PROVENANCE).with_failure(failure)
    assert built.provenance == PROVENANCE
    assert built.failure == failure
    assert decode_headers(encode_headers(built)) == built


# ---- replace_header -----------------------------------------------------------------------


def test_replace_header_replaces_instead_of_appending() -> None:
    original: list[tuple[str, bytes]] = [
        ("a", b"1"),
        ("traceparent", b"old"),
        ("b", b"2"),
        ("traceparent", b"older"),
    ]
    replaced = replace_header(original, "traceparent", TRACEPARENT)
    assert replaced == [("a", b"1"), ("traceparent", TRACEPARENT.encode()), ("b", b"2")]
    assert original[1] == ("traceparent", b"old")  # the input is not modified


def test_replace_header_at_every_hop_keeps_one_traceparent() -> None:
    hop: list[tuple[str, bytes]] = [("x", b"y")]
    for n in range(5):
        hop = replace_header(hop, "traceparent", f"tp-{n}".encode())
    assert hop == [("x", b"y"), ("traceparent", b"tp-4")]


def test_replace_header_appends_when_absent_and_accepts_none() -> None:
    assert replace_header(None, "traceparent", b"tp") == [("traceparent", b"tp")]
    assert replace_header([("x", None)], "k", "v") == [("x", b""), ("k", b"v")]


def test_replace_header_is_case_sensitive_like_kafka() -> None:
    assert replace_header([("Traceparent", b"a")], "traceparent", b"b") == [
        ("Traceparent", b"a"),
        ("traceparent", b"b"),
    ]


# ---- capping and redaction ----------------------------------------------------------------


def test_cap_keeps_short_text() -> None:
    assert cap_utf8("short") == "short"
    assert cap_utf8("x" * MAX_ERROR_MESSAGE_BYTES) == "x" * MAX_ERROR_MESSAGE_BYTES


def test_cap_cuts_ascii_and_marks_the_cut() -> None:
    capped = cap_utf8("x" * 5000)
    assert capped == "x" * (MAX_ERROR_MESSAGE_BYTES - 3) + "…"
    assert len(capped.encode()) == MAX_ERROR_MESSAGE_BYTES


@pytest.mark.parametrize("char", ["é", "€", "😀"])
@pytest.mark.parametrize("prefix", range(4))
def test_cap_never_splits_a_multibyte_character(char: str, prefix: int) -> None:
    text = "a" * prefix + char * 1000
    capped = cap_utf8(text)
    data = capped.encode("utf-8")  # would raise if a character had been split
    assert len(data) <= MAX_ERROR_MESSAGE_BYTES
    assert len(data) > MAX_ERROR_MESSAGE_BYTES - 3 - len(char.encode())
    assert capped.endswith("…")
    assert capped[:-1] == text[: len(capped) - 1]


def test_cap_with_a_tiny_budget() -> None:
    assert cap_utf8("hello", 4) == "h…"
    assert cap_utf8("hello", 2) == ""


def test_cap_replaces_lone_surrogates() -> None:
    assert cap_utf8("bad \udc80 byte") == "bad ? byte"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("401 with Authorization: Bearer eyJhbGciOi.J9x-_y/z+=", "eyJhbGciOi"),
        ("header Basic dXNlcjpwYXNz==", "dXNlcjpwYXNz"),
        ("login failed password=hunter2&user=bob", "hunter2"),
        ('{"api_key": "k-12345-secret"}', "k-12345-secret"),
        ("token: abc.def", "abc.def"),
        ("client_secret='s3cr3t value'", "s3cr3t"),
        ("GET https://svc:pa55@ehr.example/x", "pa55"),
        ("patient jane.doe+x@example.org not found", "jane.doe"),
        ("member 123456789 unknown", "123456789"),
        ("call +1 (555) 123-4567 now", "123-4567"),
        ("ssn 123-45-6789", "6789"),
        ("dob 1984-02-29 mismatch", "1984"),
    ],
)
def test_redact_masks_secrets_and_phi_like_tokens(text: str, secret: str) -> None:
    redacted = redact_message(text)
    assert secret not in redacted
    assert "***" in redacted


def test_redact_keeps_useful_context() -> None:
    redacted = redact_message("HTTP 503 from ehr after 30000 ms; password=x; offset 12")
    assert redacted == "HTTP 503 from ehr after 30000 ms; password=***; offset 12"
    assert redact_message("Authorization: Bearer abc") == "Authorization: Bearer ***"


@pytest.mark.parametrize("fingerprint", ["1234567890123456", "0123456789abcdef"])
def test_redact_keeps_an_avro_schema_fingerprint(fingerprint: str) -> None:
    # A CRC-64 of a writer schema, not a patient's number: the clue to the producer.
    message = f"unknown schema fingerprint {fingerprint}"
    assert redact_message(message) == message
    assert redact_message(f"{message}; call 555-123-4567") == f"{message}; call ***"


@pytest.mark.parametrize(
    "text",
    [
        "unknown schema fingerprint 5551234567",  # too short for a fingerprint
        "unknown schema fingerprint 12345678901234567",  # too long
        "unknown schema fingerprint 1234567890123456 7",  # more digits continue it
        "unknown schema fingerprint 1234567890123456-12",
        "schema fingerprint 1234567890123456",  # not the codec's message
        "unknown schema fingerprint: 1234567890123456",
    ],
)
def test_redact_masks_digits_not_shaped_like_the_codecs_fingerprint(text: str) -> None:
    assert "1234567" not in redact_message(text)
    assert "5551234567" not in redact_message(text)


def test_redact_caps_after_masking() -> None:
    redacted = redact_message("password=" + "p" * 5000)
    assert redacted == "password=***"
    long = redact_message("é" * 100_000)
    assert len(long.encode()) <= MAX_ERROR_MESSAGE_BYTES
    assert long.endswith("…")


def test_redact_huge_message_is_marked_cut_even_if_masking_shrinks_it() -> None:
    redacted = redact_message("member 12345678 " * 10_000)
    assert redacted.startswith("member *** member ***")
    assert redacted.endswith("…")
    assert len(redacted.encode()) <= MAX_ERROR_MESSAGE_BYTES


def test_redact_drops_the_word_split_by_the_scan_limit() -> None:
    # The scan window ends inside the digits: without dropping the split word, a 6-digit
    # fragment (too short to look like a number) would survive masking.
    text = "x " * 32_765 + "1234567890123"
    redacted = redact_message(text, max_bytes=1_000_000)
    assert redacted.endswith(" …")
    assert "123" not in redacted
    assert redact_message("1" * 100_000) == "…"


def test_redaction_is_fast_on_adversarial_input() -> None:
    for text in ("a" * 60_000, "1" * 60_000, "a@" * 30_000, "://" + "a:" * 30_000):
        redact_message(text)  # quadratic patterns would take seconds here


def test_headers_module_reexports_redaction() -> None:
    assert h.redact_message is redact_message
    assert h.cap_utf8 is cap_utf8


# ---- hops ---------------------------------------------------------------------------------


def test_first_hop_takes_provenance_from_the_source_record() -> None:
    incoming = RecordHeaders(traceparent=TRACEPARENT, event_id="evt-1", other=(("x", b"y"),))
    hop = next_hop_headers(
        incoming,
        source=PROVENANCE,
        attempts=1,
        now_ms=5_000,
        error_class="httpx.ReadTimeout",
        error_message="timeout calling member 123456789",
        classification=Classification.TRANSIENT,
        due_at_ms=35_000,
    )
    assert hop.provenance == PROVENANCE
    assert (hop.attempts, hop.due_at_ms, hop.dlq_reason) == (1, 35_000, None)
    assert (hop.first_failure_at_ms, hop.last_failure_at_ms) == (5_000, 5_000)
    assert hop.error_message == "timeout calling member ***"
    assert (hop.traceparent, hop.event_id, hop.other) == (TRACEPARENT, "evt-1", (("x", b"y"),))
    assert decode_headers(encode_headers(hop)) == hop


def test_later_hops_keep_original_provenance_and_first_failure() -> None:
    tier_source = Provenance(topic="clinic.events.retry.5s", partition=0, offset=7)
    second = next_hop_headers(
        FULL,
        source=tier_source,
        attempts=3,
        now_ms=1_700_000_090_000,
        error_class="builtins.ValueError",
        error_message="bad",
        classification=Classification.PERMANENT,
        dlq_reason="permanent",
    )
    assert second.provenance == FULL.provenance
    assert second.first_failure_at_ms == FULL.first_failure_at_ms
    assert second.last_failure_at_ms == 1_700_000_090_000
    assert (second.attempts, second.classification, second.error_class) == (
        3,
        "permanent",
        "builtins.ValueError",
    )
    assert (second.due_at_ms, second.dlq_reason) == (None, "permanent")


def test_replay_resets_attempts_and_counts_replays() -> None:
    replayed = replay_headers(FULL)
    assert (replayed.attempts, replayed.due_at_ms, replayed.dlq_reason) == (None, None, None)
    assert replayed.replay_count == 2
    assert replay_headers(RecordHeaders()).replay_count == 1
    assert (replayed.error_class, replayed.error_message, replayed.classification) == (
        None, None, None)
    assert (replayed.first_failure_at_ms, replayed.last_failure_at_ms) == (None, None)
    unchanged = dataclasses.replace(
        replayed, attempts=FULL.attempts, due_at_ms=FULL.due_at_ms, dlq_reason=FULL.dlq_reason,
        error_class=FULL.error_class, error_message=FULL.error_message,
        classification=FULL.classification, first_failure_at_ms=FULL.first_failure_at_ms,
        last_failure_at_ms=FULL.last_failure_at_ms,
    )
    assert unchanged == dataclasses.replace(FULL, replay_count=2)


def test_a_replay_is_forced_only_by_the_marker_set_to_one() -> None:
    assert h.replay_forced(h.RecordHeaders(other=((h.REPLAY_FORCE, b"1"),)))
    assert not h.replay_forced(h.RecordHeaders(other=((h.REPLAY_FORCE, b"0"),)))
    assert not h.replay_forced(h.RecordHeaders())
