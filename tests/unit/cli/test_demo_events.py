"""Which events the demo publishes when ``--events`` is not given."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.cli.demo import DEFAULT_EVENTS, _events_file

REPO = Path(__file__).resolve().parents[3]


def test_outside_a_clone_the_demo_publishes_the_example_events_shipped_with_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no examples/ here, as after `pip install clinic-events`
    chosen = _events_file(None)
    assert chosen.name == "demo_events.jsonl"
    assert chosen.read_bytes() == (REPO / "examples" / "events.jsonl").read_bytes()


def test_in_a_clone_it_publishes_examples_events_jsonl_and_a_given_file_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "examples").mkdir()
    (tmp_path / DEFAULT_EVENTS).write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    assert _events_file(None) == DEFAULT_EVENTS
    given = tmp_path / "mine.jsonl"
    assert _events_file(given) == given
