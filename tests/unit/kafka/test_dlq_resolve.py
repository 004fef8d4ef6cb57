"""How ``dlq replay`` and ``dlq discard`` decide, without a broker: the dedup store they
open, and which records a replay takes along (a scripted DLQ reader, no writer: a dry run,
or a writer that records what it is handed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.config.settings import Settings, load_settings
from consumer.dedup.store import DedupStoreMissing
from consumer.kafka.dlq_io import DiscardRequest, ReplayRun, _chain_store, _outcome_store
from consumer.ops.dlq.model import DlqFilter

MAIN = "clinic.events"


def _settings(tmp_path: Path, store: str) -> Settings:
    path = tmp_path / "clinic-events.toml"
    path.write_text(f'[dedup]\nstore = "{store}"\n')
    return load_settings(path, env={})


def test_a_replay_without_the_store_checks_no_outcome_says_so_and_creates_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dlq replay (and --dry-run) from another folder: the relative store path names no
    file there. The replay goes on without the already-delivered check and says so, and
    leaves no empty store behind."""
    monkeypatch.chdir(tmp_path)
    run = ReplayRun()
    assert _outcome_store(_settings(tmp_path, "sqlite:///nodir/x.sqlite3"), run) is None
    (note,) = run.notes
    assert f"no store at {tmp_path}/nodir/x.sqlite3 (relative to the current folder)" in note
    assert "whether events were delivered already was not checked" in note
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clinic-events.toml"]


def test_a_discard_refuses_a_store_that_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A discard releases its records' chain links in the store; in a new, empty one that
    would leave the consumer's keys held, so it stops first (exit 2), creating nothing."""
    monkeypatch.chdir(tmp_path)
    request = DiscardRequest(dlq_topic=f"{MAIN}.dlq", ledger_topic=f"{MAIN}.dlq-ledger",
                             audit_topic=f"{MAIN}.audit", filter=DlqFilter(), reason="test")
    settings = _settings(tmp_path, "sqlite:///nodir/x.sqlite3")
    with pytest.raises(DedupStoreMissing, match="no store at"):
        _chain_store(settings, request, writer=object())  # type: ignore[arg-type]
    assert not (tmp_path / "nodir").exists()
