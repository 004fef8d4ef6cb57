"""The embedded dedup store: an append-only SQLite log with an in-memory index.

Why a log and not a table keyed by event id: event ids are random, so every recorded outcome
lands on a different B-tree page, and a WAL commit writes each touched page whole. Measured
here, that cost ~20 us per event even with 500 events per transaction, about twice the
framework's whole per-event budget. Here one write is one appended row holding the ids of a
whole batch (``encode_ids``), so a commit touches a few pages whatever the batch size, and
lookups are answered from an in-memory index of every unexpired outcome.

The index follows the log: it is loaded when the store opens, and inside every write
transaction the store applies the rows appended since it last looked; so do lookups, if the
index has not looked for ``LOOKUP_CATCH_UP_MS``. Whether anything was appended by another
connection is asked first (``PRAGMA data_version`` changes only on other connections'
commits). So several processes may share one file: each sees the others' outcomes, in its
writes at once and in its lookups at most ``LOOKUP_CATCH_UP_MS`` later, while its own
outcomes are in its index as soon as they are written.

Why lookups may lag: they come once per chunk (dozens per second per lane), and between
them decoding evicts SQLite's state from the CPU cache, so even the one-pragma check
measured ~75 us per lookup inside the pipeline (1.4-2.5 us per event). The lag adds nothing
new in kind: an outcome is already visible to other processes only once the pass that
delivered it is recorded (``outcome_buffer``), and a second copy inside that window is
caught downstream by its ``Idempotency-Key``. Writes never lag, so the rules (no
``dead_lettered`` over a live ``delivered``) always see every process's rows. A lookup
never waits for a write in progress either (a commit takes a millisecond or more, and every
lane looks up every chunk): it answers from the index, which that write catches up; a
catch-up due while another holder has the lock is made by the next lookup that finds it
free, so "at most ``LOOKUP_CATCH_UP_MS`` later" is that plus the moments the lock is held.

Consequences, by design:

* **Rules are applied when writing**, inside the write transaction with the index caught up,
  so replaying the log in order (last row wins) gives the same answers: ``dead_lettered`` is
  not appended for an id with a live ``delivered``; ``forget`` appends a ``forgotten`` row.
  Row times never go backwards (a wall clock stepped back is clamped to the newest row), so
  purging by time removes a prefix of the log and cannot resurrect a forgotten outcome.
* **Memory**: about 150 bytes per remembered event (the id string and one dict slot; every
  id of a row shares one outcome tuple), e.g. ~100 MB for 700,000 events within ``ttl``.
* **Durability** is that of the commit: WAL with ``synchronous=NORMAL``; a commit survives a
  process crash. On power loss the last commits may roll back, which cannot cause a
  redelivery by itself (their offsets reached Kafka only afterwards), and a re-published
  copy is still caught downstream by its ``Idempotency-Key``.

A file written by the earlier table layout (``dedup``, one row per event) is migrated into
the log when a writable store opens it.

**Chains** of parked keys (``consumer.dedup.chains``) live in their own small table, one row
per key with a chain, and in a mirror in memory. Unlike outcomes, a chain must be read as it
is now (an event examined a moment after another process parked one of its key must see
that), so ``chains`` asks ``PRAGMA data_version`` on every call and reloads the table when
another connection committed anything; with one process it never reloads.
``may_have_chains``, asked for every chunk, answers from the mirror, which
``refresh_chains`` brings up to date the same way: the pipeline calls it after every
consume, the path by which another process's chain can concern a record (it was made
before the record was produced, or before the partition changed hands). Asking the pragma
for every chunk would cost ~45 us of CPU per event with 16 lanes delivering over HTTP,
where a chunk is one record, under the lock the store's writes hold. Changes are read
and written inside one write transaction, from the table, so processes sharing the file
never lose each other's links. Keys with a chain are few (only those with an event in a
retry tier), so reloading them all is cheap.

**Read-only handles** (``lag``, the outcome look-ups of ``dlq replay``, the review page) open
an existing file only, with SQLite's ``mode=ro``: no folder, file, schema or migration is
ever created by a tool that only looks, so a relative path resolved in the wrong folder is
reported as a missing store instead of read as an empty one.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from consumer.dedup.chains import ParkedSummary, decode_chain, encode_chain, summarise
from consumer.dedup.rules import OUTCOMES, Outcome, check_outcomes, check_ttl, live_outcomes
from retry_topics.clock import Clock, SystemClock
from retry_topics.ordering import Link, LinkState, Position, confirmed, joined, left, live

__all__ = ["LOOKUP_CATCH_UP_MS", "PURGE_INTERVAL_MS", "SqliteDedupStore", "decode_ids",
           "encode_ids"]

LogOutcome = Literal["delivered", "dead_lettered", "forgotten"]
PURGE_INTERVAL_MS = 10 * 60_000  # expired rows and index entries are dropped this often
LOOKUP_CATCH_UP_MS = 50  # lookups see other processes' outcomes at most this late

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dedup_log (
    seq INTEGER PRIMARY KEY,
    recorded_at_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    event_ids TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dedup_log_recorded_at ON dedup_log (recorded_at_ms);
CREATE TABLE IF NOT EXISTS chains (
    entity TEXT PRIMARY KEY,
    links TEXT NOT NULL
);
"""
_APPEND = "INSERT INTO dedup_log (recorded_at_ms, outcome, event_ids) VALUES (?, ?, ?)"
_SINCE = ("SELECT seq, recorded_at_ms, outcome, event_ids FROM dedup_log "
          "WHERE seq > ? AND recorded_at_ms > ? ORDER BY seq")
_LEGACY_TABLE = "dedup"  # the one-row-per-event layout of earlier versions
_ID_SEPARATOR = "\x1f"  # ASCII unit separator


def encode_ids(event_ids: Sequence[str]) -> str:
    """One row's ids as text: separator-led and -joined, or a JSON array if an id holds one.

    Why not always JSON: ``json.dumps`` of 500 ids costs ~10 times a join, on every write.
    A joined row starts with the separator, which a JSON array never does, so ``decode_ids``
    tells them apart (rows written by earlier versions are JSON arrays).
    """
    joined = _ID_SEPARATOR.join(event_ids)
    if joined.count(_ID_SEPARATOR) != len(event_ids) - 1:
        return json.dumps(list(event_ids))
    return _ID_SEPARATOR + joined


def decode_ids(text: str) -> list[str]:
    """The ids of a row written by ``encode_ids`` (or an earlier version's JSON array)."""
    if text.startswith(_ID_SEPARATOR):
        return text[1:].split(_ID_SEPARATOR)
    ids = json.loads(text)
    if not isinstance(ids, list):
        raise ValueError(f"dedup log row is neither joined ids nor a JSON array: {text[:40]!r}")
    return [str(event_id) for event_id in ids]


class SqliteDedupStore:
    """Outcomes in one SQLite file, looked up in memory; safe to share between threads."""

    def __init__(self, path: Path, ttl_ms: int, clock: Clock | None = None, *,
                 read_only: bool = False, create: bool = True) -> None:
        """Open the store in ``path``, creating it (and its folder) if ``create``.

        ``read_only`` opens an existing file only, read-only (no schema, no migration, no
        folder): a tool that only looks must never leave an empty store behind, and must
        not mistake one it just created for the consumer's. A missing file raises
        ``FileNotFoundError``, as it does with ``create`` False.
        """
        check_ttl(ttl_ms)
        self._clock: Clock = clock or SystemClock()
        self._ttl_ms = ttl_ms
        self._read_only = read_only
        self._lock = threading.Lock()  # the connection, the index and the cursor below
        self._index: dict[str, tuple[Outcome, int]] = {}
        self._seen_seq = 0  # the last log row applied to the index
        self._seen_version: object = None  # PRAGMA data_version when the index last looked
        self._looked_at = float("-inf")  # clock.monotonic() of that look
        self._last_at_ms = 0  # the newest row time seen: new rows are never older
        self._purged_at_ms = 0
        self._chains: dict[str, list[Link]] = {}  # mirror of the chains table
        self._chains_version: object = None  # PRAGMA data_version when it was loaded
        if read_only or not create:
            if not path.is_file():
                raise FileNotFoundError(errno.ENOENT, "no dedup store", str(path.absolute()))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        target = f"{path.absolute().as_uri()}?mode=ro" if read_only else str(path)
        self._conn = sqlite3.connect(target, timeout=10.0, isolation_level=None,
                                     check_same_thread=False, uri=read_only)
        try:
            if not read_only:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.executescript(_SCHEMA)
                self._migrate_legacy_table()
            self._catch_up()
            self._load_chains()
        except sqlite3.Error:
            self._conn.close()
            raise

    # -- reading ---------------------------------------------------------------------------

    def lookup(self, event_ids: Sequence[str]) -> dict[str, Outcome]:
        # Never waits for the lock: a write holding it catches the index up itself (other
        # holders are brief), and a catch-up skipped here is made by the next lookup that
        # finds the lock free. The index is read without the lock (a get per id is atomic
        # under the GIL; a purge swaps in a new dict). Waiting would put every lane behind
        # each write's commit.
        if (self._clock.monotonic() - self._looked_at >= LOOKUP_CATCH_UP_MS / 1000
                and self._lock.acquire(blocking=False)):
            try:
                self._catch_up()
            finally:
                self._lock.release()
        return live_outcomes(self._index, event_ids, self._clock.now_ms() - self._ttl_ms)

    def _catch_up(self) -> None:
        """Apply the unexpired rows appended since the index last looked (lock held).

        Skipped when no other connection committed since: this connection's own rows are
        applied as they are written.
        """
        self._looked_at = self._clock.monotonic()
        version = self._conn.execute("PRAGMA data_version").fetchone()
        if version == self._seen_version:
            return
        cutoff = self._clock.now_ms() - self._ttl_ms
        for seq, recorded_at_ms, outcome, event_ids in self._rows(
                _SINCE, (self._seen_seq, cutoff)):
            self._apply(outcome, decode_ids(event_ids), int(recorded_at_ms))
            self._seen_seq = int(seq)
            self._last_at_ms = max(self._last_at_ms, int(recorded_at_ms))
        self._seen_version = version  # only once every row is applied

    def _rows(self, sql: str, parameters: tuple[int, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of a query; none from a table a read-only handle finds missing (a file
        written by an earlier version, not yet opened by a writer: it has no rows there)."""
        try:
            return self._conn.execute(sql, parameters).fetchall()
        except sqlite3.OperationalError as exc:
            if self._read_only and "no such table" in str(exc):
                return []
            raise

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

        def rows(now_ms: int) -> list[tuple[LogOutcome, list[str]]]:
            cutoff = now_ms - self._ttl_ms
            dead = [eid for eid in dead_lettered
                    if eid not in delivered and not self._live_delivered(eid, cutoff)]
            chosen: list[tuple[LogOutcome, list[str]]] = []
            if delivered:
                chosen.append(("delivered", list(delivered)))
            if dead:
                chosen.append(("dead_lettered", dead))
            return chosen

        self._append(rows)

    def record_delivered(self, event_ids: Sequence[str]) -> None:
        """``record_many`` of ``delivered`` outcomes without building and checking pairs."""
        if not event_ids:
            return
        self._check_writable()
        ids = list(event_ids)  # a repeated id is harmless: replaying the row, last one wins
        self._append(lambda _now_ms: [("delivered", ids)])

    def forget(self, event_id: str) -> None:
        self._check_writable()
        self._append(lambda _now_ms: [("forgotten", [event_id])])

    def _live_delivered(self, event_id: str, cutoff: int) -> bool:
        entry = self._index.get(event_id)
        return entry is not None and entry[0] == "delivered" and entry[1] > cutoff

    def _append(self, rows_at: Callable[[int], list[tuple[LogOutcome, list[str]]]]) -> None:
        """Append the rows ``rows_at(now)`` decides on, with the index caught up first.

        The write lock is taken before catching up, so the rules see every row written
        before this one, by any process.
        """
        with self._lock:
            with self._immediate_transaction():
                self._catch_up()
                now_ms = self._last_at_ms = max(self._last_at_ms, self._clock.now_ms())
                rows = rows_at(now_ms)
                last_seq = self._seen_seq
                for outcome, ids in rows:
                    cursor = self._conn.execute(_APPEND, (now_ms, outcome, encode_ids(ids)))
                    last_seq = cursor.lastrowid or last_seq
                purge = bool(rows) and now_ms - self._purged_at_ms >= PURGE_INTERVAL_MS
                if purge:
                    self._conn.execute("DELETE FROM dedup_log WHERE recorded_at_ms <= ?",
                                       (now_ms - self._ttl_ms,))
            for outcome, ids in rows:
                self._apply(outcome, ids, now_ms)
            self._seen_seq = last_seq  # ours are the newest rows: the write lock was held
            if purge:
                self._purged_at_ms = now_ms
                cutoff = now_ms - self._ttl_ms
                self._index = {eid: entry for eid, entry in self._index.items()
                               if entry[1] > cutoff}

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
        with self._immediate_transaction():
            self._conn.execute(
                f"INSERT INTO dedup_log (recorded_at_ms, outcome, event_ids) "  # noqa: S608
                f"SELECT recorded_at_ms, outcome, json_array(event_id) FROM {_LEGACY_TABLE} "
                f"WHERE recorded_at_ms > ? AND outcome IN ({','.join('?' * len(OUTCOMES))}) "
                f"ORDER BY recorded_at_ms", (cutoff, *OUTCOMES))
            self._conn.execute(f"DROP TABLE {_LEGACY_TABLE}")

    @contextmanager
    def _immediate_transaction(self) -> Iterator[None]:
        """A write transaction holding SQLite's write lock from its start; rolled back on error."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- chains ----------------------------------------------------------------------------

    def chains(self, keys: Sequence[str]) -> dict[str, list[Link]]:
        cutoff_ms = self._clock.now_ms() - self._ttl_ms
        with self._lock:
            self._load_chains()
            found = {key: live(self._chains[key], cutoff_ms)
                     for key in keys if key in self._chains}
        return {key: chain for key, chain in found.items() if chain}

    def may_have_chains(self) -> bool:
        return bool(self._chains)  # the mirror: own changes at once, others' once refreshed

    def refresh_chains(self) -> None:
        with self._lock:
            self._load_chains()  # other processes on the file: one PRAGMA, no table read

    def join(self, key: str, link: Link) -> None:
        self._change_chain(key, lambda chain: joined(chain, link))

    def leave(self, key: str, event_id: str, state: LinkState | None = None) -> None:
        self._change_chain(key, lambda chain: left(chain, event_id, state))

    def confirm_dead_letter(self, key: str, event_id: str, hop: Position, *,
                            hold: bool = True) -> None:
        self._change_chain(key, lambda chain: confirmed(chain, event_id, hop, hold=hold))

    def parked_summary(self) -> ParkedSummary:
        cutoff_ms = self._clock.now_ms() - self._ttl_ms
        with self._lock:
            self._load_chains()
            return summarise([live(chain, cutoff_ms) for chain in self._chains.values()])

    def _load_chains(self) -> None:
        """Reload the mirror if another connection committed since it was loaded (lock held)."""
        version = self._conn.execute("PRAGMA data_version").fetchone()
        if version == self._chains_version:
            return
        self._chains = {str(entity): decode_chain(links) for entity, links
                        in self._rows("SELECT entity, links FROM chains")}
        self._chains_version = version

    def _change_chain(self, key: str, change: Callable[[list[Link]], list[Link]]) -> None:
        """Apply ``change`` to ``key``'s chain as the table holds it, in one write transaction."""
        self._check_writable()
        cutoff_ms = self._clock.now_ms() - self._ttl_ms
        with self._lock:
            with self._immediate_transaction():
                row = self._conn.execute("SELECT links FROM chains WHERE entity = ?",
                                         (key,)).fetchone()
                chain = change(live(decode_chain(row[0]) if row else [], cutoff_ms))
                if chain:
                    self._conn.execute("INSERT OR REPLACE INTO chains (entity, links) "
                                       "VALUES (?, ?)", (key, encode_chain(chain)))
                else:
                    self._conn.execute("DELETE FROM chains WHERE entity = ?", (key,))
            if chain:
                self._chains[key] = chain
            else:
                self._chains.pop(key, None)

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._index = {}
