"""The embedded dedup store: an append-only SQLite log with an in-memory index.

Why a log and not a table keyed by event id: event ids are random, so every recorded outcome
lands on a different B-tree page, and a WAL commit writes each touched page whole. Measured
here, that cost ~20 us per event even with 500 events per transaction, about twice the
framework's whole per-event budget. Here one write is one appended row holding the ids of a
whole batch (a JSON array), so a commit touches a page or two whatever the batch size, and
lookups never touch SQLite at all: they read an in-memory index of every unexpired outcome,
loaded from the log when the store opens and updated after each commit.

Consequences, by design:

* **One writer process per file.** The index is this process's view, so the store takes an
  exclusive lock (``<file>.lock``) for as long as it is open; a second consumer pointed at
  the same file is refused with a clear error (several instances share Redis instead).
  ``read_only`` stores (``dlq replay`` checking outcomes) load a snapshot and take no lock.
* **Rules are applied when writing**, so loading replays the log in order, last row wins:
  ``dead_lettered`` is not appended for an id with a live ``delivered``; ``forget`` appends a
  ``forgotten`` row. Row times never go backwards (a wall clock step back is clamped), so
  purging by time removes a prefix of the log and cannot resurrect a forgotten outcome.
* **Memory**: about 150 bytes per remembered event (the id string and one dict slot; every
  id of a batch shares one outcome tuple), e.g. ~100 MB for 700,000 events within ``ttl``.
* **Durability** is that of the commit: WAL with ``synchronous=NORMAL``; a commit survives a
  process crash. On power loss the last commits may roll back, which cannot cause a
  redelivery by itself (their offsets reached Kafka only afterwards), and a re-published
  copy is still caught downstream by its ``Idempotency-Key``.

A file written by the earlier table layout (``dedup``, one row per event) is migrated into
the log when a writer opens it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Literal

from consumer.dedup_rules import OUTCOMES, Outcome, check_outcomes, check_ttl
from consumer.errors import ConfigError
from retry_topics.clock import Clock, SystemClock

__all__ = ["SqliteDedupStore"]

LogOutcome = Literal["delivered", "dead_lettered", "forgotten"]
PURGE_INTERVAL_MS = 10 * 60_000  # expired rows and index entries are dropped this often

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dedup_log (
    seq INTEGER PRIMARY KEY,
    recorded_at_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    event_ids TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dedup_log_recorded_at ON dedup_log (recorded_at_ms);
"""
_APPEND = "INSERT INTO dedup_log (recorded_at_ms, outcome, event_ids) VALUES (?, ?, ?)"
_LEGACY_TABLE = "dedup"  # the one-row-per-event layout of earlier versions


class SqliteDedupStore:
    """Outcomes in one SQLite file, looked up in memory; safe to share between threads.

    Lookups read the index without taking the lock: a dict read is atomic under the GIL,
    and an id enters the index only after its row is committed.
    """

    def __init__(self, path: Path, ttl_ms: int, clock: Clock | None = None, *,
                 read_only: bool = False) -> None:
        check_ttl(ttl_ms)
        self._clock: Clock = clock or SystemClock()
        self._ttl_ms = ttl_ms
        self._read_only = read_only
        self._lock = threading.Lock()
        self._index: dict[str, tuple[Outcome, int]] = {}
        self._last_at_ms = 0
        self._purged_at_ms = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_lock = None if read_only else _take_writer_lock(path)
        try:
            self._conn = sqlite3.connect(path, timeout=10.0, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error:
            self._release_writer_lock()
            raise
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            if not read_only:
                self._migrate_legacy_table()
            self._load()
        except sqlite3.Error:
            self.close()
            raise

    # -- reading ---------------------------------------------------------------------------

    def lookup(self, event_ids: Sequence[str]) -> dict[str, Outcome]:
        cutoff = self._clock.now_ms() - self._ttl_ms
        index = self._index
        found: dict[str, Outcome] = {}
        for event_id in event_ids:
            entry = index.get(event_id)
            if entry is not None and entry[1] > cutoff:
                found[event_id] = entry[0]
        return found

    def _load(self) -> None:
        """Replay the unexpired log into the index, oldest row first (last row wins)."""
        cutoff = self._clock.now_ms() - self._ttl_ms
        rows = self._conn.execute(
            "SELECT recorded_at_ms, outcome, event_ids FROM dedup_log "
            "WHERE recorded_at_ms > ? ORDER BY seq", (cutoff,))
        for recorded_at_ms, outcome, event_ids in rows:
            self._apply(outcome, json.loads(event_ids), int(recorded_at_ms))
        (last,) = self._conn.execute("SELECT COALESCE(MAX(recorded_at_ms), 0) FROM dedup_log"
                                     ).fetchone()
        self._last_at_ms = int(last)

    def _apply(self, outcome: LogOutcome, event_ids: Iterable[str], at_ms: int) -> None:
        if outcome == "forgotten":
            for event_id in event_ids:
                self._index.pop(event_id, None)
            return
        entry = (outcome, at_ms)  # shared by the whole row: one tuple, not one per id
        self._index.update(dict.fromkeys(event_ids, entry))

    # -- writing ---------------------------------------------------------------------------

    def record(self, event_id: str, outcome: Outcome) -> None:
        self.record_many([(event_id, outcome)])

    def record_many(self, items: Sequence[tuple[str, Outcome]]) -> None:
        check_outcomes(items)
        if not items:
            return
        self._check_writable()
        delivered: dict[str, None] = {}  # ordered sets: one pass over items, no duplicates
        dead_lettered: dict[str, None] = {}
        for event_id, outcome in items:
            if outcome == "delivered":
                delivered[event_id] = None
            else:
                dead_lettered[event_id] = None
        with self._lock:
            now_ms = self._next_time()
            cutoff = now_ms - self._ttl_ms
            dead = [eid for eid in dead_lettered
                    if eid not in delivered and not self._live_delivered(eid, cutoff)]
            rows = [(now_ms, outcome, json.dumps(ids)) for outcome, ids
                    in (("delivered", list(delivered)), ("dead_lettered", dead)) if ids]
            if not rows:
                return
            self._write(rows, now_ms)
            self._apply("delivered", delivered, now_ms)
            self._apply("dead_lettered", dead, now_ms)

    def forget(self, event_id: str) -> None:
        self._check_writable()
        with self._lock:
            now_ms = self._next_time()
            self._write([(now_ms, "forgotten", json.dumps([event_id]))], now_ms)
            self._apply("forgotten", [event_id], now_ms)

    def _live_delivered(self, event_id: str, cutoff: int) -> bool:
        entry = self._index.get(event_id)
        return entry is not None and entry[0] == "delivered" and entry[1] > cutoff

    def _next_time(self) -> int:
        """Now, but never earlier than the last row: the log's times only go forward."""
        self._last_at_ms = max(self._last_at_ms, self._clock.now_ms())
        return self._last_at_ms

    def _write(self, rows: list[tuple[int, str, str]], now_ms: int) -> None:
        purge = now_ms - self._purged_at_ms >= PURGE_INTERVAL_MS
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(_APPEND, rows)
            if purge:
                self._conn.execute("DELETE FROM dedup_log WHERE recorded_at_ms <= ?",
                                   (now_ms - self._ttl_ms,))
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        if purge:
            self._purged_at_ms = now_ms
            cutoff = now_ms - self._ttl_ms
            self._index = {eid: entry for eid, entry in self._index.items() if entry[1] > cutoff}

    def _check_writable(self) -> None:
        if self._read_only:
            raise PermissionError("this dedup store was opened read-only")

    def _migrate_legacy_table(self) -> None:
        """Move rows of the earlier one-row-per-event table into the log, then drop it."""
        exists = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_LEGACY_TABLE,)
        ).fetchone()
        if exists is None:
            return
        cutoff = self._clock.now_ms() - self._ttl_ms
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute(
                f"INSERT INTO dedup_log (recorded_at_ms, outcome, event_ids) "  # noqa: S608
                f"SELECT recorded_at_ms, outcome, json_array(event_id) FROM {_LEGACY_TABLE} "
                f"WHERE recorded_at_ms > ? AND outcome IN ({','.join('?' * len(OUTCOMES))}) "
                f"ORDER BY recorded_at_ms", (cutoff, *OUTCOMES))
            self._conn.execute(f"DROP TABLE {_LEGACY_TABLE}")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._index = {}
            self._release_writer_lock()

    def _release_writer_lock(self) -> None:
        if self._writer_lock is not None:
            self._writer_lock.close()  # closing the file releases the flock
            self._writer_lock = None


def _take_writer_lock(path: Path) -> IO[str]:
    """Hold ``<path>.lock`` exclusively, or refuse: the index is one process's view."""
    lock_path = path.with_name(path.name + ".lock")
    handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held while open
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(
            f"dedup.store {path} is in use by {holder}; a SQLite dedup store serves one "
            "consumer process: stop the other one, or share a redis:// store between "
            "instances") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle
