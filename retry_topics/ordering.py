"""Order per entity across retry hops: the policy, the chain of a key, and where an event goes.

Events with the same record key (the entity: an appointment, an intake) must reach the
downstream in published order, also when one of them waits in a retry tier. Per key the
consumer keeps a **chain**: the key's events outstanding in retry tiers (or held in the DLQ),
in the order they arrived, each a :class:`Link`. :func:`place` decides, from the chain alone,
what happens to an event of that key when the consumer looks at it:

* the chain is empty, or the event is its head: :data:`PROCEED` (call the handler);
* the event was published *before* the head (its :attr:`Link.origin` precedes the head's):
  :data:`PROCEED`. A chain holds back only events published after its head; an earlier
  one seen again (a crash lost its delivered outcome after a later event had joined) is
  processed again, which the downstream's ``Idempotency-Key`` makes harmless. Parked
  behind the later head, it would reach the downstream after it, or even the DLQ;
* otherwise the event is **parked**: :class:`ParkBehind` sends it, without a handler call and
  without spending an attempt, to the tier its predecessor waits in, so it is looked at again
  after that tier's delay. Where an event sits decides only *when* it is looked at again;
  it is delivered only once it is the head;
* an event on its way to the DLQ is ``dead_lettering`` from before its hop is handed over
  until the hop is known durable (committed, or acknowledged), then ``dead_lettered``. An
  event behind a ``dead_lettering`` predecessor is parked (the DLQ hop may yet not happen:
  a kill before the commit has its record processed again);
* with ``after_dead_letter = "hold"`` a dead-lettered link stays in the chain, and an event
  whose predecessor is dead-lettered (durably) follows it to the DLQ
  (:class:`FollowToDeadLetter`): its own hop is handed over only after its predecessor's
  is durable, so followers reach the DLQ in chain order and a replay of the DLQ replays the
  chain head first. With ``"release"`` dead-lettered links count as gone.

Pure values and functions: the chain's storage is the dedup store's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from retry_topics.errors import PolicyError
from retry_topics.policy import RetryPolicy, RetryTier

__all__ = [
    "AFTER_DEAD_LETTER", "LINK_STATES", "MODES", "PROCEED", "AfterDeadLetter", "FollowToDeadLetter",
    "Link", "LinkState", "OrderingMode", "OrderingPolicy", "ParkBehind", "Placement", "Position",
    "Proceed",
    "confirmed", "joined", "left", "live", "park_tier", "parked_source", "place",
]  # fmt: skip

OrderingMode = Literal["per_key", "none"]
AfterDeadLetter = Literal["hold", "release"]
LinkState = Literal["waiting", "dead_lettering", "dead_lettered"]
MODES: tuple[OrderingMode, ...] = get_args(OrderingMode)
AFTER_DEAD_LETTER: tuple[AfterDeadLetter, ...] = get_args(AfterDeadLetter)
LINK_STATES: tuple[LinkState, ...] = get_args(LinkState)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderingPolicy:
    """``[ordering]``: whether events of a key wait for each other, and after a dead letter."""

    mode: OrderingMode = "per_key"
    after_dead_letter: AfterDeadLetter = "hold"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PolicyError(f"ordering mode must be one of {', '.join(MODES)}, "
                              f"got {self.mode!r}")
        if self.after_dead_letter not in AFTER_DEAD_LETTER:
            raise PolicyError(f"ordering after_dead_letter must be one of "
                              f"{', '.join(AFTER_DEAD_LETTER)}, got {self.after_dead_letter!r}")

    @property
    def per_key(self) -> bool:
        return self.mode == "per_key"

    @property
    def hold(self) -> bool:
        return self.after_dead_letter == "hold"


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record is in a topic: ``topic``, ``partition``, ``offset``."""

    topic: str
    partition: int
    offset: int

    def precedes(self, other: Position) -> bool:
        """Published before ``other`` in the same partition (else: not known to precede)."""
        return self.offset < other.offset and self.partition == other.partition and \
            self.topic == other.topic


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """One outstanding event of a key: where it waits, since when, and whether it is in the DLQ.

    ``parked_at_ms`` is when it joined the chain (kept when it moves on); the link expires
    ``ttl`` after it, like a dedup outcome, so stale state never blocks a key for ever.
    ``origin`` is where the event's first record is in the main topic (the record's own
    position, or its ``clinic.original-*`` headers once it hopped); None where unknown (a
    link written before origins were kept): such a link holds back every other event.
    ``hop`` is, for a ``dead_lettering`` link, the record whose DLQ hop it waits for: that
    hop is durable once the group's committed offset of its partition is past it.
    """

    event_id: str
    topic: str
    parked_at_ms: int
    state: LinkState = "waiting"
    origin: Position | None = None
    hop: Position | None = None

    def __post_init__(self) -> None:
        if not self.event_id:
            raise PolicyError("a link needs an event id")
        if self.state not in LINK_STATES:
            raise PolicyError(f"link state must be one of {LINK_STATES}, got {self.state!r}")


@dataclass(frozen=True, slots=True)
class Proceed:
    """The event is the head of its key's chain (or the chain is empty): handle it."""


PROCEED = Proceed()


@dataclass(frozen=True, slots=True, kw_only=True)
class ParkBehind:
    """Park the event in ``topic`` (its predecessor's tier); ``head`` is the event waited on."""

    head: str
    topic: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowToDeadLetter:
    """The event's predecessor is dead-lettered and held: the event follows it to the DLQ."""

    head: str


Placement = Proceed | ParkBehind | FollowToDeadLetter


def place(chain: Sequence[Link], event_id: str, *, hold: bool = True,
          origin: Position | None = None) -> Placement:
    """Where ``event_id`` goes, given its key's ``chain`` (see the module docstring).

    An event not in the chain is a new one: it goes behind the tail, unless its ``origin``
    precedes the head's (an earlier event, seen again). Under ``release`` (``hold`` False)
    dead-lettered links are ignored.
    """
    links = chain if hold else [link for link in chain if link.state != "dead_lettered"]
    if not links:
        return PROCEED
    head_origin = links[0].origin
    if origin is not None and head_origin is not None and origin.precedes(head_origin):
        return PROCEED
    position = next((i for i, link in enumerate(links) if link.event_id == event_id),
                    len(links))
    if position == 0:
        return PROCEED
    predecessor, head = links[position - 1], links[0].event_id
    if predecessor.state == "dead_lettered":
        return FollowToDeadLetter(head=head)
    return ParkBehind(head=head, topic=predecessor.topic)


def joined(chain: Sequence[Link], link: Link) -> list[Link]:
    """``chain`` with ``link`` appended, or, if its event is in it already, that link updated
    in place (topic and state; its place, ``parked_at_ms`` and a known ``origin`` are kept).
    Idempotent: a crash and a second look at the same record change nothing more."""
    for i, existing in enumerate(chain):
        if existing.event_id == link.event_id:
            moved = Link(event_id=link.event_id, topic=link.topic,
                         parked_at_ms=existing.parked_at_ms, state=link.state,
                         origin=existing.origin or link.origin, hop=link.hop)
            return [*chain[:i], moved, *chain[i + 1:]]
    return [*chain, link]


def left(chain: Sequence[Link], event_id: str, state: LinkState | None = None) -> list[Link]:
    """``chain`` without ``event_id`` (unchanged if it is not in it); with ``state``, only
    if its link is in that state (an operator's discard releases a dead-lettered link only,
    never one whose event is waiting in a tier again). ``dead_lettered`` takes a
    ``dead_lettering`` link too: a discarded DLQ record proves its hop durable."""
    states = ("dead_lettering", "dead_lettered") if state == "dead_lettered" else (state,)
    return [link for link in chain
            if link.event_id != event_id or (state is not None and link.state not in states)]


def confirmed(chain: Sequence[Link], event_id: str, hop: Position, *,
              hold: bool = True) -> list[Link]:
    """``chain`` once the DLQ hop of ``event_id`` from record ``hop`` is durable: its link,
    if still ``dead_lettering`` for that hop, becomes ``dead_lettered`` (``hold``) or leaves
    (``release``). A link changed since (the record processed again: delivered, retried,
    or dead-lettered from another record) is left as it is."""
    out: list[Link] = []
    for link in chain:
        if link.event_id != event_id or link.state != "dead_lettering" or link.hop != hop:
            out.append(link)
        elif hold:
            out.append(Link(event_id=link.event_id, topic=link.topic,
                            parked_at_ms=link.parked_at_ms, state="dead_lettered",
                            origin=link.origin))
    return out


def live(chain: Sequence[Link], cutoff_ms: int) -> list[Link]:
    """The links of ``chain`` that joined after ``cutoff_ms`` (now minus the ttl)."""
    return [link for link in chain if link.parked_at_ms > cutoff_ms]


def park_tier(policy: RetryPolicy, topic: str) -> RetryTier:
    """The configured tier to park an event in, behind a predecessor waiting in ``topic``.

    A predecessor in a tier no longer configured (draining, never published to) or anywhere
    else: the first tier, so the event is looked at again soon.
    """
    return next((tier for tier in policy.tiers if tier.topic == topic), policy.tiers[0])


def parked_source(policy: RetryPolicy, attempt: int) -> str:
    """The topic a parked record's own attempt ``attempt`` counts as made from, for routing.

    A parked record sits in whatever tier its predecessor was in, with its own attempt count
    unchanged; when it becomes the head and fails, it must go on to the tier after its own
    attempts (attempt 1: the main topic's), not after the tier it was parked in.
    """
    if attempt <= 1:
        return policy.main_topic
    return policy.tiers[min(attempt, len(policy.tiers) + 1) - 2].topic
