"""DLQ model: record parsing, filters, offset ranges, masking, grouping, the ledger, and the
replay and discard decisions."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

from consumer.errors import UndecodableRecord
from consumer.events.codec import MAGIC, EventCodec
from consumer.observability.printable import printable
from consumer.ops.dlq.ledger import DlqLedger, Resolution, ledger_key
from consumer.ops.dlq.model import (
    MASK,
    PARKED,
    PATIENT_IDENTIFYING_FIELDS,
    UNDECODABLE,
    AlreadyResolved,
    Discard,
    DlqFilter,
    DlqFilterError,
    DlqRecord,
    DlqSummary,
    DlqTally,
    OffsetRange,
    Replay,
    Skip,
    check_partition,
    decide_discard,
    decide_replay,
    key_text,
    parse_dlq_record,
    parse_time_ms,
    plan_ranges,
    record_view,
)
from retry_topics.classification import Classification
from retry_topics.headers import (
    REPLAY_FORCE,
    Provenance,
    RecordHeaders,
    decode_headers,
    encode_headers,
)
from retry_topics.hops import next_hop_headers
from tests.unit.sample_events import sample_event, sample_events

CODEC = EventCodec()
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
T0 = 1_764_403_200_000  # 2025-11-29T08:00:00Z
DEAD = RecordHeaders(
    attempts=3, original_topic="clinic.events", original_partition=2, original_offset=41,
    original_timestamp_ms=T0, first_failure_at_ms=T0 + 1, last_failure_at_ms=T0 + 2,
    error_class="consumer.errors.PermanentError", error_message="HTTP 422",
    classification=Classification.PERMANENT, dlq_reason="permanent", event_id="evt-1",
    event_type="appointment.scheduled", traceparent=TRACEPARENT,
    other=(("x-upstream", b"scheduling"),),
)


def dlq_record(*, event_type: str | None = "appointment.scheduled", offset: int = 0,
               partition: int = 0, timestamp_ms: int | None = T0, value: bytes | None = None,
               **header_changes: Any) -> DlqRecord:
    """A DLQ record as the consumer writes it (event_type None: garbage bytes)."""
    fields = {**{f: getattr(DEAD, f) for f in DEAD.__dataclass_fields__}, **header_changes}
    if event_type is None:
        fields.update(event_id=None, event_type=None, dlq_reason="undecodable")
        raw = value if value is not None else b"not avro at all"
    else:
        fields["event_type"] = event_type
        raw = CODEC.encode(sample_event(event_type, fields["event_id"]))
    return parse_dlq_record(partition=partition, offset=offset, timestamp_ms=timestamp_ms,
                            key=b"appt-2001", value=raw,
                            headers=encode_headers(RecordHeaders(**fields)), codec=CODEC)


def phi_values(value: Any) -> Iterator[str]:
    """Every patient-identifying value in a JSON event, at any depth."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in PATIENT_IDENTIFYING_FIELDS and inner is not None:
                yield str(inner)
            else:
                yield from phi_values(inner)


# --- parsing -----------------------------------------------------------------------------

def test_parse_decodes_headers_and_value() -> None:
    record = dlq_record()
    assert record.event is not None
    assert record.event["event_id"] == "evt-1"
    assert (record.event_id, record.event_type, record.error_class) == (
        "evt-1", "appointment.scheduled", "consumer.errors.PermanentError")
    assert record.headers.traceparent == TRACEPARENT


def test_undecodable_value_is_kept_with_its_reason() -> None:
    record = dlq_record(event_type=None)
    assert record.event is None
    assert record.decode_problem
    assert (record.event_type, record.event_id) == (UNDECODABLE, None)


def test_event_type_and_id_fall_back_to_the_value() -> None:
    record = dlq_record(event_id=None, event_type="appointment.cancelled")
    bare = parse_dlq_record(partition=0, offset=0, timestamp_ms=None, key=None,
                            value=record.value, headers=None, codec=CODEC)
    assert (bare.event_type, bare.event_id, bare.error_class) == (
        "appointment.cancelled", "evt-appointment.cancelled", "(none)")


def test_malformed_header_is_noted_not_raised() -> None:
    record = parse_dlq_record(partition=0, offset=0, timestamp_ms=None, key=None, value=b"x",
                              headers=[("clinic.replay-count", b"two")], codec=CODEC)
    assert record.header_problem
    assert "clinic.replay-count" in record.header_problem
    decision = decide_replay(record, target="t", max_replays=3, outcome=None, force=False)
    assert isinstance(decision, Skip)
    assert decision.reason == "malformed-headers"


# --- filters and ranges ------------------------------------------------------------------

def test_empty_filter_matches_everything() -> None:
    assert DlqFilter().matches(dlq_record())
    assert DlqFilter().matches(dlq_record(event_type=None))


@pytest.mark.parametrize(("flt", "expected"), [
    (DlqFilter(error_classes=frozenset({"consumer.errors.PermanentError"})), True),
    (DlqFilter(error_classes=frozenset({"PermanentError"})), True),
    (DlqFilter(error_classes=frozenset({"Error"})), False),
    (DlqFilter(error_classes=frozenset({"httpx.ReadTimeout"})), False),
    (DlqFilter(event_types=frozenset({"appointment.scheduled", "x"})), True),
    (DlqFilter(event_types=frozenset({UNDECODABLE})), False),
    (DlqFilter(event_ids=frozenset({"evt-1"})), True),
    (DlqFilter(event_ids=frozenset({"evt-2"})), False),
    (DlqFilter(since_ms=T0, until_ms=T0), True),
    (DlqFilter(since_ms=T0 + 1), False),
    (DlqFilter(until_ms=T0 - 1), False),
    (DlqFilter(partition=1), True),
    (DlqFilter(partition=0), False),
    (DlqFilter(partition=1, from_offset=5, to_offset=5), True),
    (DlqFilter(partition=1, from_offset=6), False),
    (DlqFilter(partition=1, to_offset=4), False),
])
def test_filter_criteria(flt: DlqFilter, expected: bool) -> None:
    assert flt.matches(dlq_record(partition=1, offset=5)) is expected


def test_undecodable_records_are_selected_by_their_label() -> None:
    flt = DlqFilter(event_types=frozenset({UNDECODABLE}))
    assert flt.matches(dlq_record(event_type=None))
    assert not flt.matches(dlq_record())


def test_undecodable_selects_a_record_whose_header_states_its_type() -> None:
    """``dlq list`` shows such a record as undecodable under its stated type: both select it."""
    fields = {f: getattr(DEAD, f) for f in DEAD.__dataclass_fields__}
    fields.update(event_id="raw-1", event_type="intake.submitted", dlq_reason="undecodable")
    stated = parse_dlq_record(partition=0, offset=0, timestamp_ms=T0, key=None,
                              value=b"not avro at all",
                              headers=encode_headers(RecordHeaders(**fields)), codec=CODEC)
    assert (stated.event, stated.event_type) == (None, "intake.submitted")
    assert DlqFilter(event_types=frozenset({UNDECODABLE})).matches(stated)
    assert DlqFilter(event_types=frozenset({"intake.submitted"})).matches(stated)


def test_time_filters_exclude_records_without_timestamp() -> None:
    assert not DlqFilter(since_ms=0).matches(dlq_record(timestamp_ms=None))


@pytest.mark.parametrize("kwargs", [
    {"from_offset": 3}, {"to_offset": 3}, {"partition": -1},
    {"partition": 0, "from_offset": 5, "to_offset": 4}, {"since_ms": 2, "until_ms": 1},
])
def test_invalid_filters_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(DlqFilterError):
        DlqFilter(**kwargs)


def test_filter_describes_the_criteria_that_are_set() -> None:
    flt = DlqFilter(event_ids=frozenset({"b", "a"}), since_ms=T0, partition=0)
    assert flt.describe() == {"event_ids": ["a", "b"], "since_ms": "2025-11-29T08:00:00.000Z",
                              "partition": 0}


@pytest.mark.parametrize(("text", "expected"), [
    ("2h", T0 - 7_200_000), ("1d", T0 - 86_400_000), ("2025-11-29T08:00:00Z", T0),
    ("2025-11-29T09:00:00+01:00", T0), ("2025-11-29T08:00:00", T0),
    ("2025-11-29", T0 - 8 * 3_600_000),
])
def test_times_are_iso_or_a_duration_ago(text: str, expected: int) -> None:
    assert parse_time_ms(text, now_ms=T0) == expected


@pytest.mark.parametrize("text", ["yesterday", "30", ""])
def test_bad_times_are_refused(text: str) -> None:
    with pytest.raises(DlqFilterError, match="ISO 8601"):
        parse_time_ms(text, now_ms=T0)


def test_ranges_start_at_the_low_watermark_of_every_partition() -> None:
    """No position: what is done is the ledger's business, so nothing is passed over."""
    marks = {0: (0, 10), 1: (5, 8), 2: (4, 4), 3: (6, 9)}
    assert plan_ranges(marks, DlqFilter()) == [
        OffsetRange(0, 0, 10), OffsetRange(1, 5, 8), OffsetRange(3, 6, 9)]


def test_ranges_are_narrowed_by_partition_and_offsets() -> None:
    marks = {0: (0, 10), 1: (0, 10)}
    flt = DlqFilter(partition=1, from_offset=3, to_offset=5)
    assert plan_ranges(marks, flt) == [OffsetRange(1, 3, 6)]
    assert plan_ranges({1: (4, 10)}, DlqFilter(partition=1, from_offset=2)) == [
        OffsetRange(1, 4, 10)]
    assert plan_ranges(marks, DlqFilter(partition=1, from_offset=20)) == []


@pytest.mark.parametrize("flt", [DlqFilter(), DlqFilter(partition=0), DlqFilter(partition=2)])
def test_a_partition_the_dlq_has_or_none_is_accepted(flt: DlqFilter) -> None:
    check_partition(flt, "clinic.events.dlq", {0: (0, 1), 1: (0, 1), 2: (0, 1)})


@pytest.mark.parametrize(("partition", "count", "message"), [
    (99, 3, "--partition 99: the DLQ topic clinic.events.dlq has 3 partitions (0..2)"),
    (3, 3, "--partition 3: the DLQ topic clinic.events.dlq has 3 partitions (0..2)"),
    (1, 1, "--partition 1: the DLQ topic clinic.events.dlq has 1 partition (0)"),
])
def test_a_partition_the_dlq_lacks_is_refused_naming_the_valid_ones(
    partition: int, count: int, message: str,
) -> None:
    with pytest.raises(DlqFilterError) as refused:
        check_partition(DlqFilter(partition=partition), "clinic.events.dlq", range(count))
    assert str(refused.value) == message


# --- masking -------------------------------------------------------------------------------

@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e["event_type"])
def test_masked_view_leaves_no_patient_identifying_value(event: dict[str, Any]) -> None:
    record = parse_dlq_record(partition=0, offset=0, timestamp_ms=T0, key=b"k",
                              value=CODEC.encode(event), headers=None, codec=CODEC)
    revealed = record_view(record, reveal=True)
    secrets = list(phi_values(revealed["event"]))
    assert "pat-501" in secrets
    masked = json.dumps(record_view(record))
    assert not [value for value in secrets if value in masked]
    assert record_view(record)["event"]["payload"]["patient_id"] == MASK
    assert event["event_id"] in masked
    for kept in ("appointment_id", "intake_id", "check_id"):
        if kept in event["payload"]:
            assert event["payload"][kept] in masked


def test_masking_keeps_absent_values_absent() -> None:
    event = sample_event("intake.submitted")
    event["payload"]["demographics"]["phone"] = None
    record = parse_dlq_record(partition=0, offset=0, timestamp_ms=T0, key=None,
                              value=CODEC.encode(event), headers=None, codec=CODEC)
    assert record_view(record)["event"]["payload"]["demographics"]["phone"] is None


def test_undecodable_bytes_show_length_and_short_prefix_unless_revealed() -> None:
    raw = b"Okafor;Maria;1984-03-02;+15551234567"
    record = dlq_record(event_type=None, value=raw)
    view = record_view(record)["undecodable"]
    assert view["length"] == len(raw)
    assert view["hex_prefix"] == raw[:8].hex()
    assert raw[8:].hex() not in json.dumps(view)
    assert record_view(record, reveal=True)["undecodable"]["hex"] == raw.hex()


@pytest.mark.parametrize("fingerprint", ["1234567890123456", "0123456789abcdef"])
def test_view_shows_the_unknown_schema_fingerprint_of_an_undecodable_record(
    fingerprint: str,
) -> None:
    """The codec's reason goes through the redaction of the DLQ hop and still names the
    fingerprint, even one that is all decimal digits (like a phone number)."""
    value = MAGIC + bytes.fromhex(fingerprint) + b"\x02"
    with pytest.raises(UndecodableRecord) as undecodable:
        CODEC.decode(value)
    headers = next_hop_headers(
        RecordHeaders(), source=Provenance(topic="clinic.events", partition=0, offset=7,
                                           timestamp_ms=T0),
        attempts=1, now_ms=T0, error_class="undecodable", error_message=undecodable.value.reason,
        classification=Classification.PERMANENT, dlq_reason="undecodable")
    record = parse_dlq_record(partition=0, offset=0, timestamp_ms=T0, key=None, value=value,
                              headers=encode_headers(headers), codec=CODEC)
    expected = f"unknown schema fingerprint {fingerprint}"
    assert record_view(record)["error_message"] == expected
    assert record_view(record)["undecodable"]["reason"] == expected


def test_view_carries_provenance_and_failure_headers() -> None:
    view = record_view(dlq_record(replay_count=2))
    assert view["original"] == {"topic": "clinic.events", "partition": 2, "offset": 41,
                                "timestamp": "2025-11-29T08:00:00.000Z"}
    assert (view["attempts"], view["error_class"], view["classification"], view["dlq_reason"],
            view["replay_count"], view["first_failure_at"]) == (
        3, "consumer.errors.PermanentError", "permanent", "permanent", 2,
        "2025-11-29T08:00:00.001Z")


# --- grouping --------------------------------------------------------------------------------

def test_summary_groups_by_error_class_and_event_type() -> None:
    summary = DlqSummary()
    for record in (dlq_record(timestamp_ms=T0 + 5), dlq_record(timestamp_ms=T0 - 5),
                   dlq_record(timestamp_ms=None),
                   dlq_record(error_class="httpx.ReadTimeout", timestamp_ms=T0),
                   dlq_record(event_type=None), dlq_record(event_type="intake.submitted")):
        summary.add(record)
    groups = [(g.error_class, g.event_type, g.count, g.oldest_ms, g.newest_ms)
              for g in summary.groups()]
    assert groups == [
        ("consumer.errors.PermanentError", "appointment.scheduled", 3, T0 - 5, T0 + 5),
        ("consumer.errors.PermanentError", UNDECODABLE, 1, T0, T0),
        ("consumer.errors.PermanentError", "intake.submitted", 1, T0, T0),
        ("httpx.ReadTimeout", "appointment.scheduled", 1, T0, T0),
    ]
    assert summary.total == 6


def _parked(behind: str, event_id: str, *, offset: int = 0) -> DlqRecord:
    """A follower as the consumer dead-letters it: reason parked, no error of its own."""
    return dlq_record(event_id=event_id, offset=offset, parked_behind=behind,
                      dlq_reason="parked", error_class=None, error_message=None,
                      classification=None, attempts=0, first_failure_at_ms=None,
                      last_failure_at_ms=None)


def test_parked_dead_letters_are_grouped_as_parked_behind_their_heads() -> None:
    """Followers carry no error class: listed as (none) they were hard to find. They form
    their own group, which counts the heads they wait behind."""
    summary = DlqSummary()
    for record in (dlq_record(event_id="h1"), _parked("h1", "f1"), _parked("h1", "f2"),
                   dlq_record(event_id="h2"), _parked("h2", "f3")):
        summary.add(record)
    groups = [(g.label, g.error_class, g.event_type, g.count, sorted(g.parked_behind))
              for g in summary.groups()]
    assert groups == [
        ("parked (behind 2 heads)", PARKED, "appointment.scheduled", 3, ["h1", "h2"]),
        ("consumer.errors.PermanentError", "consumer.errors.PermanentError",
         "appointment.scheduled", 2, []),
    ]
    lone = DlqSummary()
    lone.add(_parked("h1", "f1"))
    assert lone.groups()[0].label == "parked (behind 1 head)"


def test_parked_selects_the_parked_dead_letters_and_show_names_their_head() -> None:
    head, follower = dlq_record(event_id="h1"), _parked("h1", "f1")
    for wanted in ("parked", PARKED):
        parked = DlqFilter(error_classes=frozenset({wanted}))
        assert (parked.matches(head), parked.matches(follower)) == (False, True)
    assert record_view(follower)["parked_behind"] == "h1"
    assert record_view(follower)["dlq_reason"] == "parked"
    assert record_view(head)["parked_behind"] is None


# --- replay decisions ------------------------------------------------------------------------

def test_replay_resets_attempts_and_errors_and_counts_the_replay() -> None:
    record = dlq_record(replay_count=1)
    decision = decide_replay(record, target=None, max_replays=3, outcome=None, force=False)
    assert isinstance(decision, Replay)
    assert (decision.topic, decision.key, decision.value) == (
        "clinic.events", record.key, record.value)
    headers = decode_headers(decision.headers)
    assert headers.replay_count == 2
    assert (headers.attempts, headers.due_at_ms, headers.dlq_reason, headers.error_class,
            headers.error_message, headers.classification, headers.first_failure_at_ms,
            headers.last_failure_at_ms) == (None,) * 8
    assert headers.traceparent == TRACEPARENT
    assert headers.provenance == DEAD.provenance
    assert (headers.event_id, headers.event_type) == ("evt-1", "appointment.scheduled")
    assert headers.other == (("x-upstream", b"scheduling"),)


def test_first_replay_counts_one() -> None:
    decision = decide_replay(dlq_record(), target=None, max_replays=3, outcome=None, force=False)
    assert isinstance(decision, Replay)
    assert decode_headers(decision.headers).replay_count == 1


def test_target_overrides_the_original_topic() -> None:
    decision = decide_replay(dlq_record(), target="other", max_replays=3, outcome=None,
                             force=False)
    assert isinstance(decision, Replay)
    assert decision.topic == "other"


def test_record_without_original_topic_needs_a_target() -> None:
    decision = decide_replay(dlq_record(original_topic=None), target=None, max_replays=3,
                             outcome=None, force=False)
    assert isinstance(decision, Skip)
    assert decision.reason == "no-target"


@pytest.mark.parametrize(("replays", "replayed"), [(None, True), (2, True), (3, False), (7, False)])
def test_records_replayed_max_replays_times_are_skipped(replays: int | None,
                                                        replayed: bool) -> None:
    decision = decide_replay(dlq_record(replay_count=replays), target=None, max_replays=3,
                             outcome=None, force=False)
    assert isinstance(decision, Replay) is replayed
    if not replayed:
        assert isinstance(decision, Skip)
        assert decision.reason == "max-replays"


def test_delivered_events_are_skipped_dead_lettered_ones_replayed() -> None:
    record = dlq_record()
    skipped = decide_replay(record, target=None, max_replays=3, outcome="delivered", force=False)
    assert isinstance(skipped, Skip)
    assert skipped.reason == "already-delivered"
    again = decide_replay(record, target=None, max_replays=3, outcome="dead_lettered",
                          force=False)
    assert isinstance(again, Replay)
    assert (REPLAY_FORCE, b"1") not in again.headers


def test_force_replays_delivered_events_with_a_marker() -> None:
    decision = decide_replay(dlq_record(), target=None, max_replays=3, outcome="delivered",
                             force=True)
    assert isinstance(decision, Replay)
    assert decision.headers.count((REPLAY_FORCE, b"1")) == 1


def test_an_old_force_marker_does_not_survive_an_unforced_replay() -> None:
    record = dlq_record(other=(("x-upstream", b"scheduling"), (REPLAY_FORCE, b"1")))
    decision = decide_replay(record, target=None, max_replays=3, outcome=None, force=False)
    assert isinstance(decision, Replay)
    assert [name for name, _ in decision.headers if name == REPLAY_FORCE] == []
    forced = decide_replay(record, target=None, max_replays=3, outcome=None, force=True)
    assert isinstance(forced, Replay)
    assert [name for name, _ in forced.headers].count(REPLAY_FORCE) == 1


def test_force_replays_an_open_record_past_max_replays() -> None:
    decision = decide_replay(dlq_record(replay_count=5), target=None, max_replays=3,
                             outcome="delivered", force=True)
    assert isinstance(decision, Replay)
    assert decision.forced
    assert decode_headers(decision.headers).replay_count == 6


def test_a_skipped_record_says_how_to_resolve_it() -> None:
    skipped = decide_replay(dlq_record(replay_count=3), target=None, max_replays=3,
                            outcome=None, force=False)
    assert isinstance(skipped, Skip)
    assert "discard it, or replay it with --force" in skipped.detail


REPLAYED = Resolution(status="replayed", at="2025-11-29T08:00:00.000Z", user="ops",
                      target_topic="clinic.events", event_id="evt-1")


@pytest.mark.parametrize("force", [False, True])
def test_a_resolved_record_is_never_replayed_again_not_even_forced(force: bool) -> None:
    record = dataclasses.replace(dlq_record(), resolution=REPLAYED)
    decision = decide_replay(record, target=None, max_replays=3, outcome=None, force=force)
    assert decision == AlreadyResolved(REPLAYED)
    assert record.status == "replayed"


def test_discard_resolves_open_records_only() -> None:
    assert decide_discard(dlq_record(), reason="duplicate of INC-1") == Discard(
        reason="duplicate of INC-1")
    record = dataclasses.replace(dlq_record(), resolution=REPLAYED)
    assert decide_discard(record, reason="x") == AlreadyResolved(REPLAYED)


def test_tally_counts_by_outcome_and_reason() -> None:
    tally = DlqTally()
    replay = Replay(topic="t", key=None, value=None, headers=[])
    for decision in (replay, replay, None, Skip(reason="max-replays", detail=""),
                     Skip(reason="already-delivered", detail=""),
                     Skip(reason="max-replays", detail=""), AlreadyResolved(REPLAYED)):
        tally.count(decision)
    assert tally.as_dict() == {"examined": 7, "not_matching": 1, "already_resolved": 1,
                               "replayed": 2, "parked_followers": 0,
                               "skipped": {"already-delivered": 1, "max-replays": 2}}


def test_a_discard_tally_counts_discarded_records() -> None:
    tally = DlqTally()
    for decision in (Discard(reason="r"), None, AlreadyResolved(REPLAYED), Discard(reason="r")):
        tally.count(decision)
    assert tally.as_dict("discard") == {"examined": 4, "not_matching": 1,
                                        "already_resolved": 1, "discarded": 2}


# --- the ledger ------------------------------------------------------------------------------

def test_ledger_keys_are_the_dead_letter_coordinates() -> None:
    assert ledger_key("clinic.events.dlq", 2, 41) == "clinic.events.dlq:2:41"


def test_a_resolution_round_trips_through_its_ledger_value() -> None:
    discarded = Resolution(status="discarded", at="2025-11-29T08:00:00.000Z", user="ops",
                           actor="INC-9", reason="test event", event_id="evt-3")
    for resolution in (REPLAYED, discarded, dataclasses.replace(REPLAYED, forced=True)):
        assert Resolution.from_json(resolution.to_json()) == resolution
    assert json.loads(discarded.to_json()) == {
        "status": "discarded", "at": "2025-11-29T08:00:00.000Z", "user": "ops",
        "actor": "INC-9", "reason": "test event", "event_id": "evt-3"}


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b'{"status": "reopened"}', b"\xff"])
def test_an_unreadable_ledger_entry_still_counts_as_resolved(raw: bytes) -> None:
    """Replaying a record whose entry cannot be read could send it twice: it stays resolved."""
    ledger = DlqLedger()
    ledger.apply(b"d:0:7", raw)
    resolution = ledger.resolution("d", 0, 7)
    assert resolution is not None
    assert resolution.status == "unreadable"


def test_the_ledger_keeps_the_latest_entry_per_key_and_forgets_tombstoned_ones() -> None:
    ledger = DlqLedger()
    ledger.apply(b"d:0:1", REPLAYED.to_json())
    ledger.apply(b"d:0:2", REPLAYED.to_json())
    ledger.apply(b"d:0:2", None)
    ledger.apply(None, REPLAYED.to_json())  # no key: not an entry
    assert (ledger.resolution("d", 0, 1), ledger.resolution("d", 0, 2)) == (REPLAYED, None)
    assert ledger.resolution("other", 0, 1) is None
    assert len(ledger) == 1


def test_summary_counts_open_records_unless_resolved_ones_are_included() -> None:
    records = [dlq_record(), dataclasses.replace(dlq_record(), resolution=REPLAYED),
               dataclasses.replace(dlq_record(), resolution=dataclasses.replace(
                   REPLAYED, status="discarded"))]
    open_only, everything = DlqSummary(), DlqSummary(include_resolved=True)
    for record in records:
        open_only.add(record)
        everything.add(record)
    assert [(g.count, g.open) for g in open_only.groups()] == [(1, 1)]
    assert (open_only.total, open_only.resolved_left_out) == (1, 2)
    assert [(g.count, g.open) for g in everything.groups()] == [(3, 1)]
    assert (everything.total, everything.resolved_left_out) == (3, 0)
    assert open_only.statuses == {"open": 1, "replayed": 1, "discarded": 1}


def test_the_view_tells_open_records_from_resolved_ones() -> None:
    assert record_view(dlq_record())["status"] == "open"
    assert "resolution" not in record_view(dlq_record())
    view = record_view(dataclasses.replace(dlq_record(), resolution=REPLAYED))
    assert (view["status"], view["resolution"]["target_topic"]) == ("replayed", "clinic.events")


def test_printable_escapes_every_control_character_and_keeps_other_text() -> None:
    assert printable("appt-2001 Müller, José") == "appt-2001 Müller, José"
    assert printable("a\x00b\x1b[31mc\nd\te\x9bf\u2028g") == (
        "a\\x00b\\x1b[31mc\\nd\\te\\x9bf\\u2028g")


@pytest.mark.parametrize(("key", "text"), [
    (b"appt-2001", "appt-2001"),
    (None, None),
    (b"\x00garbage-key\xff", "hex 00676172626167652d6b6579ff (not printable UTF-8)"),
    (b"bell\x07", "hex 62656c6c07 (not printable UTF-8)"),  # valid UTF-8, not printable
])
def test_key_text_is_the_key_if_printable_utf8_else_marked_hex(
    key: bytes | None, text: str | None,
) -> None:
    assert key_text(key) == text


def test_record_view_carries_the_exact_key_bytes() -> None:
    """--json: ``key`` is the text only when the bytes are UTF-8 (never a lossy U+FFFD form);
    ``key_hex`` is always exact."""
    record = dataclasses.replace(dlq_record(), key=b"\x00garbage-key\xff")
    view = record_view(record)
    assert (view["key"], view["key_hex"]) == (None, "00676172626167652d6b6579ff")
    assert (record_view(dlq_record())["key"], record_view(dlq_record())["key_hex"]) == (
        "appt-2001", b"appt-2001".hex())
    unkeyed = record_view(dataclasses.replace(dlq_record(), key=None))
    assert (unkeyed["key"], unkeyed["key_hex"]) == (None, None)
