"""The SQLite dedup store's own promises: a durable log that several processes share."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from consumer.dedup.sqlite import (
    LOOKUP_CATCH_UP_MS,
    PURGE_INTERVAL_MS,
    SqliteDedupStore,
    decode_ids,
    encode_ids,
)
from consumer.dedup.store import DedupStoreMissing, Outcome, open_dedup_store
from retry_topics.clock import ManualClock

TTL_MS = 60 * 60_000


class WallClockSteppingBack:
    """A wall clock an NTP correction can move backwards (ManualClock cannot)."""

    def __init__(self, wall_ms: int) -> None:
        self.wall_ms = wall_ms

    def now_ms(self) -> int:
        return self.wall_ms

    def monotonic(self) -> float:
        return 0.0

    def sleep(self, seconds: float) -> None:
        """Never called by the store."""


def _log_rows(path: Path) -> list[tuple[int, str, list[str]]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT recorded_at_ms, outcome, event_ids FROM dedup_log "
                            "ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [(int(at), str(outcome), decode_ids(ids)) for at, outcome, ids in rows]


def test_outcomes_and_their_rules_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite3"
    clock = ManualClock()
    first = SqliteDedupStore(path, TTL_MS, clock)
    first.record_many([("a", "delivered"), ("b", "dead_lettered"), ("c", "delivered")])
    first.record("a", "dead_lettered")  # refused: a is delivered
    first.record("b", "delivered")  # replayed and delivered
    first.forget("c")
    first.close()
    second = SqliteDedupStore(path, TTL_MS, clock)
    try:
        assert second.lookup(["a", "b", "c"]) == {"a": "delivered", "b": "delivered"}
    finally:
        second.close()


def test_one_row_per_outcome_per_write_whatever_the_batch_size(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite3"
    store = SqliteDedupStore(path, TTL_MS, ManualClock())
    try:
        ids = [f"evt-{n}" for n in range(500)]
        store.record_many([(event_id, "delivered") for event_id in ids])
        store.record_many([("x", "dead_lettered"), ("y", "dead_lettered")])
    finally:
        store.close()
    assert [(outcome, len(ids)) for _, outcome, ids in _log_rows(path)] == [
        ("delivered", 500), ("dead_lettered", 2)]


def test_any_event_id_round_trips_through_the_log(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite3"
    odd = ['with "quotes"', "new\nline", "nul\x00byte", "ünï©ødé", "comma,]["]
    store = SqliteDedupStore(path, TTL_MS, ManualClock())
    store.record_many([(event_id, "delivered") for event_id in odd])
    store.close()
    reopened = SqliteDedupStore(path, TTL_MS, ManualClock())
    try:
        assert reopened.lookup(odd) == dict.fromkeys(odd, "delivered")
    finally:
        reopened.close()


@pytest.mark.parametrize("ids", [
    ["a"], ["", "b", ""], ["[1]", "x"], ['"q"', "new\nline"], ["unit\x1fseparator", "y"],
    ["\x1fled"],
])
def test_row_text_round_trips_any_ids(ids: list[str]) -> None:
    assert decode_ids(encode_ids(ids)) == ids


def test_rows_are_joined_text_unless_an_id_holds_the_separator() -> None:
    assert encode_ids(["a", "b"]) == "\x1fa\x1fb"
    assert json.loads(encode_ids(["a\x1f", "b"])) == ["a\x1f", "b"]


def test_json_rows_of_earlier_versions_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite3"
    SqliteDedupStore(path, TTL_MS, ManualClock()).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO dedup_log (recorded_at_ms, outcome, event_ids) VALUES (?, ?, ?)",
                 (ManualClock().now_ms(), "delivered", json.dumps(["old-1", "old-2"])))
    conn.commit()
    conn.close()
    store = SqliteDedupStore(path, TTL_MS, ManualClock())
    try:
        assert store.lookup(["old-1", "old-2", "new"]) == {"old-1": "delivered",
                                                            "old-2": "delivered"}
    finally:
        store.close()


def test_a_row_that_is_not_ids_is_an_error_not_an_empty_row() -> None:
    with pytest.raises(ValueError, match="neither joined ids nor a JSON array"):
        decode_ids('{"a": 1}')


def test_uses_wal_with_normal_sync(tmp_path: Path) -> None:
    store = SqliteDedupStore(tmp_path / "dedup.sqlite3", TTL_MS, ManualClock())
    try:
        conn = store._conn  # inspecting the pragmas this store promises
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL (module doc)
    finally:
        store.close()


def test_expired_rows_are_purged_and_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite3"
    clock = ManualClock()
    ttl_ms = PURGE_INTERVAL_MS
    store = SqliteDedupStore(path, ttl_ms, clock)
    store.record("old", "delivered")  # the first write purges (nothing yet)
    clock.advance(ttl_ms)
    store.record("new", "delivered")  # a purge interval later: "old" has expired
    store.close()
    assert [ids for _, _, ids in _log_rows(path)] == [["new"]]
    reopened = SqliteDedupStore(path, ttl_ms, clock)
    try:
        assert reopened.lookup(["old", "new"]) == {"new": "delivered"}
    finally:
        reopened.close()


def test_row_times_never_go_backwards(tmp_path: Path) -> None:
    """A wall clock stepped back must not order a forget before the outcome it forgets."""
    path = tmp_path / "dedup.sqlite3"
    clock = WallClockSteppingBack(1_000_000)
    store = SqliteDedupStore(path, TTL_MS, clock)
    try:
        store.record("evt", "delivered")
        clock.wall_ms = 900_000
        store.forget("evt")
    finally:
        store.close()
    assert [at for at, _, _ in _log_rows(path)] == [1_000_000, 1_000_000]


def test_stores_sharing_a_file_see_each_others_outcomes_and_rules(tmp_path: Path) -> None:
    """Two consumer processes may share one file: each index follows the other's rows.

    Writes catch up at once (so the rules see every row); lookups within
    ``LOOKUP_CATCH_UP_MS``; a store's own outcomes are in its index as soon as written.
    """
    path = tmp_path / "dedup.sqlite3"
    clock = ManualClock()
    first = SqliteDedupStore(path, TTL_MS, clock)
    second = SqliteDedupStore(path, TTL_MS, clock)
    try:
        first.record_many([("a", "delivered"), ("b", "dead_lettered")])
        assert first.lookup(["a", "b"]) == {"a": "delivered", "b": "dead_lettered"}
        clock.advance(LOOKUP_CATCH_UP_MS)
        assert second.lookup(["a", "b"]) == {"a": "delivered", "b": "dead_lettered"}
        second.record("a", "dead_lettered")  # refused: first delivered it
        second.record("b", "delivered")
        first.forget("a")
        clock.advance(LOOKUP_CATCH_UP_MS)
        assert first.lookup(["a", "b"]) == {"b": "delivered"}
        assert second.lookup(["a", "b"]) == {"b": "delivered"}
        first.record("c", "delivered")
        second.record("c", "dead_lettered")  # caught up inside the write: still refused
        clock.advance(LOOKUP_CATCH_UP_MS)
        assert first.lookup(["c"]) == second.lookup(["c"]) == {"c": "delivered"}
    finally:
        first.close()
        second.close()


def test_a_lookup_sees_another_stores_outcome_at_most_the_catch_up_interval_late(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dedup.sqlite3"
    clock = ManualClock()
    reader = SqliteDedupStore(path, TTL_MS, clock)
    writer = SqliteDedupStore(path, TTL_MS, clock)
    try:
        assert reader.lookup(["evt"]) == {}
        writer.record("evt", "delivered")
        clock.advance(LOOKUP_CATCH_UP_MS - 1)
        assert reader.lookup(["evt"]) == {}  # answered from the index
        clock.advance(1)
        assert reader.lookup(["evt"]) == {"evt": "delivered"}
    finally:
        reader.close()
        writer.close()


def test_a_lookup_never_waits_for_a_write_in_progress(tmp_path: Path) -> None:
    """Lanes look up every chunk, and a write holds the store's lock through its commit: a
    lookup waiting for it would hold every lane up behind each write. It answers from the
    index (caught up by the write itself) instead."""
    clock = ManualClock()
    store = SqliteDedupStore(tmp_path / "dedup.sqlite3", TTL_MS, clock)
    try:
        store.record("evt", "delivered")
        clock.advance(LOOKUP_CATCH_UP_MS)  # a catch-up is due
        answers: list[dict[str, Outcome]] = []
        with store._lock:  # a write in progress
            looking = threading.Thread(target=lambda: answers.append(store.lookup(["evt"])))
            looking.start()
            looking.join(5)
            assert answers == [{"evt": "delivered"}]
    finally:
        store.close()


def test_a_store_in_another_process_sees_outcomes_recorded_after_it_opened(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dedup.sqlite3"
    other = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, pathlib, time\n"
         "from consumer.dedup.sqlite import SqliteDedupStore\n"
         f"s = SqliteDedupStore(pathlib.Path({str(path)!r}), {TTL_MS})\n"
         "print('open', flush=True)\n"
         "sys.stdin.readline()\n"
         "deadline = time.monotonic() + 10\n"
         "while not s.lookup(['evt-1', 'evt-2']) and time.monotonic() < deadline:\n"
         "    time.sleep(0.01)\n"
         "print(sorted(s.lookup(['evt-1', 'evt-2']).items()), flush=True)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path.cwd())
    try:
        assert other.stdout is not None
        assert other.stdout.readline() == "open\n"
        store = SqliteDedupStore(path, TTL_MS)
        store.record("evt-1", "delivered")
        store.close()
        out, _ = other.communicate("go\n", timeout=30)
    finally:
        other.kill()
    assert out.strip() == "[('evt-1', 'delivered')]"


def test_read_only_stores_follow_the_writer_and_cannot_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dedup.sqlite3"
    clock = ManualClock()
    writer = SqliteDedupStore(path, TTL_MS, clock)
    try:
        writer.record("evt-1", "delivered")
        reader = open_dedup_store(f"sqlite:///{path}", TTL_MS, clock, read_only=True)
        try:
            assert reader.lookup(["evt-1"]) == {"evt-1": "delivered"}
            writer.record("evt-2", "dead_lettered")
            clock.advance(LOOKUP_CATCH_UP_MS)
            assert reader.lookup(["evt-2"]) == {"evt-2": "dead_lettered"}
            with pytest.raises(PermissionError, match="read-only"):
                reader.record("evt-2", "delivered")
        finally:
            reader.close()
    finally:
        writer.close()


def test_a_read_only_open_of_a_missing_store_creates_nothing_and_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """lag, dlq replay (--dry-run too) and the review page only look: a store that is not
    there is missing, never a new empty one (which would read as "nothing parked")."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DedupStoreMissing, match=re.escape(
            f"no store at {tmp_path}/nodir/x.sqlite3 (relative to the current folder)")):
        open_dedup_store("sqlite:///nodir/x.sqlite3", TTL_MS, read_only=True)
    with pytest.raises(DedupStoreMissing, match=f"no store at {tmp_path}/abs.sqlite3;"):
        open_dedup_store(f"sqlite:///{tmp_path}/abs.sqlite3", TTL_MS, read_only=True)
    with pytest.raises(DedupStoreMissing):  # a tool that writes but must not create either
        open_dedup_store(f"sqlite:///{tmp_path}/abs.sqlite3", TTL_MS, create=False)
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_handle_writes_no_schema(tmp_path: Path) -> None:
    """An existing file the consumer has not written yet (no tables) reads as empty, and
    stays as it was."""
    path = tmp_path / "dedup.sqlite3"
    sqlite3.connect(path).close()
    before = path.read_bytes()
    reader = SqliteDedupStore(path, TTL_MS, ManualClock(), read_only=True)
    try:
        assert reader.lookup(["evt-1"]) == {}
        assert reader.chains(["appt-1"]) == {}
        assert reader.parked_summary().keys == 0
    finally:
        reader.close()
    assert path.read_bytes() == before


def test_the_earlier_one_row_per_event_table_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite3"
    clock = ManualClock(start_ms=10 * TTL_MS)
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE dedup (event_id TEXT PRIMARY KEY, outcome TEXT NOT NULL,
                            recorded_at_ms INTEGER NOT NULL);
    """)
    now = clock.now_ms()
    conn.executemany("INSERT INTO dedup VALUES (?, ?, ?)", [
        ("kept", "delivered", now - 10), ("dead", "dead_lettered", now - 5),
        ("expired", "delivered", now - TTL_MS)])
    conn.commit()
    conn.close()
    store = SqliteDedupStore(path, TTL_MS, clock)
    try:
        assert store.lookup(["kept", "dead", "expired"]) == {
            "kept": "delivered", "dead": "dead_lettered"}
    finally:
        store.close()
    conn = sqlite3.connect(path)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert "dedup" not in tables
