"""The demo's closing hint works after the demo: a broker it stopped must be started again."""

from __future__ import annotations

from pathlib import Path

from consumer.cli.demo import inspect_dead_letters


def test_the_hint_starts_the_broker_again_when_the_demo_stopped_it() -> None:
    config = Path(".clinic-events/demo.toml")
    assert inspect_dead_letters(config, broker_stops=True) == (
        "clinic-events kafka start, then clinic-events dlq list --config .clinic-events/demo.toml")
    assert inspect_dead_letters(config, broker_stops=False) == (
        "clinic-events dlq list --config .clinic-events/demo.toml")
