"""How ``dlq replay`` and ``dlq discard`` decide, without a broker: the dedup store they
open, and which records a replay takes along (a scripted DLQ reader, no writer: a dry run,
or a writer that records what it is handed)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.config.settings import Settings, load_settings
from consumer.dedup.chains import entity_key
from consumer.dedup.store import DedupStoreMissing, MemoryDedupStore
from consumer.errors import DedupStoreError
from consumer.events.codec import EventCodec
from consumer.kafka.dlq_io import (
    DiscardRequest,
    ReplayRequest,
    ReplayRun,
    _chain_store,
    _committed,
    _examine,
    _outcome_store,
)
from consumer.ops.dlq.chains import ParkedFollowers
from consumer.ops.dlq.ledger import DlqLedger, Resolution
from consumer.ops.dlq.model import (
    AlreadyResolved,
    Decision,
    Discard,
    DlqFilter,
    DlqRecord,
    OffsetRange,
    Replay,
    Skip,
    parse_dlq_record,
)
from retry_topics.headers import RecordHeaders, encode_headers
from retry_topics.ordering import Link, LinkState

MAIN = "clinic.events"
CODEC = EventCodec()


def _settings(tmp_path: Path, store: str) -> Settings:
    path = tmp_path / "clinic-events.toml"
    path.write_text(f'[dedup]\nstore = "{store}"\n')
    return load_settings(path, env={})


def test_a_replay_without_the_store_checks_no_outcome_says_so_and_creates_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dlq replay (and --dry-run) from another folder: the relative store path names no
    file there. The replay goes on without the already-delivered check and says so, and
    leaves no empty store behind."""
    monkeypatch.chdir(tmp_path)
    run = ReplayRun()
    assert _outcome_store(_settings(tmp_path, "sqlite:///nodir/x.sqlite3"), run) is None
    (note,) = run.notes
    assert f"no store at {tmp_path}/nodir/x.sqlite3 (relative to the current folder)" in note
    assert "whether events were delivered already was not checked" in note
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clinic-events.toml"]


def test_a_discard_refuses_a_store_that_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A discard releases its records' chain links in the store; in a new, empty one that
    would leave the consumer's keys held, so it stops first (exit 2), creating nothing."""
    monkeypatch.chdir(tmp_path)
    request = DiscardRequest(dlq_topic=f"{MAIN}.dlq", ledger_topic=f"{MAIN}.dlq-ledger",
                             audit_topic=f"{MAIN}.audit", filter=DlqFilter(), reason="test")
    settings = _settings(tmp_path, "sqlite:///nodir/x.sqlite3")
    with pytest.raises(DedupStoreMissing, match="no store at"):
        _chain_store(settings, request, writer=object())  # type: ignore[arg-type]
    assert not (tmp_path / "nodir").exists()


# --- parked followers go with their head ----------------------------------------------------

def _dead(offset: int, event_id: str, key: bytes, *, error_class: str | None = "http.422",
          behind: str | None = None, replayed: bool = False, replays: int = 0,
          discarded: bool = False) -> DlqRecord:
    """A DLQ record: a head that failed (``error_class``) or a follower ``behind`` one."""
    headers = RecordHeaders(
        event_id=event_id, event_type="appointment.rescheduled", original_topic=MAIN,
        original_partition=0, original_offset=offset, error_class=None if behind else error_class,
        dlq_reason="parked" if behind else "permanent", parked_behind=behind,
        replay_count=replays or None)
    return parse_dlq_record(
        partition=0, offset=offset, timestamp_ms=None, key=key, value=b"opaque",
        headers=encode_headers(headers), codec=CODEC,
        resolution=Resolution(status="replayed", event_id=event_id) if replayed else
        Resolution(status="discarded", event_id=event_id) if discarded else None)


class ScriptedDlq:
    """The DLQ reader's part ``_examine`` uses: the records, in offset order, in chunks."""

    def __init__(self, *chunks: list[DlqRecord]) -> None:
        self.chunks = chunks

    def read(self, ranges: list[OffsetRange], ledger: DlqLedger,
             stop_requested: Callable[[], bool]) -> Iterator[list[DlqRecord]]:
        yield from self.chunks


class RecordingWriter:
    """The ledger writer's part ``_examine`` uses: what it is handed, in order."""

    def __init__(self) -> None:
        self.added: list[tuple[str | None, Replay]] = []

    def add(self, record: DlqRecord, decision: Replay, resolution: Resolution) -> None:
        self.added.append((record.event_id, decision))

    def due(self) -> bool:
        return False


def _replay(dlq: ScriptedDlq, writer: RecordingWriter | None = None,
            **filters: Any) -> tuple[ReplayRun, dict[str | None, Decision]]:
    request = ReplayRequest(dlq_topic=f"{MAIN}.dlq", ledger_topic=f"{MAIN}.dlq-ledger",
                            audit_topic=f"{MAIN}.audit", filter=DlqFilter(**filters),
                            dry_run=writer is None)
    run, decisions = ReplayRun(), {}

    def note(record: DlqRecord, decision: Decision) -> None:
        decisions[record.event_id] = decision

    _examine(request, dlq, [OffsetRange(0, 0, 99)], DlqLedger(), None,  # type: ignore[arg-type]
             writer, run, note, lambda: False)  # type: ignore[arg-type]
    return run, decisions


def test_a_filtered_replay_takes_the_heads_parked_followers_along_in_order() -> None:
    """dlq replay --error-class http.422 as docs/operations.md shows it: the head matches,
    its followers (no error class of their own) go right after it, in DLQ order; a
    follower of a head the run does not replay, and other records, stay."""
    dlq = ScriptedDlq(
        [_dead(0, "h1", b"appt-1"), _dead(1, "x", b"appt-2", error_class="http.503"),
         _dead(2, "f1", b"appt-1", behind="h1")],
        [_dead(3, "g1", b"appt-3", behind="h9"), _dead(4, "f2", b"appt-1", behind="h1")])
    writer = RecordingWriter()
    _, decisions = _replay(dlq, writer, error_classes=frozenset({"http.422"}))
    assert [(event_id, decision.follows) for event_id, decision in writer.added] == [
        ("h1", None), ("f1", "h1"), ("f2", "h1")]
    assert (decisions["x"], decisions["g1"]) == (None, None)
    dry_run, _ = _replay(dlq, error_classes=frozenset({"http.422"}))
    counts = dry_run.tally.as_dict()
    assert (counts["replayed"], counts["parked_followers"], counts["not_matching"]) == (3, 2, 2)


def test_followers_of_a_head_replayed_by_an_earlier_run_go_when_it_is_selected_again() -> None:
    """An earlier replay (interrupted, or an older version) replayed the head and left its
    followers open: selecting the head again takes them now."""
    dlq = ScriptedDlq([_dead(0, "h1", b"appt-1", replayed=True),
                       _dead(1, "f1", b"appt-1", behind="h1")])
    _, decisions = _replay(dlq, error_classes=frozenset({"http.422"}))
    assert isinstance(decisions["h1"], AlreadyResolved)
    follower = decisions["f1"]
    assert isinstance(follower, Replay)
    assert follower.follows == "h1"
    unselected, _ = _replay(dlq, event_ids=frozenset({"other"}))
    assert unselected.tally.replayed == 0


def test_a_head_left_open_takes_no_follower_along() -> None:
    """A head skipped (replayed too often) stays in the DLQ: its followers would only follow
    it back there, so they stay too, even behind an older, replayed copy of it."""
    dlq = ScriptedDlq([_dead(0, "h1", b"appt-1", replayed=True),
                       _dead(1, "h1", b"appt-1", replays=3),
                       _dead(2, "f1", b"appt-1", behind="h1")])
    run, decisions = _replay(dlq, error_classes=frozenset({"http.422"}))
    assert isinstance(decisions["h1"], Skip)
    assert decisions["f1"] is None
    assert run.tally.as_dict()["skipped"] == {"max-replays": 1}


def test_parked_followers_follow_only_open_records_behind_a_replayed_head() -> None:
    followers = ParkedFollowers()
    head, follower = _dead(0, "h1", b"k"), _dead(1, "f1", b"k", behind="h1")
    assert followers.head_of(follower) is None
    followers.note(head, Replay(topic=MAIN, key=b"k", value=None, headers=[]))
    assert followers.head_of(follower) == "h1"
    assert followers.head_of(_dead(2, "f2", b"k", behind="h1", replayed=True)) is None
    assert followers.head_of(head) is None  # a head is no follower


# --- a discard releases its records' keys -----------------------------------------------------

class CountingChains(MemoryDedupStore):
    """A memory store that counts its chain writes, and can fail them."""

    def __init__(self) -> None:
        super().__init__()
        self.leaves = 0
        self.failing = False

    def leave(self, key: str, event_id: str, state: LinkState | None = None) -> None:
        if self.failing:
            raise DedupStoreError("dedup store redis://ro:****@127.0.0.1:6379/0: no permissions")
        self.leaves += 1
        super().leave(key, event_id, state)


def _held(store: MemoryDedupStore, *event_ids: str) -> None:
    for event_id in event_ids:
        store.join(entity_key(b"appt-1"), Link(event_id=event_id, topic=f"{MAIN}.dlq",
                                               parked_at_ms=int(time.time() * 1000),
                                               state="dead_lettered"))


def _chain(store: MemoryDedupStore) -> list[str]:
    return [link.event_id for link in store.chains([entity_key(b"appt-1")]).get(
        entity_key(b"appt-1"), [])]


def _discard(dlq: ScriptedDlq, chains: MemoryDedupStore, run: ReplayRun | None = None,
             **filters: Any) -> RecordingWriter:
    request = DiscardRequest(dlq_topic=f"{MAIN}.dlq", ledger_topic=f"{MAIN}.dlq-ledger",
                             audit_topic=f"{MAIN}.audit", filter=DlqFilter(**filters),
                             reason="test")
    writer = RecordingWriter()
    _examine(request, dlq, [OffsetRange(0, 0, 99)], DlqLedger(), None,  # type: ignore[arg-type]
             writer, run or ReplayRun(), lambda _r, _d: None, lambda: False,  # type: ignore[arg-type]
             chains)
    return writer


def test_a_discard_run_again_releases_a_key_a_failed_store_write_left_held() -> None:
    """The ledger has h1 discarded, but the store write after that commit failed: h1 still
    heads its key's chain. The same discard run again (h1 already resolved) releases it."""
    store = CountingChains()
    _held(store, "h1", "f1")
    run = ReplayRun()
    writer = _discard(ScriptedDlq([_dead(0, "h1", b"appt-1", discarded=True)]), store, run)
    assert writer.added == []
    assert _chain(store) == ["f1"]
    assert run.notes == ["released the keys of 1 dead letter(s) discarded earlier, which still "
                         "held them (the dedup store had failed after their discard)"]


def test_any_later_discard_releases_it_whatever_it_selects() -> None:
    """The review page's discard of another record releases it too: staff there cannot run
    the same command again."""
    store = CountingChains()
    _held(store, "h1", "f1")
    dlq = ScriptedDlq([_dead(0, "h1", b"appt-1", discarded=True), _dead(1, "x", b"appt-2")])
    writer = _discard(dlq, store, event_ids=frozenset({"x"}))
    assert [event_id for event_id, _ in writer.added] == ["x"]
    assert _chain(store) == ["f1"]


def test_records_discarded_long_since_cost_no_store_write() -> None:
    store = CountingChains()
    run = ReplayRun()
    _discard(ScriptedDlq([_dead(n, f"old{n}", b"appt-1", discarded=True) for n in range(50)]),
             store, run)
    assert store.leaves == 0
    assert run.notes == []


def test_a_store_failure_after_a_discard_commits_says_what_is_committed_and_what_to_do() -> None:
    store = CountingChains()
    _held(store, "h1")
    store.failing = True

    class Committing:
        def commit(self) -> list[tuple[DlqRecord, Discard]]:
            return [(_dead(0, "h1", b"appt-1"), Discard(reason="test"))]

    with pytest.raises(DedupStoreError) as failed:
        _committed(ReplayRun(), Committing(), store)  # type: ignore[arg-type]
    assert str(failed.value) == (
        "dedup store redis://ro:****@127.0.0.1:6379/0: no permissions; the discard of 1 "
        "record(s) is committed, but their keys may still hold back their later events: the "
        "next dlq discard (on the command line or the review page) releases them once the "
        "store can be written")
