"""Fixtures shared by unit tests."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest


@pytest.fixture
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``OTEL_*`` variable from the developer's shell leaks into a telemetry test."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Commands configure the ``clinic_events`` and ``opentelemetry`` loggers (handler on the
    stream of that moment, no propagation); undo it so no later test logs into a closed
    CliRunner stream or misses records in ``caplog``."""
    loggers = [logging.getLogger(name) for name in ("clinic_events", "opentelemetry")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:], lg.propagate = handlers, propagate
        lg.setLevel(level)
