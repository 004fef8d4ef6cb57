"""Parked keys as ``lag`` shows them: the ``parked`` member of ``--json``, the text line, and
where the figures come from (the dedup store's ``parked_summary``)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from rich.console import Console

from consumer.cli import lag
from consumer.config.settings import Settings, load_settings
from consumer.dedup.chains import ParkedSummary
from consumer.dedup.sqlite import SqliteDedupStore
from consumer.ops.lag.model import GroupReport
from consumer.ops.lag.parked import (
    ParkedKeys,
    ParkedReading,
    ParkedUnknown,
    parked_keys,
    parked_to_json,
    read_parked,
)
from retry_topics.ordering import Link

REPORT = GroupReport(group="clinic-events", taken_at_ms=1_700_000_000_000, members=1, topics=())
TTL_MS = 7 * 24 * 3_600_000


def _settings(tmp_path: Path, *, mode: str = "per_key", store: str | None = None) -> Settings:
    path = tmp_path / "clinic-events.toml"
    path.write_text(f'[dedup]\nstore = "{store or f"sqlite:///{tmp_path}/dedup.sqlite3"}"\n'
                    f'[ordering]\nmode = "{mode}"\n')
    return load_settings(path, env={})


def _json_out(parked: ParkedReading, capsys: pytest.CaptureFixture[str]) -> object:
    lag._emit(REPORT, True, Console(file=io.StringIO()), parked)
    return json.loads(capsys.readouterr().out)


def _text(parked: ParkedReading) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=100).print(lag.render(REPORT, parked))
    return out.getvalue().splitlines()


def test_the_summary_becomes_a_count_and_the_oldest_links_age() -> None:
    assert parked_keys(ParkedSummary(3, 1_000), now_ms=13_000) == ParkedKeys(3, 12_000)
    assert parked_keys(ParkedSummary(), now_ms=13_000) == ParkedKeys(0, None)
    # a link written by a host whose clock runs ahead is no negative age
    assert parked_keys(ParkedSummary(1, 14_000), now_ms=13_000) == ParkedKeys(1, 0)


def test_json_has_keys_and_oldest_age_or_null_when_unknown(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert parked_to_json(ParkedKeys(3, 12_000)) == {"keys": 3, "oldest_age_ms": 12_000}
    assert parked_to_json(ParkedKeys(0, None)) == {"keys": 0, "oldest_age_ms": None}
    assert parked_to_json(None) is None
    document = _json_out(ParkedKeys(3, 12_000), capsys)
    assert isinstance(document, dict)
    assert document["parked"] == {"keys": 3, "oldest_age_ms": 12_000}
    assert document["group"] == "clinic-events"  # beside the report, not instead of it
    unknown = _json_out(None, capsys)
    assert isinstance(unknown, dict)
    assert "parked" in unknown
    assert unknown["parked"] is None  # unknown (ordering off, store unreadable) is not zero
    assert "parked_unknown" not in unknown  # ordering off: nothing to explain
    unreadable = _json_out(ParkedUnknown("dedup.store 'redis://:****@cache:6379/0' cannot be "
                                         "opened: AuthenticationError: ..."), capsys)
    assert isinstance(unreadable, dict)
    assert unreadable["parked"] is None
    assert unreadable["parked_unknown"].startswith("dedup.store 'redis://:****@cache")


def test_each_watch_sample_carries_its_own_parked_member(
        capsys: pytest.CaptureFixture[str]) -> None:
    lag._emit_sample(REPORT, True, Console(file=io.StringIO()), ParkedKeys(1, 500))
    (line,) = capsys.readouterr().out.splitlines()  # one JSON document per line
    assert json.loads(line)["parked"] == {"keys": 1, "oldest_age_ms": 500}


def test_the_text_line_says_how_many_keys_and_the_oldest_wait() -> None:
    assert "parked keys: 3, oldest waiting 12.0s" in _text(ParkedKeys(3, 12_000))
    assert "parked keys: 2, oldest waiting 5m00s" in _text(ParkedKeys(2, 300_000))
    assert "parked keys: 0" in _text(ParkedKeys(0, None))  # no age without a parked key
    assert not [line for line in _text(None) if "parked" in line]


def test_read_parked_counts_the_keys_of_the_configured_store(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = SqliteDedupStore(tmp_path / "dedup.sqlite3", TTL_MS)  # the consumer's handle
    joined_at = int(time.time() * 1000) - 12_000
    for key, event_id in (("appt-1", "e1"), ("appt-1", "e2"), ("appt-2", "e3"),
                          ("appt-2", "e4"), ("appt-3", "e5")):  # appt-3: one, waiting for none
        store.join(key, Link(event_id=event_id, topic="clinic.events.retry.5s",
                             parked_at_ms=joined_at))
    try:
        parked = read_parked(settings)
        assert isinstance(parked, ParkedKeys)
        assert parked.keys == 2
        assert parked.oldest_age_ms is not None
        assert 12_000 <= parked.oldest_age_ms < 72_000
    finally:
        store.close()


def test_read_parked_is_unknown_when_ordering_is_off_or_the_store_cannot_answer(
        tmp_path: Path) -> None:
    assert read_parked(_settings(tmp_path, mode="none")) is None
    (tmp_path / "not-a-dir").write_text("")
    unreadable = _settings(tmp_path, store=f"sqlite:///{tmp_path}/not-a-dir/dedup.sqlite3")
    assert isinstance(read_parked(unreadable), ParkedUnknown)


def test_a_store_that_does_not_exist_is_unknown_and_is_not_created(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """lag from a cron job in another folder: the relative default path names no store
    there. That is unknown (null), not 0 parked keys, and lag leaves no store behind."""
    monkeypatch.chdir(tmp_path)
    parked = read_parked(_settings(tmp_path, store="sqlite:///nodir/x.sqlite3"))
    assert isinstance(parked, ParkedUnknown)
    assert f"no store at {tmp_path}/nodir/x.sqlite3" in parked.reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clinic-events.toml"]
    assert _json_out(parked, capsys) == {**lag._document(REPORT, None), "parked": None,
                                         "parked_unknown": parked.reason}
    assert [line for line in _text(parked) if line.startswith("parked keys: unknown (")
            and "nodir/x.sqlite3" in line]
