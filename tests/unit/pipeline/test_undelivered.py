"""Seek backs: a sought-back partition's position is trusted again only once its head returns."""

from __future__ import annotations

from consumer.pipeline.undelivered import SeekBacks


def test_a_seek_back_is_confirmed_by_the_head_or_an_earlier_offset_coming_back() -> None:
    seek_backs = SeekBacks()
    assert not seek_backs
    seek_backs.sought(("t.retry.5s", 0), 40)
    assert ("t.retry.5s", 0) in seek_backs
    seek_backs.delivered(("t.retry.5s", 0), 41)  # fetched before the seek: confirms nothing
    seek_backs.delivered(("t.retry.5s", 1), 3)  # another partition: confirms nothing
    assert ("t.retry.5s", 0) in seek_backs
    seek_backs.delivered(("t.retry.5s", 0), 40)
    assert ("t.retry.5s", 0) not in seek_backs
    assert not seek_backs


def test_a_new_seek_back_replaces_the_old_head_and_revocation_forgets_it() -> None:
    seek_backs = SeekBacks()
    seek_backs.sought(("t.retry.5s", 0), 40)
    seek_backs.sought(("t.retry.5s", 0), 45)
    seek_backs.delivered(("t.retry.5s", 0), 44)
    assert ("t.retry.5s", 0) not in seek_backs
    seek_backs.sought(("t.retry.5s", 2), 7)
    seek_backs.forget(("t.retry.5s", 2))
    assert ("t.retry.5s", 2) not in seek_backs
