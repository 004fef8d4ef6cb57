"""Parked keys in the dedup store: per record key, the chain of its outstanding events.

Why here and not in a compacted topic: the dedup store is already the durable store the
consumer consults once per chunk, shared by every instance (Redis) or every process on a
host (SQLite), and it survives crashes, restarts and rebalances. Whether an event may be
delivered must be answered when the event is examined, reading what any instance wrote a
moment ago; a compacted topic is read asynchronously and cannot give that across instances.
The reasoning is in ``docs/ordering.md``; the rules (``place``, ``joined``, ``left``,
``live``) are pure, in :mod:`retry_topics.ordering`.

Every store implements :class:`ChainStore` with the same rules:

* ``chains(keys)`` answers a whole chunk's keys in one round trip (keys without a chain are
  absent) and leaves out links older than the ttl;
* ``join(key, link)`` appends, or updates the event's link in place: idempotent, so a crash
  and a second look at the same record are harmless;
* ``leave(key, event_id, state=None)`` removes it (nothing if absent; with ``state``,
  only a link in that state: ``dlq discard`` releases dead-lettered links only);
* ``confirm_dead_letter(key, event_id, hop, hold)`` applies ``retry_topics.ordering.
  confirmed``: a ``dead_lettering`` link whose DLQ hop (from record ``hop``) is durable
  becomes ``dead_lettered`` (or leaves, under ``release``), atomically;
* ``parked_summary()`` counts parked keys (an event waiting behind another, or a head held
  in the DLQ: :func:`summarise`) and the oldest of their links' join times.

A key is stored as text (:func:`entity_key`): valid UTF-8 keys as they are (readable in
``redis-cli``), any other bytes as NUL + hex, which no UTF-8 key of the first kind starts with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from retry_topics.ordering import LINK_STATES, Link, LinkState, Position

__all__ = ["ChainStore", "ParkedSummary", "decode_chain", "encode_chain", "entity_key",
           "summarise"]

_BINARY_MARK = "\x00"


def entity_key(key: bytes) -> str:
    """The text a record key is stored under (one-to-one)."""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return _BINARY_MARK + key.hex()
    return _BINARY_MARK + key.hex() if text.startswith(_BINARY_MARK) else text


@dataclass(frozen=True, slots=True)
class ParkedSummary:
    """Keys whose events wait behind an outstanding one, and when the oldest link joined."""

    keys: int = 0
    oldest_parked_at_ms: int | None = None


def summarise(chains: Sequence[Sequence[Link]]) -> ParkedSummary:
    """The summary of live chains: a key counts as parked only when something of it waits.

    That is when an event waits behind another (a chain of two or more links), or when its
    head is no longer merely waiting in a tier but held on its way to or in the DLQ (under
    ``after_dead_letter = "hold"`` the key's new events will wait behind it). A lone event
    waiting in a retry tier holds nothing back: its key is not parked. The oldest join time
    is that of the parked keys' links (the head's: how long the key has been held).
    """
    parked = [chain for chain in chains
              if len(chain) > 1 or (chain and chain[0].state != "waiting")]
    oldest = min((link.parked_at_ms for chain in parked for link in chain), default=None)
    return ParkedSummary(len(parked), oldest)


class ChainStore(Protocol):
    """The chain half of the dedup store (see the module docstring)."""

    def chains(self, keys: Sequence[str]) -> dict[str, list[Link]]:
        """The live chains of ``keys``; keys without one are absent."""

    def may_have_chains(self) -> bool:
        """False only if no key had a chain at the last ``refresh_chains`` nor since by this
        handle's own changes: answered from memory (no round trip), so the pipeline skips
        ``chains`` for most chunks."""

    def refresh_chains(self) -> None:
        """Take in what other processes changed, for ``may_have_chains`` (at most one
        round trip). The pipeline calls it after every consume that returned records, so
        the answer for a record is at least as fresh as its consumption: a chain another
        process made before the record was produced is seen."""

    def join(self, key: str, link: Link) -> None:
        """Append ``link`` to ``key``'s chain, or update the event's link where it stands."""

    def leave(self, key: str, event_id: str, state: LinkState | None = None) -> None:
        """Take ``event_id`` out of ``key``'s chain; with ``state``, only if its link is
        in that state (checked and changed atomically)."""

    def confirm_dead_letter(self, key: str, event_id: str, hop: Position, *,
                            hold: bool = True) -> None:
        """The DLQ hop of ``event_id`` from record ``hop`` is durable: its link, if still
        ``dead_lettering`` for that hop, becomes ``dead_lettered`` (``hold``) or leaves."""

    def parked_summary(self) -> ParkedSummary:
        """How many keys are parked (:func:`summarise`), and their oldest ``parked_at_ms``."""


def encode_chain(chain: Sequence[Link]) -> str:
    """A chain as compact JSON: ``[[event_id, topic, parked_at_ms, state], ...]``, then,
    if any link has them, ``{"x": {event_id: {"o": origin, "h": hop, "s": state}}}``
    (positions as ``[topic, partition, offset]``).

    Why a trailing object and not longer rows: a reader that predates it (an instance not
    yet upgraded) skips it and keeps every link, reading each as it did before (origin
    unknown); longer rows it would drop, and a write of its own would lose them for good.
    For the same reason a ``dead_lettering`` link's row says ``dead_lettered`` (what such a
    reader knew) and the object says ``dead_lettering``.
    """
    rows: list[object] = [[link.event_id, link.topic, link.parked_at_ms,
                           "dead_lettered" if link.state == "dead_lettering" else link.state]
                          for link in chain]
    extras = {link.event_id: _extras(link) for link in chain
              if link.origin is not None or link.hop is not None}
    if extras:
        rows.append({"x": extras})
    return json.dumps(rows, separators=(",", ":"))


def _extras(link: Link) -> dict[str, object]:
    extras: dict[str, object] = {}
    for name, position in (("o", link.origin), ("h", link.hop)):
        if position is not None:
            extras[name] = [position.topic, position.partition, position.offset]
    if link.state == "dead_lettering":
        extras["s"] = link.state
    return extras


def decode_chain(text: str | bytes) -> list[Link]:
    """The chain ``encode_chain`` wrote; a malformed link is dropped, never fatal (a stale
    or foreign value must not stop the consumer: the key then simply waits for nothing).
    A link without extras (or with malformed ones) has no origin."""
    try:
        rows = json.loads(text)
    except ValueError:
        return []
    if not isinstance(rows, list):
        return []
    tail = rows[-1] if rows else None
    extras = tail.get("x") if isinstance(tail, dict) else None
    if not isinstance(extras, dict):
        extras = {}
    chain: list[Link] = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 4 and row[3] in LINK_STATES):
            continue
        extra = extras.get(str(row[0]))
        state: LinkState = row[3]
        hop = _position(extra, "h")
        if state == "dead_lettered" and hop is not None and isinstance(extra, dict) \
                and extra.get("s") == "dead_lettering":
            state = "dead_lettering"
        try:
            chain.append(Link(event_id=str(row[0]), topic=str(row[1]),
                              parked_at_ms=int(row[2]), state=state,
                              origin=_position(extra, "o"), hop=hop))
        except (TypeError, ValueError):
            continue
    return chain


def _position(extra: object, field: str) -> Position | None:
    """``extra[field]`` as a :class:`Position`, or None if absent or malformed."""
    value = extra.get(field) if isinstance(extra, dict) else None
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)
            and all(isinstance(n, int) and not isinstance(n, bool) for n in value[1:])):
        return None
    return Position(value[0], value[1], value[2])
