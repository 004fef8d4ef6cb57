"""The pure rules of parked keys: where an event goes, given its key's chain."""

from __future__ import annotations

import pytest

from retry_topics.errors import PolicyError
from retry_topics.ordering import (
    PROCEED,
    FollowToDeadLetter,
    Link,
    OrderingPolicy,
    ParkBehind,
    Position,
    confirmed,
    joined,
    left,
    park_tier,
    parked_source,
    place,
)
from retry_topics.policy import RetryPolicy

T5, T30, DLQ = "clinic.events.retry.5s", "clinic.events.retry.30s", "clinic.events.dlq"


def _link(event_id: str, topic: str = T5, state: str = "waiting") -> Link:
    return Link(event_id=event_id, topic=topic, parked_at_ms=1, state=state)  # type: ignore[arg-type]


def test_an_empty_chain_or_the_head_proceeds() -> None:
    assert place([], "e1") is PROCEED
    assert place([_link("e1"), _link("e2")], "e1") is PROCEED


def test_a_new_event_parks_in_the_tails_tier_behind_the_head() -> None:
    chain = [_link("e1", T30), _link("e2", T5)]
    assert place(chain, "e3") == ParkBehind(head="e1", topic=T5)
    assert place(chain, "e2") == ParkBehind(head="e1", topic=T30)  # its predecessor's tier


def test_hold_follows_a_dead_lettered_predecessor_release_ignores_it() -> None:
    chain = [_link("e1", DLQ, "dead_lettered"), _link("e2", T5)]
    assert place(chain, "e2") == FollowToDeadLetter(head="e1")
    assert place(chain, "e3") == ParkBehind(head="e1", topic=T5)  # behind e2, still waiting
    assert place(chain, "e2", hold=False) is PROCEED
    assert place(chain, "e1") is PROCEED  # a replayed head is the head


def test_an_event_published_before_the_head_proceeds() -> None:
    """E1 (offset 4) was delivered, but a crash lost its outcome after E2 (offset 5) joined
    the chain: seen again, E1 is an earlier event, not a follower of E2."""
    main = "clinic.events"
    e2 = Link(event_id="e2", topic=DLQ, parked_at_ms=1, state="dead_lettered",
              origin=Position(main, 0, 5))
    chain = [e2, _link("e3")]
    assert place(chain, "e1", origin=Position(main, 0, 4)) is PROCEED
    assert place([*chain, _link("e1")], "e1", origin=Position(main, 0, 4)) is PROCEED
    assert place(chain, "e9", origin=Position(main, 0, 6)) == ParkBehind(head="e2", topic=T5)
    assert place(chain, "e9", origin=Position(main, 1, 4)) == ParkBehind(head="e2", topic=T5)
    assert place(chain, "e9", origin=Position(T5, 0, 4)) == ParkBehind(head="e2", topic=T5)
    assert place(chain, "e1") == ParkBehind(head="e2", topic=T5)  # origin unknown
    unknown = [_link("e2", DLQ, "dead_lettered")]  # a link written before origins were kept
    assert place(unknown, "e1", origin=Position(main, 0, 4)) == FollowToDeadLetter(head="e2")


def test_a_follower_follows_only_a_durable_dead_letter() -> None:
    """A predecessor whose DLQ hop is handed over but not known durable parks its follower
    (in the first tier: park_tier maps the DLQ there); under release it still holds."""
    hop = Position(T5, 0, 7)
    going = Link(event_id="e1", topic=DLQ, parked_at_ms=1, state="dead_lettering", hop=hop)
    chain = [going, _link("e2")]
    assert place(chain, "e2") == ParkBehind(head="e1", topic=DLQ)
    assert place(chain, "e2", hold=False) == ParkBehind(head="e1", topic=DLQ)
    durable = confirmed(chain, "e1", hop)
    assert [(link.event_id, link.state) for link in durable] == [
        ("e1", "dead_lettered"), ("e2", "waiting")]
    assert place(durable, "e2") == FollowToDeadLetter(head="e1")
    assert confirmed(chain, "e1", hop, hold=False) == [_link("e2")]
    assert confirmed(chain, "e1", Position(T5, 0, 3)) == chain  # another hop's: not this one
    assert confirmed([_link("e1")], "e1", hop) == [_link("e1")]  # processed again meanwhile
    assert left(chain, "e1", "dead_lettered") == [_link("e2")]  # a discard proves it durable


def test_join_keeps_a_known_origin() -> None:
    first = Link(event_id="e1", topic=T5, parked_at_ms=1, origin=Position("m", 0, 3))
    moved = joined([first], Link(event_id="e1", topic=T30, parked_at_ms=9))
    assert moved == [Link(event_id="e1", topic=T30, parked_at_ms=1, origin=Position("m", 0, 3))]


def test_join_is_idempotent_and_keeps_place_and_age() -> None:
    chain = joined(joined([], _link("e1")), _link("e2"))
    again = joined(chain, Link(event_id="e1", topic=DLQ, parked_at_ms=99, state="dead_lettered"))
    assert [(link.event_id, link.topic, link.parked_at_ms) for link in again] == [
        ("e1", DLQ, 1), ("e2", T5, 1)]
    assert left(again, "e1") == [_link("e2")]
    assert left(again, "absent") == again
    assert left(again, "e2", "dead_lettered") == again  # a waiting link is not released
    assert left(again, "e1", "dead_lettered") == [_link("e2")]


def test_a_parked_record_routes_from_its_own_attempts() -> None:
    policy = RetryPolicy(main_topic="clinic.events", delays_ms=(5_000, 30_000))
    assert parked_source(policy, 1) == "clinic.events"
    assert parked_source(policy, 2) == T5
    assert parked_source(policy, 3) == T30
    assert park_tier(policy, T30).topic == T30
    assert park_tier(policy, "clinic.events.retry.1h").topic == T5  # a draining tier


def test_the_policy_names_its_valid_values() -> None:
    with pytest.raises(PolicyError, match="per_key, none"):
        OrderingPolicy(mode="strict")  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="hold, release"):
        OrderingPolicy(after_dead_letter="drop")  # type: ignore[arg-type]
