"""``clinic-events dlq list | show | replay | discard`` against a real broker, seeded like the
consumer.

Each test gets its own main topic (``topic_prefix``), DLQ, ledger, audit topic, group and dedup
file.
DLQ records carry headers built with :mod:`retry_topics.headers` and values encoded by the
real codec from realistic events, plus one record of garbage bytes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, cast

import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.cli.main import main
from consumer.dedup.store import open_dedup_store
from consumer.events.codec import EventCodec
from consumer.events.model import entity_key
from retry_topics.classification import Classification
from retry_topics.headers import RecordHeaders, decode_headers, encode_headers
from retry_topics.naming import audit_topic_name, dlq_ledger_topic_name, dlq_topic_name
from tests.integration.conftest import create_topics
from tests.integration.harness import cli_env
from tests.unit.sample_events import sample_event

PHI_VALUES = ("Maria", "Okafor", "1984-03-02", "+15551234567", "MBR99887766", "pat-501")
GARBAGE = b"Okafor;Maria;1984-03-02;+15551234567 -- pasted by hand, not Avro"
NOW_MS = time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Seeded:
    """One record produced to the DLQ."""

    event_id: str | None
    key: bytes | None
    value: bytes
    traceparent: str
    replay_count: int


def _config(tmp_path: Path, bootstrap: str, main_topic: str, partitions: int) -> Path:
    path = tmp_path / "clinic-events.toml"
    path.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{main_topic}.group"
[topics]
main = "{main_topic}"
partitions = {partitions}
[retry]
delays = ["1s"]
[dedup]
store = "sqlite:///{tmp_path}/dedup.sqlite3"
""")
    # The consumer's store, as `run` leaves it: the dlq commands never create one.
    open_dedup_store(f"sqlite:///{tmp_path}/dedup.sqlite3", 3_600_000).close()
    return path


def _topics(admin: AdminClient, main_topic: str, partitions: int) -> None:
    create_topics(admin, [main_topic, dlq_topic_name(main_topic)], partitions)
    create_topics(admin, [audit_topic_name(main_topic), dlq_ledger_topic_name(main_topic)], 1)


def _seed(bootstrap: str, main_topic: str, specs: Sequence[dict[str, Any]],
          partitions: int) -> list[Seeded]:
    """Dead-letter one record per spec (keys: type, error, replays, id; type None = garbage)."""
    codec, seeded, outgoing = EventCodec(), [], []
    for index, spec in enumerate(specs):
        event_type = spec.get("type")
        traceparent = f"00-{index + 1:032x}-{index + 1:016x}-01"
        common = RecordHeaders(
            attempts=2, original_topic=main_topic, original_partition=index % partitions,
            original_offset=100 + index, original_timestamp_ms=NOW_MS - 60_000,
            first_failure_at_ms=NOW_MS - 50_000, last_failure_at_ms=NOW_MS - 40_000,
            traceparent=traceparent, replay_count=spec.get("replays"),
            classification=Classification.PERMANENT)
        if event_type is None:
            key, value, event_id = None, GARBAGE, None
            headers = replace(common, error_class="consumer.errors.UndecodableRecord",
                              error_message="not Avro single-object encoding (bad marker)",
                              dlq_reason="undecodable")
        else:
            event_id = spec.get("id", f"evt-{index}")
            event = sample_event(event_type, event_id)
            key, value = entity_key(event), codec.encode(event)
            error = spec.get("error", "consumer.errors.PermanentError")
            headers = replace(common, error_class=error, error_message="HTTP 422",
                              dlq_reason="permanent",
                              event_id=event_id, event_type=event_type)
        wire: list[tuple[str, str | bytes | None]] = [*encode_headers(headers)]
        outgoing.append((key, value, index % partitions, wire))
        seeded.append(Seeded(event_id, key, value, traceparent, spec.get("replays") or 0))
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    try:
        for key, value, partition, wire in outgoing:
            producer.produce(dlq_topic_name(main_topic), key=key, value=value,
                             partition=partition, headers=wire)
        assert producer.flush(30) == 0
    finally:
        producer.close()
    return seeded


def _invoke(config: Path, *args: str, columns: str | None = "220") -> Result:
    """Run ``clinic-events <args>`` with ``--config`` after the subcommand (COLUMNS None: unset).

    No trace exporter, as where no collector runs: a replay then leaves each record's trace
    context as the DLQ had it (with one, tests/integration/test_consumer_tracing.py).
    """
    env = {"COLUMNS": columns, "OTEL_TRACES_EXPORTER": "none"}
    return CliRunner(env=env).invoke(main, [*args[:2], "--config", str(config), *args[2:]])


def _cli(config: Path, *args: str, columns: str | None = "220") -> Result:
    result = _invoke(config, *args, columns=columns)
    assert result.exit_code == 0, result.output
    return result


def _cli_json(config: Path, *args: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(_cli(config, *args, "--json").stdout)
    return document


def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None,
                                                          list[tuple[str, bytes]]]]:
    """Every committed record of ``topic`` up to its end (read-committed, like the consumer)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}.check",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records, pending, deadline = [], set(partitions), time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                pending.discard(message.partition())
                continue
            headers = cast("list[tuple[str, bytes]] | None", message.headers())
            records.append((message.key(), message.value(), headers or []))
        assert not pending, f"could not read {topic} to its end"
        return records
    finally:
        consumer.close()


def test_replay_with_filter_republishes_exactly_the_matching_records_unchanged(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str, tmp_path: Path,
) -> None:
    """A filtered replay sends only matching records home, bytes and trace intact, counted."""
    _topics(admin, topic_prefix, 3)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 3)
    seeded = _seed(kafka_bootstrap, topic_prefix, [
        {"type": "appointment.scheduled"}, {"type": "appointment.cancelled", "replays": 1},
        {"type": "intake.submitted", "error": "httpx.ReadTimeout"},
        {"type": "eligibility.check_requested"}, {"type": None},
    ], 3)
    report = _cli_json(config, "dlq", "replay", "--error-class", "PermanentError")
    assert report["counts"] == {"examined": 5, "not_matching": 2, "already_resolved": 0,
                                "replayed": 3, "parked_followers": 0, "skipped": {}}
    wanted = {s.event_id: s for s in seeded if s.event_id in ("evt-0", "evt-1", "evt-3")}
    received = _read_all(kafka_bootstrap, topic_prefix)
    assert len(received) == 3
    for key, value, raw_headers in received:
        headers = decode_headers(raw_headers)
        original = wanted[headers.event_id or ""]
        assert (key, value, headers.traceparent) == (original.key, original.value,
                                                     original.traceparent)
        assert headers.replay_count == original.replay_count + 1
        assert headers.original_topic == topic_prefix
        assert (headers.attempts, headers.due_at_ms, headers.dlq_reason, headers.error_class,
                headers.error_message, headers.classification) == (None,) * 6
        assert not headers.other, "no force marker without --force"


def test_interrupted_replay_resumed_sends_every_record_exactly_once(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str, tmp_path: Path,
) -> None:
    """A replay killed with SIGKILL mid-way and run again republishes each record once in total."""
    _topics(admin, topic_prefix, 3)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 3)
    seeded = _seed(kafka_bootstrap, topic_prefix, [{"type": "appointment.scheduled"}] * 12, 3)
    log = (tmp_path / "first-run.log").open("w")
    first = _slow_replay(config, tmp_path, log)
    try:
        seen = _mid_replay(first, kafka_bootstrap, topic_prefix, log.name)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)  # reaps it and closes its output pipe
        log.close()
    report = _cli_json(config, "dlq", "replay")
    assert 0 < report["counts"]["replayed"] <= 12 - seen
    received = [decode_headers(headers).event_id for _, _, headers in
                _read_all(kafka_bootstrap, topic_prefix)]
    assert sorted(map(str, received)) == sorted(str(s.event_id) for s in seeded)
    again = _cli_json(config, "dlq", "replay")["counts"]
    assert (again["replayed"], again["already_resolved"]) == (0, 12)


def _slow_replay(config: Path, tmp_path: Path, log: IO[str],
                 preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[str]:
    """``dlq replay --rate 2 --json`` started as its own process, standard error to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "consumer", "dlq", "replay", "--config", str(config),
         "--rate", "2", "--json"], stdout=subprocess.PIPE, stderr=log, text=True,
        env=cli_env(tmp_path), preexec_fn=preexec_fn)


def _mid_replay(replay: subprocess.Popen[str], bootstrap: str, topic: str,
                log_name: str) -> int:
    """Wait until ``replay`` has republished some but not all 12 records; how many."""
    seen, deadline = 0, time.monotonic() + 60
    while seen < 2 and time.monotonic() < deadline and replay.poll() is None:
        seen = len(_read_all(bootstrap, topic))
    assert 2 <= seen < 12, f"stop the replay mid-way (saw {seen}, log {log_name})"
    return seen


def _ignore_sigint() -> None:
    """What a non-interactive shell does for a job it starts in the background."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT-ignored-by-the-shell"])
def test_replay_stopped_by_a_signal_reports_audits_and_resumes_without_overlap(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str, tmp_path: Path,
    signum: int, code: int,
) -> None:
    """SIGTERM, or SIGINT even where the starting shell ignored it, stops a replay after the
    record in progress: exit 128 + the signal, summary and audit record say "interrupted",
    and a replay run again republishes exactly the records the first one did not."""
    _topics(admin, topic_prefix, 3)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 3)
    seeded = _seed(kafka_bootstrap, topic_prefix, [{"type": "appointment.scheduled"}] * 12, 3)
    log = (tmp_path / "first-run.log").open("w")
    first = _slow_replay(config, tmp_path, log,
                         preexec_fn=_ignore_sigint if signum == signal.SIGINT else None)
    try:
        seen = _mid_replay(first, kafka_bootstrap, topic_prefix, log.name)
        first.send_signal(signum)
        stdout, _ = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(30)
        log.close()
    assert first.returncode == code, (tmp_path / "first-run.log").read_text()
    report = json.loads(stdout)
    assert (report["outcome"], report["stopped_by"]) == ("interrupted",
                                                         signal.Signals(signum).name)
    replayed = report["counts"]["replayed"]
    assert seen <= replayed < 12
    (audit,) = [json.loads(value or b"") for _, value, _ in
                _read_all(kafka_bootstrap, audit_topic_name(topic_prefix))]
    assert (audit["outcome"], audit["counts"]) == ("interrupted", report["counts"])
    assert report["audit_topic"] == audit_topic_name(topic_prefix)
    assert len(_read_all(kafka_bootstrap, topic_prefix)) == replayed
    resumed = _cli_json(config, "dlq", "replay")
    assert resumed["counts"]["replayed"] == 12 - replayed
    received = [decode_headers(headers).event_id for _, _, headers in
                _read_all(kafka_bootstrap, topic_prefix)]
    assert sorted(map(str, received)) == sorted(str(s.event_id) for s in seeded)


def test_dry_run_sends_nothing_and_keeps_the_position(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str, tmp_path: Path,
) -> None:
    """--dry-run lists what would be replayed, sends and commits nothing, writes no audit."""
    _topics(admin, topic_prefix, 1)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 1)
    _seed(kafka_bootstrap, topic_prefix, [{"type": "appointment.scheduled"}, {"type": None}], 1)
    report = _cli_json(config, "dlq", "replay", "--dry-run")
    assert report["dry_run"] is True
    assert [(r["event_id"], r["action"]) for r in report["records"]] == [
        ("evt-0", "replay"), (None, "replay")]
    human = _cli(config, "dlq", "replay", "--dry-run").stdout
    assert "would replay 2 record(s)" in human
    assert _read_all(kafka_bootstrap, topic_prefix) == []
    assert _read_all(kafka_bootstrap, audit_topic_name(topic_prefix)) == []
    assert _cli_json(config, "dlq", "replay")["counts"]["replayed"] == 2


def test_show_masks_patient_identifying_values_unless_revealed(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str, tmp_path: Path,
) -> None:
    """show masks names, birth date, phone, member and patient ids; --reveal shows them."""
    _topics(admin, topic_prefix, 1)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 1)
    _seed(kafka_bootstrap, topic_prefix, [
        {"type": "intake.submitted"}, {"type": "eligibility.check_requested"}, {"type": None}], 1)
    masked_json = _cli(config, "dlq", "show", "--json").stdout
    masked_human = _cli(config, "dlq", "show").stdout
    for output in (masked_json, masked_human):
        assert not [value for value in PHI_VALUES if value in output]
        assert GARBAGE.hex() not in output
        assert "intake-1001" in output
        assert "elig-3001" in output
        assert "evt-1" in output
    records = json.loads(masked_json)["records"]
    assert records[0]["event"]["payload"]["demographics"]["first_name"] == "****"
    assert records[0]["original"] == {"topic": topic_prefix, "partition": 0, "offset": 100,
                                      "timestamp": records[0]["original"]["timestamp"]}
    assert records[2]["undecodable"]["length"] == len(GARBAGE)
    assert records[2]["undecodable"]["hex_prefix"] == GARBAGE[:8].hex()
    assert records[2]["event_type"] == "(undecodable)"
    revealed = _cli(config, "dlq", "show", "--json", "--reveal").stdout
    assert all(value in revealed for value in PHI_VALUES)
    assert GARBAGE.hex() in revealed
    limited = _cli_json(config, "dlq", "show", "--limit", "1", "--event-type", "(undecodable)")
    assert [r["dlq_offset"] for r in limited["records"]] == [2]


def test_list_counts_records_per_error_class_and_event_type(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str, tmp_path: Path,
) -> None:
    """list groups by error class and event type with counts, oldest and newest times."""
    _topics(admin, topic_prefix, 3)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 3)
    _seed(kafka_bootstrap, topic_prefix, [
        {"type": "appointment.scheduled"}, {"type": "appointment.scheduled"},
        {"type": "appointment.scheduled", "error": "httpx.ReadTimeout"},
        {"type": "intake.submitted"}, {"type": None}, {"type": None},
    ], 3)
    listing = _cli_json(config, "dlq", "list")
    counts = {(g["error_class"], g["event_type"]): g["count"] for g in listing["groups"]}
    assert counts == {
        ("consumer.errors.PermanentError", "appointment.scheduled"): 2,
        ("httpx.ReadTimeout", "appointment.scheduled"): 1,
        ("consumer.errors.PermanentError", "intake.submitted"): 1,
        ("consumer.errors.UndecodableRecord", "(undecodable)"): 2,
    }
    assert listing["total"] == 6
    assert all(g["oldest"] <= g["newest"] for g in listing["groups"])
    human = _cli(config, "dlq", "list").stdout
    assert "(undecodable)" in human
    assert "httpx.ReadTimeout" in human


def test_replay_writes_an_audit_record(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str, tmp_path: Path,
) -> None:
    """A replay appends who, when, filters, target, counts, ledger and offsets to the audit
    topic."""
    _topics(admin, topic_prefix, 1)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 1)
    _seed(kafka_bootstrap, topic_prefix, [{"type": "appointment.scheduled"}] * 3, 1)
    _cli(config, "dlq", "replay", "--actor", "INC-4711", "--event-id", "evt-1")
    (audit,) = [json.loads(value or b"") for _, value, _ in
                _read_all(kafka_bootstrap, audit_topic_name(topic_prefix))]
    assert audit["actor"] == "INC-4711"
    assert audit["user"]
    assert audit["started_at"] <= audit["finished_at"]
    assert audit["outcome"] == "completed"
    assert audit["filters"] == {"event_ids": ["evt-1"]}
    assert audit["action"] == "dlq.replay"
    assert audit["target_topic"] == "(original topic)"
    assert audit["ledger_topic"] == dlq_ledger_topic_name(topic_prefix)
    assert audit["counts"] == {"examined": 3, "not_matching": 2, "already_resolved": 0,
                               "replayed": 1, "parked_followers": 0, "skipped": {}}
    assert audit["dlq_offsets"] == [{"partition": 0, "from": 0, "to": 2}]


def test_records_replayed_max_replays_times_are_skipped_and_reported(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str, tmp_path: Path,
) -> None:
    """A record whose replay count reached --max-replays stays in the DLQ and is reported."""
    _topics(admin, topic_prefix, 1)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 1)
    _seed(kafka_bootstrap, topic_prefix, [
        {"type": "appointment.scheduled", "replays": 3},
        {"type": "appointment.scheduled", "replays": 1},
        {"type": "appointment.scheduled", "replays": 2}], 1)
    report = _cli_json(config, "dlq", "replay", "--max-replays", "2")
    assert report["counts"]["skipped"] == {"max-replays": 2}
    assert sorted((r["event_id"], r["action"]) for r in report["records"]) == [
        ("evt-0", "skip"), ("evt-1", "replay"), ("evt-2", "skip")]
    (replayed,) = _read_all(kafka_bootstrap, topic_prefix)
    assert decode_headers(replayed[2]).replay_count == 2


def test_delivered_events_are_skipped_unless_forced(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str, tmp_path: Path,
) -> None:
    """Events the dedup store records as delivered are left open; --force replays them,
    marked."""
    _topics(admin, topic_prefix, 1)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 1)
    _seed(kafka_bootstrap, topic_prefix, [{"type": "appointment.scheduled"}] * 2, 1)
    store = open_dedup_store(f"sqlite:///{tmp_path}/dedup.sqlite3", 3_600_000)
    try:
        store.record("evt-0", "delivered")
        store.record("evt-1", "dead_lettered")
    finally:
        store.close()
    report = _cli_json(config, "dlq", "replay")
    assert report["counts"]["skipped"] == {"already-delivered": 1}
    assert [decode_headers(h).event_id for _, _, h in _read_all(kafka_bootstrap, topic_prefix)
            ] == ["evt-1"]
    assert _cli_json(config, "dlq", "list")["total"] == 1  # evt-0 stays open
    forced = _cli_json(config, "dlq", "replay", "--force")
    assert forced["counts"]["replayed"] == 1
    assert forced["counts"]["already_resolved"] == 1
    by_id = {decode_headers(h).event_id: h for _, _, h in _read_all(kafka_bootstrap, topic_prefix)}
    assert ("clinic.replay-force", b"1") in by_id["evt-0"]
    assert ("clinic.replay-force", b"1") not in by_id["evt-1"]


@pytest.mark.parametrize("command", [("dlq", "list"), ("dlq", "show"), ("dlq", "replay")])
def test_a_partition_the_dlq_lacks_is_a_usage_error(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str, tmp_path: Path,
    command: tuple[str, str],
) -> None:
    """--partition beyond the DLQ's partitions is refused (exit 2) naming its partitions, not
    answered with 0 records; a replay refused so writes no audit record."""
    _topics(admin, topic_prefix, 3)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 3)
    _seed(kafka_bootstrap, topic_prefix, [{"type": "appointment.scheduled"}], 3)
    result = _invoke(config, *command, "--partition", "99")
    assert result.exit_code == 2, result.output
    assert (f"--partition 99: the DLQ topic {dlq_topic_name(topic_prefix)} has 3 partitions "
            "(0..2)") in result.stderr
    assert _read_all(kafka_bootstrap, audit_topic_name(topic_prefix)) == []
    assert _cli_json(config, *command, "--partition", "2")  # the last one exists


@pytest.mark.parametrize("dry_run", [(), ("--dry-run",)], ids=["replay", "dry-run"])
def test_replay_without_a_dlq_names_the_missing_dlq_topic(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, dry_run: tuple[str, ...],
) -> None:
    """A replay whose DLQ does not exist names the DLQ topic (exit 1), not the audit topic."""
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 1)
    result = _invoke(config, "dlq", "replay", *dry_run)
    assert result.exit_code == 1, result.output
    assert (f"clinic-events: dlq: topic {dlq_topic_name(topic_prefix)} does not exist"
            in result.stderr)
    assert audit_topic_name(topic_prefix) not in result.stderr


@pytest.mark.parametrize("dry_run", [(), ("--dry-run",)], ids=["replay", "dry-run"])
def test_replay_to_a_missing_topic_is_a_usage_error_before_anything_is_sent(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, admin: AdminClient,
    dry_run: tuple[str, ...],
) -> None:
    _topics(admin, topic_prefix, 1)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 1)
    _seed(kafka_bootstrap, topic_prefix, [{"type": "appointment.scheduled"}], 1)
    missing = f"{topic_prefix}.typo"
    result = _invoke(config, "dlq", "replay", "--to", missing, *dry_run)
    assert result.exit_code == 2, result.output
    assert f"--to: topic {missing} does not exist" in result.stderr
    assert _read_all(kafka_bootstrap, audit_topic_name(topic_prefix)) == []


def test_piped_tables_keep_long_ids_and_error_classes_on_one_line(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str, tmp_path: Path,
) -> None:
    """Written to a pipe (no COLUMNS), list and replay --dry-run tables split no id or class."""
    _topics(admin, topic_prefix, 1)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 1)
    event_id = "evt-2f6a0d3c-8e41-4b7a-9c55-0f1e2d3c4b5a.ehr-sync.north-clinic.attempt-0001"
    error = "clinic_integrations.ehr.client.errors.PatientRecordLockedByAnotherSession"
    _seed(kafka_bootstrap, topic_prefix, [
        {"type": "appointment.rescheduled", "id": event_id, "error": error}], 1)
    listing = _cli(config, "dlq", "list", columns=None).stdout.splitlines()
    assert [line for line in listing if error in line and "appointment.rescheduled" in line]
    dry_run = _cli(config, "dlq", "replay", "--dry-run", columns=None).stdout.splitlines()
    assert [line for line in dry_run if event_id in line and error in line]


def _replayed_ids(bootstrap: str, topic: str) -> list[str]:
    """Event ids of every record republished to ``topic``, sorted (duplicates kept)."""
    return sorted(str(decode_headers(headers).event_id)
                  for _, _, headers in _read_all(bootstrap, topic))


def test_a_replay_after_a_filtered_one_replays_the_rest_exactly_once(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str, tmp_path: Path,
) -> None:
    """Issue 16's case: of 10 dead letters, --event-id X replays 1, the next replay the other
    9, a third none; list tells open records from resolved ones."""
    _topics(admin, topic_prefix, 3)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 3)
    seeded = _seed(kafka_bootstrap, topic_prefix, [{"type": "appointment.scheduled"}] * 10, 3)
    first = _cli_json(config, "dlq", "replay", "--event-id", "evt-4")
    assert first["counts"] == {"examined": 10, "not_matching": 9, "already_resolved": 0,
                               "replayed": 1, "parked_followers": 0, "skipped": {}}
    assert _cli_json(config, "dlq", "list")["total"] == 9
    second = _cli_json(config, "dlq", "replay")
    assert second["counts"] == {"examined": 10, "not_matching": 0, "already_resolved": 1,
                                "replayed": 9, "parked_followers": 0, "skipped": {}}
    third = _cli(config, "dlq", "replay").stdout
    assert "replayed 0 record(s); left open: none; already resolved: 10" in third
    assert _replayed_ids(kafka_bootstrap, topic_prefix) == sorted(
        str(s.event_id) for s in seeded)
    listing = _cli_json(config, "dlq", "list")
    assert (listing["total"], listing["resolved_left_out"], listing["groups"]) == (0, 10, [])
    everything = _cli_json(config, "dlq", "list", "--include-resolved")
    assert [(g["count"], g["open"]) for g in everything["groups"]] == [(10, 0)]
    assert everything["statuses"] == {"replayed": 10}
    human = _cli(config, "dlq", "list").stdout
    assert "0 open records" in human
    assert "10 resolved record(s) (replayed or discarded) not counted" in human


def test_a_discarded_record_is_never_replayed_and_the_discard_is_audited(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str, tmp_path: Path,
) -> None:
    """dlq discard marks matching records resolved with who, when and why (ledger and audit
    topic); replays pass them by, show tells their status, a second discard changes nothing."""
    _topics(admin, topic_prefix, 1)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 1)
    _seed(kafka_bootstrap, topic_prefix, [{"type": "appointment.scheduled"}] * 3, 1)
    dry = _cli_json(config, "dlq", "discard", "--event-id", "evt-1", "--reason", "test event",
                    "--dry-run")
    assert [(r["event_id"], r["action"]) for r in dry["records"]] == [("evt-1", "discard")]
    report = _cli_json(config, "dlq", "discard", "--event-id", "evt-1", "--reason",
                       "test event", "--actor", "INC-4712")
    assert report["counts"] == {"examined": 3, "not_matching": 2, "already_resolved": 0,
                                "discarded": 1}
    (audit,) = [json.loads(value or b"") for _, value, _ in
                _read_all(kafka_bootstrap, audit_topic_name(topic_prefix))]
    assert (audit["action"], audit["reason"], audit["actor"], audit["outcome"]) == (
        "dlq.discard", "test event", "INC-4712", "completed")
    assert audit["user"]
    assert audit["started_at"] <= audit["finished_at"]
    assert audit["counts"] == report["counts"]
    (entry,) = _read_all(kafka_bootstrap, dlq_ledger_topic_name(topic_prefix))
    assert entry[0] == f"{dlq_topic_name(topic_prefix)}:0:1".encode()
    assert json.loads(entry[1] or b"")["status"] == "discarded"
    assert _cli_json(config, "dlq", "show", "--event-id", "evt-1")["records"] == []
    (shown,) = _cli_json(config, "dlq", "show", "--event-id", "evt-1",
                         "--include-resolved")["records"]
    assert shown["status"] == "discarded"
    assert (shown["resolution"]["reason"], shown["resolution"]["actor"]) == (
        "test event", "INC-4712")
    replayed = _cli_json(config, "dlq", "replay")
    assert (replayed["counts"]["replayed"], replayed["counts"]["already_resolved"]) == (2, 1)
    assert _replayed_ids(kafka_bootstrap, topic_prefix) == ["evt-0", "evt-2"]
    again = _cli_json(config, "dlq", "discard", "--all", "--reason", "cleanup")
    assert again["counts"] == {"examined": 3, "not_matching": 0, "already_resolved": 3,
                               "discarded": 0}


def test_replays_started_side_by_side_republish_each_record_once(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str, tmp_path: Path,
) -> None:
    """Two replays of one DLQ started at the same time republish every record exactly once:
    the later one fences the earlier, which stops with exit 1 saying so and is audited."""
    _topics(admin, topic_prefix, 3)
    config = _config(tmp_path, kafka_bootstrap, topic_prefix, 3)
    seeded = _seed(kafka_bootstrap, topic_prefix, [{"type": "appointment.scheduled"}] * 12, 3)
    logs = [(tmp_path / f"run-{n}.log").open("w") for n in (1, 2)]
    runs = [_slow_replay(config, tmp_path, log) for log in logs]
    try:
        outputs = [run.communicate(timeout=120)[0] for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait(30)
        for log in logs:
            log.close()
    errors = [(tmp_path / f"run-{n}.log").read_text() for n in (1, 2)]
    codes = [run.returncode for run in runs]
    assert sorted(codes) == [0, 1], errors
    loser = codes.index(1)
    assert "started and took over (this run was fenced)" in errors[loser]
    alarming = [line for line in errors[loser].splitlines()
                if '"level": "critical"' in line or '"level": "error"' in line]
    assert alarming == [], "the fencing is reported in plain words, not as librdkafka's fatal"
    winner = json.loads(outputs[1 - loser])
    assert _replayed_ids(kafka_bootstrap, topic_prefix) == sorted(
        str(s.event_id) for s in seeded)
    audits = {a["outcome"]: a for a in (json.loads(value or b"") for _, value, _ in
                                        _read_all(kafka_bootstrap, audit_topic_name(topic_prefix)))}
    assert set(audits) == {"fenced", "completed"}
    assert audits["completed"]["counts"] == winner["counts"]
    assert audits["fenced"]["counts"]["replayed"] + winner["counts"]["replayed"] == 12
    final = _cli_json(config, "dlq", "replay")["counts"]
    assert (final["replayed"], final["already_resolved"]) == (0, 12)
