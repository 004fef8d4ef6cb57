"""The chain store's contract (``tests/contract/chain_store.py``) on a real redis-server,
with two clients standing for two consumer instances."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from consumer.dedup.store import REDIS_CHAIN_PREFIX, REDIS_PARKED_SET, RedisDedupStore
from retry_topics.clock import ManualClock
from retry_topics.ordering import Link
from tests.contract import chain_store as contract

Opened = tuple[RedisDedupStore, RedisDedupStore, ManualClock]


@pytest.fixture
def opened(redis_url: str) -> Iterator[Opened]:
    raw = redis.Redis.from_url(redis_url)
    try:  # the summary counts every key of the server: start each check from none
        raw.delete(REDIS_PARKED_SET, *raw.keys(REDIS_CHAIN_PREFIX + "*"))
    finally:
        raw.close()
    clock = ManualClock()
    store = RedisDedupStore(redis_url, contract.TTL_MS, clock)
    other = RedisDedupStore(redis_url, contract.TTL_MS, clock)
    yield store, other, clock
    store.close()
    other.close()


@pytest.mark.parametrize("check", [
    contract.check_join_appends_in_order_and_one_call_answers_many_keys,
    contract.check_a_store_holding_a_chain_may_have_chains,
    contract.check_join_is_idempotent_and_updates_in_place,
    contract.check_a_link_keeps_its_origin,
    contract.check_a_dead_letter_is_confirmed_for_its_own_hop_only,
    contract.check_leave_removes_and_an_empty_chain_is_gone,
    contract.check_leave_of_a_state_spares_a_link_in_another,
    contract.check_summary_counts_keys_and_the_oldest,
    contract.check_links_expire_with_the_ttl,
], ids=lambda check: check.__name__)
def test_contract(opened: Opened, check: Callable[[RedisDedupStore, ManualClock], None]) -> None:
    """Each rule of the chain store holds on Redis as on the embedded stores."""
    check(opened[0], opened[2])


def test_no_chain_is_absent(opened: Opened) -> None:
    """A key without a chain is absent from the answer."""
    contract.check_no_chain_is_absent(opened[0])


def test_another_instance_reads_what_one_wrote(opened: Opened) -> None:
    """Two instances see each other's joins and leaves at once."""
    contract.check_another_handle_reads_what_one_wrote(*opened)


def test_a_chain_value_expires_on_the_server(opened: Opened, redis_url: str) -> None:
    """The server forgets a chain ``ttl`` after its last change, so nothing lingers."""
    store, _, clock = opened
    store.join("appt-ttl", Link(event_id="e1", topic=contract.TIER,
                                parked_at_ms=clock.now_ms()))
    raw = redis.Redis.from_url(redis_url)
    try:
        assert 0 < raw.pttl(REDIS_CHAIN_PREFIX + "appt-ttl") <= contract.TTL_MS
    finally:
        raw.close()
