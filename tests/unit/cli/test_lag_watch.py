"""``lag --watch`` away from a terminal: every sample is printed, none overwritten."""

from __future__ import annotations

import io
import itertools
from typing import Any

import pytest
from rich.console import Console

from consumer.cli import lag


def test_watch_into_a_pipe_or_a_log_prints_every_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """A table refreshed in place needs a terminal; a pipe kept only the last sample."""
    samples = itertools.count(1)
    monkeypatch.setattr(lag, "_take", lambda *_args, **_kwargs: next(samples))
    monkeypatch.setattr(lag, "render", lambda report, _parked=None: f"sample {report}")
    out = io.StringIO()
    unused: Any = None
    lag._watch(unused, unused, unused, as_json=False, console=Console(file=out, width=80),
               interval_ms=0, count=3)
    assert out.getvalue().splitlines() == ["sample 1", "sample 2", "sample 3"]
