"""Dedup store: remembers the outcome of every event id so no event is handled twice.

The consumer looks up a whole consume batch in one round-trip, skips ids that have an outcome,
and records an outcome once it is final (``delivered`` when the handler returned,
``dead_lettered`` when the DLQ record was acknowledged). The offset is stored after ``record``
returns, so ``record`` is durable when it returns: a crash after it never redelivers.

Replays stay safe because ``delivered`` is never overwritten by ``dead_lettered`` (a stale
retry copy must not hide a delivery), while ``dead_lettered`` may become ``delivered`` (an
operator replayed the event from the DLQ and it went through). Outcomes expire after
``ttl_ms`` (an expired one counts as absent); ``forget`` lets an operator force redelivery.

Every store also keeps the **chains** of parked keys (``consumer.dedup.chains``): per record
key, the events outstanding in retry tiers, so later events of the key wait behind them.
Links expire with the same ``ttl_ms``.

Implementations, chosen by URL in :func:`open_dedup_store`:

* :class:`~consumer.dedup.sqlite.SqliteDedupStore` (``sqlite:///relative.sqlite3``,
  ``sqlite:////abs/path``): the embedded default for one consumer process, an append-only
  log with an in-memory index (see that module for why, and for its durability).
* :class:`RedisDedupStore` (``redis://host:port/db``, ``rediss://``): shared by several
  consumer instances; server-side expiry (``PX``); a Lua script makes "dead-letter unless
  delivered" atomic. Durability is that of the server (use AOF with ``appendfsync always``
  or ``everysec`` in production).
* :class:`MemoryDedupStore` (``memory://``): the fake for unit tests, same semantics.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar

import redis

from consumer.config.dedup_store import store_kind
from consumer.config.settings import gives_password, masked_url, password_unencoded
from consumer.dedup.chains import (
    ChainStore,
    ParkedSummary,
    decode_chain,
    encode_chain,
    summarise,
)
from consumer.dedup.rules import (
    OUTCOMES,
    Outcome,
    check_outcomes,
    check_ttl,
    live_outcomes,
)
from consumer.dedup.sqlite import SqliteDedupStore
from consumer.errors import ConfigError, DedupStoreError, DedupStoreUnavailable
from retry_topics.clock import Clock, SystemClock
from retry_topics.ordering import Link, LinkState, Position, confirmed, joined, left, live

__all__ = ["OUTCOMES", "DedupStore", "DedupStoreMissing", "MemoryDedupStore", "Outcome",
           "RedisDedupStore", "SqliteDedupStore", "open_dedup_store"]

_OUTCOME_BY_VALUE: dict[bytes, Outcome] = {outcome.encode(): outcome for outcome in OUTCOMES}

LOOKUP_CHUNK = 500  # ids per Redis MGET
REDIS_KEY_PREFIX = "clinic-events:dedup:"
REDIS_CHAIN_PREFIX = "clinic-events:chain:"
REDIS_PARKED_SET = "clinic-events:parked"  # every key with a chain: lag counts them
REDIS_CHAIN_ATTEMPTS = 20  # optimistic read-modify-write tries before giving up
REDIS_CONNECT_TIMEOUT_S, REDIS_SOCKET_TIMEOUT_S = 2.0, 5.0


class DedupStore(ChainStore, Protocol):
    """Where event outcomes (and parked keys' chains) are recorded; implementations are safe
    to share between threads."""

    def lookup(self, event_ids: Sequence[str]) -> dict[str, Outcome]:
        """Recorded, unexpired outcomes of ``event_ids``; ids without one are absent."""

    def record(self, event_id: str, outcome: Outcome) -> None:
        """Record ``outcome`` durably; ``delivered`` is never replaced by ``dead_lettered``."""

    def record_many(self, items: Sequence[tuple[str, Outcome]]) -> None:
        """Record several outcomes in one round-trip, with the rules of :meth:`record`."""

    def record_delivered(self, event_ids: Sequence[str]) -> None:
        """Record ``delivered`` for every id in one round-trip (the consumer's hot path)."""

    def forget(self, event_id: str) -> None:
        """Drop the outcome of ``event_id`` (operator-forced redelivery)."""

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""


def _chunks(event_ids: Sequence[str]) -> list[list[str]]:
    unique = list(dict.fromkeys(event_ids))
    return [unique[i : i + LOOKUP_CHUNK] for i in range(0, len(unique), LOOKUP_CHUNK)]


class MemoryDedupStore:
    """In-process store with the same rules and expiry as the real ones; for tests."""

    def __init__(self, clock: Clock | None = None, *, ttl_ms: int = 7 * 24 * 3_600_000) -> None:
        check_ttl(ttl_ms)
        self._clock: Clock = clock or SystemClock()
        self._ttl_ms = ttl_ms
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[Outcome, int]] = {}
        self._chains: dict[str, list[Link]] = {}

    def _live(self, event_id: str, now_ms: int) -> Outcome | None:
        row = self._rows.get(event_id)
        return None if row is None or row[1] <= now_ms - self._ttl_ms else row[0]

    def lookup(self, event_ids: Sequence[str]) -> dict[str, Outcome]:
        cutoff_ms = self._clock.now_ms() - self._ttl_ms
        with self._lock:
            return live_outcomes(self._rows, event_ids, cutoff_ms)

    def record(self, event_id: str, outcome: Outcome) -> None:
        self.record_many([(event_id, outcome)])

    def record_many(self, items: Sequence[tuple[str, Outcome]]) -> None:
        check_outcomes(items)
        now_ms = self._clock.now_ms()
        with self._lock:
            for event_id, outcome in items:
                if outcome == "dead_lettered" and self._live(event_id, now_ms) == "delivered":
                    continue
                self._rows[event_id] = (outcome, now_ms)

    def record_delivered(self, event_ids: Sequence[str]) -> None:
        entry: tuple[Outcome, int] = ("delivered", self._clock.now_ms())  # always overwrites
        with self._lock:
            self._rows.update(dict.fromkeys(event_ids, entry))

    def forget(self, event_id: str) -> None:
        with self._lock:
            self._rows.pop(event_id, None)

    def chains(self, keys: Sequence[str]) -> dict[str, list[Link]]:
        cutoff_ms = self._clock.now_ms() - self._ttl_ms
        with self._lock:
            found = {key: live(chain, cutoff_ms) for key in keys
                     if (chain := self._chains.get(key))}
        return {key: chain for key, chain in found.items() if chain}

    def may_have_chains(self) -> bool:
        return bool(self._chains)

    def refresh_chains(self) -> None:
        """Nothing to take in: the chains live in this process only."""

    def join(self, key: str, link: Link) -> None:
        self._change(key, lambda chain: joined(chain, link))

    def leave(self, key: str, event_id: str, state: LinkState | None = None) -> None:
        self._change(key, lambda chain: left(chain, event_id, state))

    def confirm_dead_letter(self, key: str, event_id: str, hop: Position, *,
                            hold: bool = True) -> None:
        self._change(key, lambda chain: confirmed(chain, event_id, hop, hold=hold))

    def _change(self, key: str, change: Callable[[list[Link]], list[Link]]) -> None:
        cutoff_ms = self._clock.now_ms() - self._ttl_ms
        with self._lock:
            chain = change(live(self._chains.get(key, ()), cutoff_ms))
            if chain:
                self._chains[key] = chain
            else:
                self._chains.pop(key, None)

    def parked_summary(self) -> ParkedSummary:
        cutoff_ms = self._clock.now_ms() - self._ttl_ms
        with self._lock:
            return summarise([live(chain, cutoff_ms) for chain in self._chains.values()])

    def close(self) -> None:
        self._rows.clear()
        self._chains.clear()


# KEYS[1] = the event's key, ARGV[1] = ttl in ms. Leaves an existing "delivered" untouched.
_DEAD_LETTER_UNLESS_DELIVERED = """
if redis.call('GET', KEYS[1]) == 'delivered' then return 0 end
redis.call('SET', KEYS[1], 'dead_lettered', 'PX', ARGV[1])
return 1
"""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _naming_the_store(method: Callable[Concatenate[RedisDedupStore, _P], _R],
                      ) -> Callable[Concatenate[RedisDedupStore, _P], _R]:
    """Re-raise a Redis client error as :class:`DedupStoreError` naming the store."""
    @functools.wraps(method)
    def named(store: RedisDedupStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(store, *args, **kwargs)
        except redis.RedisError as exc:
            raise DedupStoreError(f"dedup store {store.shown}: {exc}") from exc
    return named


class RedisDedupStore:
    """Outcomes in Redis, shared by every consumer instance; the server expires them.

    A failed read or write raises :class:`DedupStoreError` naming the store."""

    def __init__(self, url: str, ttl_ms: int, clock: Clock | None = None) -> None:
        check_ttl(ttl_ms)
        self.shown = masked_url(url)
        self._ttl_ms = ttl_ms
        self._clock: Clock = clock or SystemClock()
        self._client = redis.Redis.from_url(url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
                                            socket_timeout=REDIS_SOCKET_TIMEOUT_S)
        try:
            self._client.ping()
        except BaseException:
            self._client.close()
            raise

    @staticmethod
    def _key(event_id: str) -> str:
        return REDIS_KEY_PREFIX + event_id

    @_naming_the_store
    def lookup(self, event_ids: Sequence[str]) -> dict[str, Outcome]:
        chunks = _chunks(event_ids)
        if not chunks:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for chunk in chunks:
            pipe.mget([self._key(event_id) for event_id in chunk])
        values = [value for chunk_values in pipe.execute() for value in chunk_values]
        unique = [event_id for chunk in chunks for event_id in chunk]
        return {event_id: _OUTCOME_BY_VALUE[raw]
                for event_id, raw in zip(unique, values, strict=True) if raw in _OUTCOME_BY_VALUE}

    def record(self, event_id: str, outcome: Outcome) -> None:
        self.record_many([(event_id, outcome)])

    @_naming_the_store
    def record_many(self, items: Sequence[tuple[str, Outcome]]) -> None:
        check_outcomes(items)
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        for event_id, outcome in items:
            if outcome == "delivered":
                pipe.set(self._key(event_id), outcome, px=self._ttl_ms)
            else:
                pipe.eval(_DEAD_LETTER_UNLESS_DELIVERED, 1, self._key(event_id), self._ttl_ms)
        pipe.execute()

    def record_delivered(self, event_ids: Sequence[str]) -> None:
        self.record_many([(event_id, "delivered") for event_id in event_ids])

    @_naming_the_store
    def forget(self, event_id: str) -> None:
        self._client.delete(self._key(event_id))

    # -- chains: one JSON value per key, changed by optimistic transactions ----------------
    # Why WATCH/MULTI and not a Lua script: the rules stay the pure functions every store
    # shares; a change is rare (a failure, a park, a chained delivery), so a retried
    # transaction costs nothing that matters.

    @_naming_the_store
    def chains(self, keys: Sequence[str]) -> dict[str, list[Link]]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        cutoff_ms = self._clock.now_ms() - self._ttl_ms
        values = self._client.mget([REDIS_CHAIN_PREFIX + key for key in unique])
        found = {key: live(decode_chain(raw), cutoff_ms)
                 for key, raw in zip(unique, values, strict=True) if raw is not None}
        return {key: chain for key, chain in found.items() if chain}

    def may_have_chains(self) -> bool:
        return True  # shared by other instances: only a round trip could tell

    def refresh_chains(self) -> None:
        """Nothing to take in: ``may_have_chains`` is always True, ``chains`` reads Redis."""

    def join(self, key: str, link: Link) -> None:
        self._change(key, lambda chain: joined(chain, link))

    def leave(self, key: str, event_id: str, state: LinkState | None = None) -> None:
        self._change(key, lambda chain: left(chain, event_id, state))

    def confirm_dead_letter(self, key: str, event_id: str, hop: Position, *,
                            hold: bool = True) -> None:
        self._change(key, lambda chain: confirmed(chain, event_id, hop, hold=hold))

    @_naming_the_store
    def _change(self, key: str, change: Callable[[list[Link]], list[Link]]) -> None:
        """Read ``key``'s chain, apply ``change`` and write it back, atomically."""
        name = REDIS_CHAIN_PREFIX + key
        for _ in range(REDIS_CHAIN_ATTEMPTS):
            with self._client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(name)  # type: ignore[no-untyped-call]
                    raw = pipe.get(name)
                    cutoff_ms = self._clock.now_ms() - self._ttl_ms
                    chain = change(live(decode_chain(raw) if raw is not None else [],
                                        cutoff_ms))
                    pipe.multi()
                    if chain:  # every link is younger than ttl: the value may live as long
                        pipe.set(name, encode_chain(chain), px=self._ttl_ms)
                        pipe.zadd(REDIS_PARKED_SET, {key: chain[0].parked_at_ms})
                    else:
                        pipe.delete(name)
                        pipe.zrem(REDIS_PARKED_SET, key)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue  # another instance changed the chain meanwhile: read it again
        raise redis.RedisError(f"chain of a key changed {REDIS_CHAIN_ATTEMPTS} times while "
                               "this instance tried to update it")

    @_naming_the_store
    def parked_summary(self) -> ParkedSummary:
        members: list[bytes] = list(self._client.zrange(REDIS_PARKED_SET, 0, -1))  # type: ignore[arg-type]
        keys = [raw.decode("utf-8", "surrogateescape") for raw in members]
        if not keys:
            return ParkedSummary()
        found = self.chains(keys)
        gone = [key for key in keys if key not in found]  # expired by the server
        if gone:
            self._client.zrem(REDIS_PARKED_SET, *gone)
        return summarise(list(found.values()))

    def close(self) -> None:
        self._client.close()


class DedupStoreMissing(DedupStoreUnavailable):
    """The SQLite file a tool was to open without creating it does not exist."""


def open_dedup_store(url: str, ttl_ms: int, clock: Clock | None = None, *,
                     read_only: bool = False, create: bool = True) -> DedupStore:
    """Open the store named by ``url``; raise ConfigError naming ``dedup.store`` if it fails.

    ``read_only`` is for tools that only look outcomes up next to a running consumer (a
    SQLite store then takes no writer lock, and must exist already); it changes nothing for
    Redis or memory. ``create`` False opens an existing SQLite file only, for tools that
    change a store the consumer made. A missing file raises :class:`DedupStoreMissing`,
    saying where it was looked for: a relative path is taken from the current folder.
    """
    check_ttl(ttl_ms)
    kind = store_kind(url)
    try:
        if kind == "sqlite" and url.startswith("sqlite:///"):
            raw_path = url.removeprefix("sqlite:///")
            if not raw_path or raw_path == "/":
                raise ConfigError(f"dedup.store {url!r} names no file; use "
                                  "sqlite:///relative/path.sqlite3 or sqlite:////abs/path")
            path = Path(raw_path)
            try:
                return SqliteDedupStore(path, ttl_ms, clock, read_only=read_only,
                                        create=create)
            except FileNotFoundError as exc:
                relative = "" if path.is_absolute() else " (relative to the current folder)"
                raise DedupStoreMissing(
                    f"dedup.store {url!r}: no store at {path.absolute()}{relative}; "
                    "it is created by `clinic-events run`, never by this tool") from exc
        if kind == "redis":
            return RedisDedupStore(url, ttl_ms, clock)
        if kind == "memory" and url == "memory://":
            return MemoryDedupStore(clock, ttl_ms=ttl_ms)
    # TypeError: redis-py passes unknown URL parameters (?PASSWORD=, ?ssl_cert_reqs= on a
    # redis:// URL) to its connection class as keyword arguments, which refuses them
    except (OSError, sqlite3.Error, redis.RedisError, ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        if isinstance(exc, ValueError | redis.AuthenticationError) and password_unencoded(url):
            # the client saw a port made of the password's start, or a shortened password
            raise DedupStoreUnavailable(
                f"dedup.store {masked_url(url)!r} cannot be opened: its password holds a "
                "character URLs reserve ('#', '/', '?' or '@'); percent-encode it (%23, %2F, "
                "%3F, %40)") from None
        if isinstance(exc, redis.AuthenticationError) and not gives_password(url):
            # redis-py's words ("HELLO must be called with the client already
            # authenticated ...") never say that a password is missing
            raise DedupStoreUnavailable(
                f"dedup.store {masked_url(url)!r} cannot be opened: the server wants a "
                "password, and the URL gives none (redis://:PASSWORD@host:port/db, or "
                "redis://USER:PASSWORD@... for an ACL user)") from exc
        raise DedupStoreUnavailable(f"dedup.store {masked_url(url)!r} cannot be opened: "
                                    f"{type(exc).__name__}: {exc}") from exc
    raise ConfigError(f"dedup.store must be sqlite:///path, redis://host:port/db, rediss://... "
                      f"or memory://, got {masked_url(url)!r}")
