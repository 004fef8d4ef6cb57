"""Dedup stores: the outcome rules, expiry, batching and URL parsing (SQLite and in-memory).

SQLite-only behaviour (the log, the writer lock, migration) is in ``test_dedup_sqlite``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from consumer.config.dedup_store import StoreKind, store_kind
from consumer.dedup import store as store_module
from consumer.dedup.store import (
    LOOKUP_CHUNK,
    DedupStore,
    MemoryDedupStore,
    SqliteDedupStore,
    open_dedup_store,
)
from consumer.errors import ConfigError, DedupStoreUnavailable
from retry_topics.clock import ManualClock

TTL_MS = 60_000
StoreFactory = Callable[[ManualClock], DedupStore]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Builds stores of one kind; every store built is closed after the test."""
    opened: list[DedupStore] = []

    def build(clock: ManualClock) -> DedupStore:
        store: DedupStore
        if request.param == "memory":
            store = MemoryDedupStore(clock, ttl_ms=TTL_MS)
        else:
            store = SqliteDedupStore(tmp_path / "nested" / "dedup.sqlite3", TTL_MS, clock)
        opened.append(store)
        return store

    yield build
    for store in opened:
        store.close()


def test_unknown_ids_are_absent_and_recorded_ids_found(make_store: StoreFactory) -> None:
    store = make_store(ManualClock())
    store.record("evt-1", "delivered")
    store.record("evt-2", "dead_lettered")
    assert store.lookup(["evt-1", "evt-2", "evt-3"]) == {
        "evt-1": "delivered", "evt-2": "dead_lettered"}
    assert store.lookup([]) == {}


def test_delivered_is_never_overwritten_by_dead_lettered(make_store: StoreFactory) -> None:
    store = make_store(ManualClock())
    store.record("evt-1", "delivered")
    store.record("evt-1", "dead_lettered")
    store.record_many([("evt-1", "dead_lettered")])
    assert store.lookup(["evt-1"]) == {"evt-1": "delivered"}


def test_dead_lettered_is_overwritten_by_a_later_delivery(make_store: StoreFactory) -> None:
    store = make_store(ManualClock())
    store.record("evt-1", "dead_lettered")
    store.record("evt-1", "delivered")
    assert store.lookup(["evt-1"]) == {"evt-1": "delivered"}


def test_outcomes_expire_after_the_ttl(make_store: StoreFactory) -> None:
    clock = ManualClock()
    store = make_store(clock)
    store.record("evt-1", "delivered")
    clock.advance(TTL_MS - 1)
    assert store.lookup(["evt-1"]) == {"evt-1": "delivered"}
    clock.advance(1)
    assert store.lookup(["evt-1"]) == {}


def test_an_expired_delivery_no_longer_blocks_dead_lettering(make_store: StoreFactory) -> None:
    clock = ManualClock()
    store = make_store(clock)
    store.record("evt-1", "delivered")
    clock.advance(TTL_MS)
    store.record("evt-1", "dead_lettered")
    assert store.lookup(["evt-1"]) == {"evt-1": "dead_lettered"}


def test_recording_again_refreshes_the_ttl(make_store: StoreFactory) -> None:
    clock = ManualClock()
    store = make_store(clock)
    store.record("evt-1", "delivered")
    clock.advance(TTL_MS - 10)
    store.record("evt-1", "delivered")
    clock.advance(TTL_MS - 10)
    assert store.lookup(["evt-1"]) == {"evt-1": "delivered"}


def test_record_delivered_follows_the_rules_of_record_many(make_store: StoreFactory) -> None:
    store = make_store(ManualClock())
    store.record("evt-1", "dead_lettered")
    store.record_delivered(["evt-1", "evt-2", "evt-2"])
    store.record_delivered([])
    store.record("evt-2", "dead_lettered")
    assert store.lookup(["evt-1", "evt-2"]) == {"evt-1": "delivered", "evt-2": "delivered"}


def test_forget_allows_redelivery(make_store: StoreFactory) -> None:
    store = make_store(ManualClock())
    store.record("evt-1", "delivered")
    store.forget("evt-1")
    store.forget("never-seen")
    assert store.lookup(["evt-1"]) == {}


def test_batches_larger_than_one_chunk(make_store: StoreFactory) -> None:
    store = make_store(ManualClock())
    ids = [f"evt-{n}" for n in range(LOOKUP_CHUNK * 2 + 7)]
    store.record_many([(event_id, "delivered") for event_id in ids[::2]])
    found = store.lookup([*ids, *ids[:3]])
    assert found == {event_id: "delivered" for event_id in ids[::2]}


def test_unknown_outcome_is_refused_and_nothing_is_written(make_store: StoreFactory) -> None:
    store = make_store(ManualClock())
    with pytest.raises(ValueError, match="unknown dedup outcome"):
        store.record_many([("evt-1", "delivered"), ("evt-2", "maybe")])  # type: ignore[list-item]
    assert store.lookup(["evt-1", "evt-2"]) == {}


def test_concurrent_worker_threads(make_store: StoreFactory) -> None:
    store = make_store(ManualClock())
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(50):
                store.record(f"w{worker}-{n}", "delivered")
                assert store.lookup([f"w{worker}-{n}"]) == {f"w{worker}-{n}": "delivered"}
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.lookup([f"w{w}-{n}" for w in range(8) for n in range(50)])) == 400


def test_open_parses_relative_and_absolute_sqlite_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_dedup_store("sqlite:///state/dedup.sqlite3", TTL_MS)
    relative.close()
    assert (tmp_path / "state" / "dedup.sqlite3").is_file()
    absolute_path = tmp_path / "abs" / "d.sqlite3"
    absolute = open_dedup_store(f"sqlite:///{absolute_path}", TTL_MS)
    absolute.close()
    assert str(absolute_path).startswith("/")
    assert absolute_path.is_file()


def test_open_memory_store_keeps_the_rules() -> None:
    clock = ManualClock()
    store = open_dedup_store("memory://", TTL_MS, clock)
    store.record("evt-1", "delivered")
    clock.advance(TTL_MS)
    assert store.lookup(["evt-1"]) == {}
    store.close()


@pytest.mark.parametrize(("url", "kind"), [
    ("sqlite:///state/dedup.sqlite3", "sqlite"), ("sqlite://relative.db", "sqlite"),
    ("redis://h:6379/0", "redis"), ("rediss://h:6380/0", "redis"), ("memory://", "memory"),
    ("memory://extra", "memory"), ("postgres://db/x", None), ("SQLITE:///x", None),
    ("x://sqlite://y", None), ("sqlite", None), ("", None),
])
def test_store_kind_is_read_from_the_scheme_alone(url: str, kind: StoreKind | None) -> None:
    """Settings refuse what has no kind; the store checks the rest of the URL when opening."""
    assert store_kind(url) == kind


@pytest.mark.parametrize(
    "url", ["postgres://db/x", "sqlite:///", "memory://extra", "sqlite://relative.db"])
def test_open_refuses_unknown_or_incomplete_urls(url: str) -> None:
    with pytest.raises(ConfigError, match=r"dedup\.store"):
        open_dedup_store(url, TTL_MS)


def test_open_reports_an_unopenable_sqlite_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"dedup\.store.*a-file/dedup\.sqlite3"):
        open_dedup_store(f"sqlite:///{blocker}/dedup.sqlite3", TTL_MS)


def test_open_reports_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not sqlite " * 100)
    with pytest.raises(ConfigError, match=r"dedup\.store"):
        open_dedup_store(f"sqlite:///{junk}", TTL_MS)


def test_open_refuses_a_non_positive_ttl() -> None:
    with pytest.raises(ConfigError, match=r"dedup\.ttl"):
        open_dedup_store("memory://", 0)


def test_open_masks_a_redis_password_in_errors() -> None:
    with pytest.raises(DedupStoreUnavailable, match=r"dedup\.store") as caught:
        open_dedup_store("redis://user:s3cret@127.0.0.1:1/0", TTL_MS)
    assert "s3cret" not in str(caught.value)
    assert "user:****@127.0.0.1:1/0" in str(caught.value)


@pytest.mark.parametrize("url", ["redis://alice:p#ss@127.0.0.1:1/0",
                                 "redis://alice:pa/ss@127.0.0.1:1/0"])
def test_open_says_to_percent_encode_a_password_a_url_cannot_hold_and_shows_none_of_it(
    url: str,
) -> None:
    """redis-py would say "Port could not be cast to integer value as 'p'": the password's
    start, and no hint why."""
    with pytest.raises(ConfigError) as caught:
        open_dedup_store(url, TTL_MS)
    message = str(caught.value)
    assert message == ("dedup.store 'redis://****@127.0.0.1:1/0' cannot be opened: its "
                       "password holds a character URLs reserve ('#', '/', '?' or '@'); "
                       "percent-encode it (%23, %2F, %3F, %40)")


def test_open_masks_a_password_given_as_a_query_parameter() -> None:
    with pytest.raises(ConfigError) as caught:
        open_dedup_store("redis://127.0.0.1:1/0?password=s3cret", TTL_MS)
    assert "s3cret" not in str(caught.value)
    assert "?password=****" in str(caught.value)


def test_open_says_a_password_is_missing_when_the_server_wants_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """redis-py's message is the server's: "HELLO must be called with the client already
    authenticated ...", which never says that the URL lacks a password."""
    def refusing(*_args: object, **_kwargs: object) -> None:
        raise redis.AuthenticationError("HELLO must be called with the client already "
                                        "authenticated, otherwise the HELLO <proto> AUTH "
                                        "<user> <pass> option can be used to authenticate")

    monkeypatch.setattr(store_module, "RedisDedupStore", refusing)
    with pytest.raises(DedupStoreUnavailable, match="the server wants a password, and the "
                                                     "URL gives none"):
        open_dedup_store("redis://127.0.0.1:6379/0", TTL_MS)
    with pytest.raises(DedupStoreUnavailable, match="AuthenticationError: HELLO"):
        open_dedup_store("redis://127.0.0.1:6379/0?password=wrong", TTL_MS)


def test_open_refuses_a_url_no_parser_can_read_in_one_message() -> None:
    with pytest.raises(DedupStoreUnavailable, match="Invalid IPv6 URL"):
        open_dedup_store("redis://[::1/0", TTL_MS)


def test_open_refuses_a_parameter_the_redis_client_does_not_take_in_one_message() -> None:
    """redis-py hands unknown URL parameters to its connection as keyword arguments: a
    TypeError from deep inside it, not a configuration error, unless it is named so."""
    with pytest.raises(DedupStoreUnavailable, match=r"TypeError: .*'PASSWORD'") as caught:
        open_dedup_store("redis://127.0.0.1:1/0?PASSWORD=s3cret", TTL_MS)
    assert "s3cret" not in str(caught.value)


def test_open_says_to_percent_encode_a_hash_in_a_password_parameter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """?password=ab#cd: the client sends "ab" (the rest is a fragment) and is refused."""
    def refusing(*_args: object, **_kwargs: object) -> None:
        raise redis.AuthenticationError("invalid username-password pair")

    monkeypatch.setattr(store_module, "RedisDedupStore", refusing)
    with pytest.raises(DedupStoreUnavailable) as caught:
        open_dedup_store("redis://127.0.0.1:6379/0?password=ab#cd/ef", TTL_MS)
    assert str(caught.value) == (
        "dedup.store 'redis://127.0.0.1:6379/0?password=****' cannot be opened: its password "
        "holds a character URLs reserve ('#', '/', '?' or '@'); percent-encode it (%23, %2F, "
        "%3F, %40)")
