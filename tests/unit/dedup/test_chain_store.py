"""The chain store's contract (``tests/contract/chain_store.py``) on the memory and SQLite
stores; the Redis store runs it in ``tests/integration/test_redis_chains.py``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consumer.dedup.chains import ChainStore, decode_chain, encode_chain, entity_key
from consumer.dedup.sqlite import SqliteDedupStore
from consumer.dedup.store import MemoryDedupStore
from retry_topics.clock import ManualClock
from retry_topics.ordering import Link, Position
from tests.contract import chain_store as contract

Opened = tuple[ChainStore, ChainStore | None, ManualClock]


@pytest.fixture(params=["memory", "sqlite"])
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opened]:
    clock = ManualClock(start_ms=1_700_000_000_000)
    if request.param == "memory":
        memory = MemoryDedupStore(clock, ttl_ms=contract.TTL_MS)
        yield memory, None, clock
        memory.close()
        return
    path = tmp_path / "dedup.sqlite3"
    store = SqliteDedupStore(path, contract.TTL_MS, clock)
    other = SqliteDedupStore(path, contract.TTL_MS, clock)  # another process on the file
    yield store, other, clock
    store.close()
    other.close()


CHECKS: list[Callable[..., None]] = [
    contract.check_join_appends_in_order_and_one_call_answers_many_keys,
    contract.check_a_store_holding_a_chain_may_have_chains,
    contract.check_join_is_idempotent_and_updates_in_place,
    contract.check_a_link_keeps_its_origin,
    contract.check_a_dead_letter_is_confirmed_for_its_own_hop_only,
    contract.check_leave_removes_and_an_empty_chain_is_gone,
    contract.check_leave_of_a_state_spares_a_link_in_another,
    contract.check_summary_counts_keys_and_the_oldest,
    contract.check_links_expire_with_the_ttl,
]


def test_no_chain_is_absent(opened: Opened) -> None:
    contract.check_no_chain_is_absent(opened[0])


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_contract(opened: Opened, check: Callable[[ChainStore, ManualClock], None]) -> None:
    check(opened[0], opened[2])


def test_another_handle_reads_what_one_wrote(opened: Opened) -> None:
    store, other, clock = opened
    if other is None:
        pytest.skip("the memory store is one process's own")
    contract.check_another_handle_reads_what_one_wrote(store, other, clock)


def test_a_reopened_sqlite_store_keeps_its_chains(tmp_path: Path) -> None:
    """Parked state survives a restart: it is in the file, not only in the mirror."""
    clock = ManualClock(start_ms=1_700_000_000_000)
    path = tmp_path / "dedup.sqlite3"
    store = SqliteDedupStore(path, contract.TTL_MS, clock)
    for event_id in ("e1", "e2"):
        store.join("appt-1", Link(event_id=event_id, topic=contract.TIER,
                                  parked_at_ms=clock.now_ms()))
    store.close()
    reopened = SqliteDedupStore(path, contract.TTL_MS, clock, read_only=True)
    try:
        assert [link.event_id for link in reopened.chains(["appt-1"])["appt-1"]] == ["e1", "e2"]
        assert reopened.parked_summary().keys == 1
    finally:
        reopened.close()


def test_keys_are_stored_one_to_one() -> None:
    assert entity_key(b"appt-1") == "appt-1"
    assert entity_key(b"\xff\x00") == "\x00ff00"
    assert entity_key(b"\x00ff00") != entity_key(b"\xff\x00")


def test_a_malformed_chain_value_counts_as_no_links() -> None:
    link = Link(event_id="e1", topic=contract.TIER, parked_at_ms=5)
    assert decode_chain(encode_chain([link])) == [link]
    assert decode_chain("not json") == []
    assert decode_chain('[["e1", "t", 5, "bogus"], ["e2", "t", "x", "waiting"], 3]') == []


def test_links_without_an_origin_and_readers_without_extras_keep_every_link() -> None:
    """A chain written before origins were kept reads with origins unknown; a chain with
    them keeps the four-field rows an earlier reader takes, and an origin is its extra."""
    old = '[["e1","t",5,"waiting"],["e2","t",6,"dead_lettered"]]'
    assert [(link.event_id, link.origin) for link in decode_chain(old)] == [
        ("e1", None), ("e2", None)]
    origin = Position("clinic.events", 0, 41)
    link = Link(event_id="e1", topic=contract.TIER, parked_at_ms=5, origin=origin)
    text = encode_chain([link])
    assert json.loads(text)[0] == ["e1", contract.TIER, 5, "waiting"]
    assert decode_chain(text) == [link]
    bad = '[["e1","t",5,"waiting"],{"x":{"e1":{"o":["m",true,1]}}}]'
    assert decode_chain(bad)[0].origin is None
