"""The consumer process's garbage-collector setting: raised young threshold, nothing else."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from consumer.cli.gc_tuning import YOUNG_GENERATION_THRESHOLD, tune_for_streaming
from consumer.cli.main import main


@pytest.fixture(autouse=True)
def restore_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_raises_cpythons_young_threshold_and_keeps_the_older_generations() -> None:
    gc.set_threshold(700, 11, 12)
    tune_for_streaming()
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, 11, 12)


def test_keeps_a_higher_threshold_set_by_the_embedding_program() -> None:
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD * 5, 10, 10)
    tune_for_streaming()
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD * 5, 10, 10)


def test_leaves_a_disabled_collector_disabled() -> None:
    """Threshold 0 means automatic collection is off; raising it would turn it back on."""
    gc.set_threshold(0, 10, 10)
    tune_for_streaming()
    assert gc.get_threshold() == (0, 10, 10)


def test_cyclic_garbage_is_still_collected_automatically() -> None:
    """The collector is slowed down, not switched off: cycles go once the threshold passes."""
    tune_for_streaming()
    assert gc.isenabled()

    class Node:
        def __init__(self) -> None:
            self.me = self

    collected: list[int] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collected.append(info["collected"])

    gc.collect()
    gc.callbacks.append(on_gc)
    try:
        for _ in range(YOUNG_GENERATION_THRESHOLD * 3):
            Node()
    finally:
        gc.callbacks.remove(on_gc)
    assert collected, "no automatic collection ran"
    assert sum(collected) > 0


def test_clinic_events_run_applies_it_before_building_the_consumer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped at start-up by an unreachable store, ``run`` has already tuned the collector."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    config = tmp_path / "clinic-events.toml"
    config.write_text('[dedup]\nstore = "redis://127.0.0.1:1/0"\n')
    gc.set_threshold(700, 10, 10)
    result = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, 10, 10)
