"""The chain store's contract: what parked keys rely on from every dedup store.

The same checks run against the memory and SQLite stores (``tests/unit/dedup``) and against
the Redis store on a real redis-server (``tests/integration``). Each check gets a fresh
store, a second handle on the same backing state (``other``, or None where there is no
sharing: memory), and the manual clock both read.
"""

from __future__ import annotations

import uuid

from consumer.dedup.chains import ChainStore, ParkedSummary
from retry_topics.clock import ManualClock
from retry_topics.ordering import Link, Position

TTL_MS = 60_000
TIER, DLQ = "clinic.events.retry.1s", "clinic.events.dlq"


def _key() -> str:
    return f"appt-{uuid.uuid4().hex[:8]}"


def _link(event_id: str, at_ms: int, topic: str = TIER) -> Link:
    return Link(event_id=event_id, topic=topic, parked_at_ms=at_ms)


def check_no_chain_is_absent(store: ChainStore) -> None:
    assert store.chains([]) == {}
    assert store.chains([_key(), _key()]) == {}


def check_a_store_holding_a_chain_may_have_chains(store: ChainStore, clock: ManualClock) -> None:
    """The pipeline skips the chain lookup when ``may_have_chains`` is False: it must never
    be False while a key has a chain."""
    key = _key()
    store.join(key, _link("e1", clock.now_ms()))
    assert store.may_have_chains()
    store.leave(key, "e1")
    assert store.chains([key]) == {}


def check_join_appends_in_order_and_one_call_answers_many_keys(
        store: ChainStore, clock: ManualClock) -> None:
    first, second = _key(), _key()
    now = clock.now_ms()
    store.join(first, _link("e1", now))
    store.join(first, _link("e2", now + 1))
    store.join(second, _link("e9", now))
    found = store.chains([first, second, _key()])
    assert [link.event_id for link in found[first]] == ["e1", "e2"]
    assert [link.event_id for link in found[second]] == ["e9"]
    assert len(found) == 2


def check_join_is_idempotent_and_updates_in_place(store: ChainStore, clock: ManualClock) -> None:
    key, now = _key(), clock.now_ms()
    store.join(key, _link("e1", now))
    store.join(key, _link("e2", now))
    store.join(key, _link("e1", now))  # a crash and a second look: nothing more
    clock.advance(5_000)
    store.join(key, Link(event_id="e1", topic=DLQ, parked_at_ms=clock.now_ms(),
                         state="dead_lettered"))
    chain = store.chains([key])[key]
    assert [(link.event_id, link.topic, link.state) for link in chain] == [
        ("e1", DLQ, "dead_lettered"), ("e2", TIER, "waiting")]
    assert chain[0].parked_at_ms == now  # its age counts from when it first joined


def check_a_link_keeps_its_origin(store: ChainStore, clock: ManualClock) -> None:
    """Where an event entered the main topic is stored with its link, and kept when the
    link moves (a link without one stays without)."""
    key, now = _key(), clock.now_ms()
    origin = Position("clinic.events", 3, 1_234_567)
    store.join(key, Link(event_id="e1", topic=TIER, parked_at_ms=now, origin=origin))
    store.join(key, _link("e2", now))
    store.join(key, Link(event_id="e1", topic=DLQ, parked_at_ms=now, state="dead_lettered"))
    assert [(link.event_id, link.origin) for link in store.chains([key])[key]] == [
        ("e1", origin), ("e2", None)]


def check_a_dead_letter_is_confirmed_for_its_own_hop_only(
        store: ChainStore, clock: ManualClock) -> None:
    """``dead_lettering`` (and the hop it waits for) is stored; ``confirm_dead_letter``
    marks it ``dead_lettered`` for that hop only, or takes it out under ``release``."""
    key, now = _key(), clock.now_ms()
    hop = Position(TIER, 2, 40)
    store.join(key, Link(event_id="e1", topic=DLQ, parked_at_ms=now, state="dead_lettering",
                         hop=hop))
    store.join(key, Link(event_id="e2", topic=DLQ, parked_at_ms=now, state="dead_lettering",
                         hop=Position(TIER, 0, 9)))
    assert [(link.state, link.hop) for link in store.chains([key])[key]] == [
        ("dead_lettering", hop), ("dead_lettering", Position(TIER, 0, 9))]
    store.confirm_dead_letter(key, "e1", Position(TIER, 2, 41))  # another record's hop
    store.confirm_dead_letter(key, "e1", hop)
    store.confirm_dead_letter(key, "e2", Position(TIER, 0, 9), hold=False)
    assert [(link.event_id, link.state) for link in store.chains([key])[key]] == [
        ("e1", "dead_lettered")]


def check_leave_removes_and_an_empty_chain_is_gone(store: ChainStore, clock: ManualClock) -> None:
    key, now = _key(), clock.now_ms()
    store.join(key, _link("e1", now))
    store.join(key, _link("e2", now))
    store.leave(key, "e1")
    store.leave(key, "e1")  # twice: harmless
    store.leave(_key(), "e7")  # a key without a chain: harmless
    assert [link.event_id for link in store.chains([key])[key]] == ["e2"]
    store.leave(key, "e2")
    assert store.chains([key]) == {}


def check_leave_of_a_state_spares_a_link_in_another(
        store: ChainStore, clock: ManualClock) -> None:
    """``dlq discard`` releases a dead-lettered link only: a link whose event waits in a
    tier again (replayed, failing anew) stays, and so does its place."""
    key, now = _key(), clock.now_ms()
    store.join(key, _link("e1", now))
    store.join(key, Link(event_id="e2", topic=DLQ, parked_at_ms=now, state="dead_lettered"))
    store.join(key, _link("e3", now))
    store.leave(key, "e1", "dead_lettered")
    store.leave(key, "e2", "dead_lettered")
    assert [link.event_id for link in store.chains([key])[key]] == ["e1", "e3"]
    store.leave(key, "e1", "waiting")
    assert [link.event_id for link in store.chains([key])[key]] == ["e3"]


def check_summary_counts_keys_and_the_oldest(store: ChainStore, clock: ManualClock) -> None:
    """A key is parked when an event of it waits behind another, or its head is held in the
    DLQ; a lone event waiting in a tier holds nothing back and is not counted (nor its age)."""
    assert store.parked_summary() == ParkedSummary(0, None)
    first, second, lone, held = _key(), _key(), _key(), _key()
    oldest = clock.now_ms()
    store.join(lone, _link("e0", oldest - 5))
    assert store.parked_summary() == ParkedSummary(0, None)
    store.join(first, _link("e1", oldest))
    store.join(first, _link("e2", oldest + 10))
    store.join(second, _link("e3", oldest + 20))
    store.join(second, _link("e4", oldest + 30))
    store.join(held, Link(event_id="e5", topic=DLQ, parked_at_ms=oldest + 40,
                          state="dead_lettered"))
    assert store.parked_summary() == ParkedSummary(3, oldest)
    store.leave(first, "e1")  # e2 is the head now, alone in its tier
    assert store.parked_summary() == ParkedSummary(2, oldest + 20)
    store.leave(second, "e3")
    store.leave(held, "e5")
    assert store.parked_summary() == ParkedSummary(0, None)


def check_links_expire_with_the_ttl(store: ChainStore, clock: ManualClock) -> None:
    """A stale head never blocks its key for ever: it expires, its follower stays."""
    key = _key()
    old_at = clock.now_ms()
    store.join(key, _link("old", old_at))
    clock.advance(TTL_MS - 1_000)
    store.join(key, _link("new", clock.now_ms()))
    assert store.parked_summary() == ParkedSummary(1, old_at)
    clock.advance(2_000)
    assert [link.event_id for link in store.chains([key])[key]] == ["new"]
    assert store.parked_summary() == ParkedSummary(0, None)  # "new" waits behind nothing
    clock.advance(TTL_MS)
    assert store.chains([key]) == {}
    assert store.parked_summary() == ParkedSummary(0, None)


def check_another_handle_reads_what_one_wrote(
        store: ChainStore, other: ChainStore, clock: ManualClock) -> None:
    """Read-your-writes across processes or instances, at the moment of the lookup."""
    key, now = _key(), clock.now_ms()
    assert other.chains([key]) == {}  # looked at (and cached, where a store caches) first
    store.join(key, _link("e1", now))
    other.refresh_chains()  # as the pipeline does after every consume
    assert other.may_have_chains()
    assert [link.event_id for link in other.chains([key])[key]] == ["e1"]
    other.join(key, _link("e2", now))
    store.leave(key, "e1")
    assert [link.event_id for link in other.chains([key])[key]] == ["e2"]
    assert [link.event_id for link in store.chains([key])[key]] == ["e2"]
