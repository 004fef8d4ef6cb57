"""``clinic-events dlq`` options and output that need no broker: event types, piped tables,
signals, summaries, and ``discard``'s safeguards."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.table import Table

from consumer.cli.dlq import dlq_group, table_console
from consumer.cli.main import main
from consumer.errors import DedupStoreError
from consumer.events.codec import EVENT_TYPES, EventCodec
from consumer.kafka.dlq_io import DiscardRequest, ReplayRun
from consumer.ops.dlq.ledger import Resolution
from consumer.ops.dlq.model import UNDECODABLE, DlqRecord, Replay, parse_dlq_record
from retry_topics.headers import RecordHeaders, encode_headers

SUBCOMMANDS = ("list", "show", "replay")
LONG_ID = "evt-" + "3f2a9c1e-5b7d-4e2a-9f3c-1a2b3c4d5e6f" * 3
ANSI_STYLE = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_a_misspelled_event_type_is_a_usage_error_naming_the_valid_ones(subcommand: str) -> None:
    # Refused while parsing, before any configuration is read or Kafka is asked.
    result = CliRunner().invoke(main, ["dlq", subcommand, "--event-type", "intake.submited"])
    assert result.exit_code == 2, result.output
    assert "'intake.submited' is not one of" in result.stderr
    assert all(valid in result.stderr for valid in (*EVENT_TYPES, UNDECODABLE))


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
@pytest.mark.parametrize("event_type", [*EVENT_TYPES, UNDECODABLE])
def test_every_event_type_and_undecodable_are_accepted(subcommand: str, event_type: str) -> None:
    command = dlq_group.commands[subcommand]
    context = command.make_context(subcommand, ["--event-type", event_type])
    assert context.params["event_types"] == (event_type,)


def _printed_table(capsys: pytest.CaptureFixture[str]) -> list[str]:
    table = Table(title="would do")
    for column in ("partition", "offset", "event id", "event type", "error class", "action"):
        table.add_column(column, overflow="fold")
    table.add_row("0", "12", LONG_ID, "appointment.rescheduled",
                  "consumer.errors.PermanentError", "replay -> clinic.events")
    table_console().print(table)
    return ANSI_STYLE.sub("", capsys.readouterr().out).splitlines()


def test_piped_tables_keep_ids_on_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "0")  # stdout is not a terminal
    monkeypatch.delenv("COLUMNS", raising=False)
    assert [line for line in _printed_table(capsys) if LONG_ID in line]


def test_terminal_tables_keep_the_terminal_width(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "100")
    assert table_console().width == 100
    lines = _printed_table(capsys)
    assert not [line for line in lines if LONG_ID in line]  # folded to fit, as before
    assert max(len(line) for line in lines) <= 100


def test_an_interrupted_replay_reports_what_it_committed_in_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C mid-replay: exit 130, and --json still prints how far the run got (the counts
    replay() left on the caller's run: the committed ones)."""
    def interrupted(*_args: object, run: ReplayRun, **_kwargs: object) -> ReplayRun:
        run.tally.examined, run.tally.replayed = 7, 5
        run.offsets = {0: [10, 16]}
        raise KeyboardInterrupt

    monkeypatch.setattr("consumer.cli.dlq.replay", interrupted)
    result = CliRunner().invoke(main, ["dlq", "replay", "--json"])
    assert result.exit_code == 130
    document = json.loads(result.stdout)
    assert document["outcome"] == "interrupted"
    assert (document["counts"]["examined"], document["counts"]["replayed"]) == (7, 5)
    assert document["dlq_offsets"] == [{"partition": 0, "from": 10, "to": 16}]
    assert "interrupted after 5 record(s) replayed and committed" in result.stderr


def _unreachable_config(tmp_path: Path) -> Path:
    """Settings naming a broker that refuses connections: a command that gets as far as
    asking Kafka fails slowly and differently, so a quick exit 2 proves it never did."""
    path = tmp_path / "clinic-events.toml"
    path.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\n[topics]\nmain = "clinic.events"\n'
                    f'[dedup]\nstore = "sqlite:///{tmp_path}/dedup.sqlite3"\n')
    return path


@pytest.mark.parametrize("dry_run", [(), ("--dry-run",)], ids=["replay", "dry-run"])
@pytest.mark.parametrize(("target", "named"), [("clinic.events.dlq", "the DLQ itself"),
                                               ("clinic.events.dlq-ledger", "the DLQ ledger"),
                                               ("clinic.events.audit", "the audit topic")])
def test_replay_to_the_dlq_or_the_audit_topic_is_a_usage_error_before_kafka_is_asked(
    tmp_path: Path, target: str, named: str, dry_run: tuple[str, ...],
) -> None:
    config = _unreachable_config(tmp_path)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["dlq", "replay", "--config", str(config), "--to", target,
                                       *dry_run])
    assert result.exit_code == 2, result.output
    assert f"--to: {target} is {named}" in result.stderr
    assert time.monotonic() - started < 5  # no Kafka request was waited for


def _stopped_by_signal(*signums: int) -> Callable[..., ReplayRun]:
    """A replay() that sends itself ``signums`` and stops as the real one does once asked."""
    def replay(*_args: object, run: ReplayRun, stop_requested: Callable[[], bool],
               **_kwargs: object) -> ReplayRun:
        assert not stop_requested()
        for signum in signums:
            os.kill(os.getpid(), signum)
            deadline = time.monotonic() + 5
            while not stop_requested() and time.monotonic() < deadline:
                time.sleep(0.01)  # the handler runs between two bytecodes of this thread
        assert stop_requested()
        run.tally.examined, run.tally.replayed = 4, 3
        run.offsets, run.outcome = {0: [0, 3]}, "interrupted"
        return run
    return replay


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_replay_which_reports_it_and_exits_128_plus_the_signal(
    monkeypatch: pytest.MonkeyPatch, signum: int, code: int,
) -> None:
    """SIGTERM or SIGINT asks replay() to stop; the command prints the summary (outcome
    interrupted, human and --json), exits 128 + the signal number and restores the handlers.
    SIGINT works even where the shell ignored it (a background job of a script)."""
    monkeypatch.setattr("consumer.cli.dlq.replay", _stopped_by_signal(signum))
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = CliRunner().invoke(main, ["dlq", "replay", "--json"])
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        human = CliRunner().invoke(main, ["dlq", "replay"])
    finally:
        signal.signal(signal.SIGINT, ignored)
    assert {s: signal.getsignal(s) for s in before} == before
    name = signal.Signals(signum).name
    assert result.exit_code == code, result.output
    document = json.loads(result.stdout)
    assert (document["outcome"], document["stopped_by"]) == ("interrupted", name)
    assert (document["counts"]["examined"], document["counts"]["replayed"]) == (4, 3)
    assert f"{name} received, stopping after the record in progress" in result.stderr
    assert f"interrupted after 3 record(s) replayed and committed ({name})" in result.stderr
    assert human.exit_code == code, human.output
    assert f"interrupted ({name}): replayed 3 record(s)" in human.stdout


def test_a_second_signal_stops_the_replay_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second signal raises KeyboardInterrupt inside replay(); the exit code is still
    that of the first signal."""
    def replay(*args: object, run: ReplayRun, stop_requested: Callable[[], bool],
               **kwargs: object) -> ReplayRun:
        _stopped_by_signal(signal.SIGTERM)(*args, run=run, stop_requested=stop_requested,
                                           **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # interrupted by the handler's KeyboardInterrupt
        raise AssertionError("the second signal did not interrupt the replay")

    monkeypatch.setattr("consumer.cli.dlq.replay", replay)
    result = CliRunner().invoke(main, ["dlq", "replay", "--json"])
    assert result.exit_code == 143, result.output
    assert "SIGINT received again: stopping at once" in result.stderr
    assert json.loads(result.stdout)["outcome"] == "interrupted"


def test_a_signal_while_the_last_spans_are_exported_keeps_the_summary_and_exit_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no collector answering, exporting the replay's spans holds the exit up to 3 s;
    an operator's second Ctrl-C meanwhile gives up on the spans, not on the summary."""
    exported: list[str] = []

    def interrupted_export(*_providers: object, **_kwargs: object) -> None:
        exported.append("asked")
        raise KeyboardInterrupt

    monkeypatch.setattr("consumer.cli.dlq.replay", _stopped_by_signal(signal.SIGINT))
    monkeypatch.setattr("consumer.cli.dlq.shutdown_providers", interrupted_export)
    result = CliRunner().invoke(main, ["dlq", "replay", "--json"])
    assert exported == ["asked"]
    assert result.exit_code == 130, result.output
    assert json.loads(result.stdout)["outcome"] == "interrupted"


@pytest.mark.parametrize("args", [("list", "--json"), ("show",), ("replay", "--dry-run"),
                                  ("replay", "--json"), ("discard", "--all", "--reason", "r")])
def test_an_unreachable_broker_is_one_clear_line_and_exit_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...],
) -> None:
    """No raw KafkaError and no flood of client log lines; --json gets an error document."""
    monkeypatch.setattr("consumer.kafka.dlq_io.TIMEOUT_S", 1.0)  # the real 30 s, shortened
    config = _unreachable_config(tmp_path)
    result = CliRunner().invoke(main, ["dlq", args[0], "--config", str(config), *args[1:]])
    assert result.exit_code == 4, result.output
    expected = ("cannot reach Kafka at 127.0.0.1:1 to read clinic.events.dlq: "
                "Failed to get metadata: Local: Broker transport failure (waited 1 s)")
    assert f"clinic-events: dlq: {expected}\n" in result.stderr
    assert "KafkaError{" not in result.stderr
    assert len(result.stderr.splitlines()) <= 3  # first client line, its count, the error
    if "--json" in args:
        assert json.loads(result.stdout) == {"error": expected}
    else:
        assert result.stdout == ""


@pytest.mark.parametrize(("dry_run", "note"), [
    ((), "5 matching record(s) stay open: discard them (dlq discard --reason ...) or, once "
         "the cause is fixed, replay them with --force"),
    (("--dry-run",), "5 matching record(s) would stay open: discard them (dlq discard "
                     "--reason ...) or, once the cause is fixed, replay them with --force"),
], ids=["replay", "dry-run"])
def test_a_replay_says_what_to_do_about_the_records_it_left_open(
    monkeypatch: pytest.MonkeyPatch, dry_run: tuple[str, ...], note: str,
) -> None:
    def replay(*_args: object, run: ReplayRun, **_kwargs: object) -> ReplayRun:
        run.tally.examined, run.tally.not_matching, run.tally.replayed = 20, 12, 3
        run.tally.already_resolved, run.tally.skipped = 0, {"already-delivered": 5}
        return run

    monkeypatch.setattr("consumer.cli.dlq.replay", replay)
    args = ["dlq", "replay", "--event-type", "appointment.cancelled", *dry_run]
    human = CliRunner(env={"COLUMNS": "300"}).invoke(main, args)
    assert human.exit_code == 0, human.output
    assert note in human.stdout
    assert "already resolved: 0; examined 20 (12 not matching)" in human.stdout
    assert "passed over" not in human.stdout  # a filtered replay passes over nothing
    document = json.loads(CliRunner().invoke(main, [*args, "--json"]).stdout)
    assert document["left_open_note"] == note
    assert document["counts"] == {"examined": 20, "not_matching": 12, "already_resolved": 0,
                                  "replayed": 3, "parked_followers": 0,
                                  "skipped": {"already-delivered": 5}}


def test_a_replay_that_left_nothing_open_has_no_note(monkeypatch: pytest.MonkeyPatch) -> None:
    def replay(*_args: object, run: ReplayRun, **_kwargs: object) -> ReplayRun:
        run.tally.examined = run.tally.replayed = 3
        return run

    monkeypatch.setattr("consumer.cli.dlq.replay", replay)
    human = CliRunner().invoke(main, ["dlq", "replay"])
    assert "stay open" not in human.stdout
    assert json.loads(CliRunner().invoke(main, ["dlq", "replay", "--json"]).stdout)[
        "left_open_note"] is None


def test_a_replay_prints_its_notes(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a replay could not check (a dedup store missing here) is said, not hidden."""
    def replay(*_args: object, run: ReplayRun, **_kwargs: object) -> ReplayRun:
        run.tally.examined = run.tally.replayed = 1
        run.notes.append("dedup.store 'sqlite:///x.sqlite3': no store at /elsewhere/x.sqlite3")
        return run

    monkeypatch.setattr("consumer.cli.dlq.replay", replay)
    human = CliRunner(env={"COLUMNS": "300"}).invoke(main, ["dlq", "replay", "--dry-run"])
    assert "note: dedup.store 'sqlite:///x.sqlite3': no store at /elsewhere" in human.stdout
    document = json.loads(CliRunner().invoke(main, ["dlq", "replay", "--json"]).stdout)
    assert document["notes"] == [
        "dedup.store 'sqlite:///x.sqlite3': no store at /elsewhere/x.sqlite3"]


def test_a_dry_run_shows_a_dash_for_an_event_id_an_undecodable_record_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = RecordHeaders(event_id=None, event_type=None, error_class="undecodable",
                            dlq_reason="undecodable")
    record = parse_dlq_record(partition=0, offset=3, timestamp_ms=None, key=None,
                              value=b"not avro", headers=encode_headers(headers),
                              codec=EventCodec())

    def replay(*_args: object, run: ReplayRun, on_record: Callable[..., None],
               **_kwargs: object) -> ReplayRun:
        on_record(record, Replay(topic="clinic.events", key=None, value=record.value,
                                 headers=[]))
        run.tally.examined = run.tally.replayed = 1
        return run

    monkeypatch.setattr("consumer.cli.dlq.replay", replay)
    human = CliRunner(env={"COLUMNS": "300"}).invoke(main, ["dlq", "replay", "--dry-run"])
    assert human.exit_code == 0, human.output
    row = next(line for line in human.stdout.splitlines() if "replay -> clinic.events" in line)
    assert "None" not in row
    assert re.search(r"│ 0 +│ 3 +│ - +│ \(undecodable\) +│ undecodable", row), row


def test_a_dedup_store_that_fails_a_replay_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failure = "dedup store redis://cache:6379/0: Timeout reading from cache:6379"

    def replay(*_args: object, **_kwargs: object) -> ReplayRun:
        raise DedupStoreError(failure)

    monkeypatch.setattr("consumer.cli.dlq.replay", replay)
    human = CliRunner().invoke(main, ["dlq", "replay"])
    assert human.exit_code == 1
    assert human.stderr == f"clinic-events: dlq: {failure}\n"
    scripted = CliRunner().invoke(main, ["dlq", "replay", "--json"])
    assert (scripted.exit_code, json.loads(scripted.stdout)) == (1, {"error": failure})


def test_discard_needs_a_reason() -> None:
    result = CliRunner().invoke(main, ["dlq", "discard", "--event-id", "evt-1"])
    assert result.exit_code == 2, result.output
    assert "Missing option '--reason'" in result.stderr


@pytest.mark.parametrize("reason", ["", "   "])
def test_discard_needs_a_reason_that_says_something(reason: str) -> None:
    result = CliRunner().invoke(main, ["dlq", "discard", "--event-id", "e", "--reason", reason])
    assert result.exit_code == 2, result.output
    assert "--reason must say why" in result.stderr


def test_discard_without_a_filter_needs_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """Discarding the whole DLQ is never what a missing filter meant."""
    asked: list[DiscardRequest] = []

    def discard(_settings: object, request: DiscardRequest, *, run: ReplayRun,
                **_kwargs: object) -> ReplayRun:
        asked.append(request)
        run.tally.examined = run.tally.discarded = 2
        return run

    monkeypatch.setattr("consumer.cli.dlq.discard", discard)
    refused = CliRunner().invoke(main, ["dlq", "discard", "--reason", "test data"])
    assert refused.exit_code == 2, refused.output
    assert "discard needs a filter" in refused.stderr
    assert asked == []
    everything = CliRunner().invoke(main, ["dlq", "discard", "--reason", "test data", "--all",
                                           "--actor", "INC-7", "--json"])
    assert everything.exit_code == 0, everything.output
    document = json.loads(everything.stdout)
    assert (document["action"], document["reason"]) == ("discard", "test data")
    assert document["counts"] == {"examined": 2, "not_matching": 0, "already_resolved": 0,
                                  "discarded": 2}
    ((request),) = asked
    assert (request.reason, request.actor, request.filter.describe()) == (
        "test data", "INC-7", {})


def test_an_interrupted_discard_says_how_many_it_discarded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def discard(*_args: object, run: ReplayRun, **_kwargs: object) -> ReplayRun:
        run.tally.examined, run.tally.discarded = 4, 2
        raise KeyboardInterrupt

    monkeypatch.setattr("consumer.cli.dlq.discard", discard)
    result = CliRunner().invoke(main, ["dlq", "discard", "--reason", "r", "--event-id", "e"])
    assert result.exit_code == 130
    assert "dlq discard interrupted after 2 record(s) discarded and committed" in result.stderr
    assert "interrupted (SIGINT): discarded 2 record(s)" in result.stdout


def test_show_writes_no_control_character_and_shows_an_odd_key_as_hex(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key that is not UTF-8 and header text holding NUL, ESC and rich markup: the table
    shows the key as marked hex and escapes the controls (markup stays literal text);
    --json carries the exact key bytes."""
    headers = RecordHeaders(
        event_id="evt-1", event_type=None, error_class="consumer.errors.\x1b[2JPermanentError",
        error_message="HTTP 422 \x00[/bold] \x1b[31mred\nsecond line", dlq_reason="undecodable")
    record = parse_dlq_record(partition=0, offset=7, timestamp_ms=None,
                              key=b"\x00garbage-key\xff", value=b"\x1b[31mnot avro\x00",
                              headers=encode_headers(headers), codec=EventCodec())

    def scan(*_args: object) -> Iterator[DlqRecord]:
        yield record

    monkeypatch.setattr("consumer.cli.dlq.scan", scan)
    table = CliRunner().invoke(main, ["dlq", "show", "--reveal"])
    assert table.exit_code == 0, table.output
    assert not [char for char in table.stdout if not char.isprintable() and char != "\n"]
    assert "hex 00676172626167652d6b6579ff (not printable UTF-8)" in table.stdout
    assert "HTTP 422 \\x00[/bold] \\x1b[31mred\\nsecond line" in table.stdout
    assert "consumer.errors.\\x1b[2JPermanentError" in table.stdout
    listed = CliRunner().invoke(main, ["dlq", "list"])
    assert listed.exit_code == 0, listed.output
    assert "consumer.errors.\\x1b[2JPermanentError" in listed.stdout
    document = json.loads(CliRunner().invoke(main, ["dlq", "show", "--json"]).stdout)
    (view,) = document["records"]
    assert (view["key"], view["key_hex"]) == (None, "00676172626167652d6b6579ff")
    assert view["error_message"] == "HTTP 422 \x00[/bold] \x1b[31mred\nsecond line"


def _parked_dlq(monkeypatch: pytest.MonkeyPatch, followers: int,
                head_discarded: bool = False) -> None:
    """A DLQ holding one failed head and ``followers`` events parked behind it."""
    def dead(offset: int, event_id: str, behind: str | None) -> DlqRecord:
        headers = RecordHeaders(event_id=event_id, event_type="appointment.rescheduled",
                                error_class=None if behind else "http.422",
                                dlq_reason="parked" if behind else "permanent",
                                parked_behind=behind)
        discarded = head_discarded and behind is None
        return parse_dlq_record(partition=0, offset=offset, timestamp_ms=None, key=b"appt-1",
                                value=b"opaque", headers=encode_headers(headers),
                                codec=EventCodec(),
                                resolution=Resolution(status="discarded", reason="wrong clinic")
                                if discarded else None)

    records = [dead(0, "evt-head", None),
               *(dead(i, f"evt-f{i}", "evt-head") for i in range(1, followers + 1))]

    def scan(*_args: object) -> Iterator[DlqRecord]:
        yield from records

    monkeypatch.setattr("consumer.cli.dlq.scan", scan)


def test_list_groups_parked_dead_letters_and_names_their_heads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _parked_dlq(monkeypatch, followers=2)
    listed = CliRunner(env={"COLUMNS": "300"}).invoke(main, ["dlq", "list"])
    assert listed.exit_code == 0, listed.output
    (row,) = [line for line in listed.stdout.splitlines() if "parked (behind" in line]
    assert "parked (behind 1 head)" in row
    assert " 2 " in row
    assert "parked: dead letters waiting behind 1 held event(s): evt-head;" in listed.stdout
    groups = json.loads(CliRunner().invoke(main, ["dlq", "list", "--json"]).stdout)["groups"]
    assert [(g["error_class"], g["count"], g["parked_behind"]) for g in groups] == [
        ("(parked)", 2, ["evt-head"]), ("http.422", 1, [])]


def test_list_says_when_the_head_parked_dead_letters_name_was_discarded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the head is discarded its first follower is the key's head: telling the operator
    the followers wait behind a held event sends them looking for one that is gone."""
    _parked_dlq(monkeypatch, followers=2, head_discarded=True)
    listed = CliRunner(env={"COLUMNS": "300"}).invoke(main, ["dlq", "list"])
    assert listed.exit_code == 0, listed.output
    assert "held event" not in listed.stdout
    assert ("parked: dead letters behind 1 discarded event(s): evt-head; the first follower "
            "of each is its key's head now: replay or discard them (--error-class parked)"
            ) in listed.stdout
    document = json.loads(CliRunner().invoke(main, ["dlq", "list", "--json"]).stdout)
    assert document["discarded_heads"] == ["evt-head"]
    assert [g["parked_behind"] for g in document["groups"]] == [["evt-head"]]


def test_show_says_what_a_parked_record_waits_behind_and_where_it_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _parked_dlq(monkeypatch, followers=28)
    shown = CliRunner(env={"COLUMNS": "300"}).invoke(main, ["dlq", "show"])
    assert shown.exit_code == 0, shown.output
    assert "parked behind  evt-head (waits for that event" in shown.stdout
    assert ("showing 20 of 29 matching open records in clinic.events.dlq; --limit 29 shows "
            "them all") in shown.stdout
    document = json.loads(CliRunner().invoke(main, ["dlq", "show", "--json"]).stdout)
    assert (document["total"], document["shown"], len(document["records"])) == (29, 20, 20)
    assert [r["parked_behind"] for r in document["records"][:2]] == [None, "evt-head"]
    everything = CliRunner().invoke(main, ["dlq", "show", "--limit", "29"])
    assert "showing" not in everything.stdout


def test_a_replay_says_how_many_parked_followers_it_took_along(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def replay(*_args: object, run: ReplayRun, **_kwargs: object) -> ReplayRun:
        run.tally.examined, run.tally.replayed, run.tally.parked_followers = 5, 3, 2
        return run

    monkeypatch.setattr("consumer.cli.dlq.replay", replay)
    human = CliRunner(env={"COLUMNS": "300"}).invoke(
        main, ["dlq", "replay", "--error-class", "http.422"])
    assert "replayed 3 record(s) (2 of them parked behind a replayed event); " in human.stdout


@pytest.mark.parametrize(("subcommand", "codes"), [
    ("list", ("0 done", "1 failed", "2 invalid", "4 Kafka could not be reached")),
    ("show", ("0 done", "1 failed", "2 invalid", "4 Kafka could not be reached")),
    ("replay", ("0 done", "1 failed", "2 invalid options (--to a missing topic",
                "4 Kafka could not be reached", "130 interrupted by SIGINT", "143 by SIGTERM")),
    ("discard", ("0 done", "1 failed", "2 invalid options (no --reason",
                 "4 Kafka could not be reached", "130 interrupted by SIGINT", "143 by SIGTERM")),
])
def test_help_lists_every_exit_code(subcommand: str, codes: tuple[str, ...]) -> None:
    result = CliRunner(env={"COLUMNS": "1000"}).invoke(main, ["dlq", subcommand, "--help"])
    text = " ".join(result.stdout.split())
    assert [code for code in codes if code not in text] == []
