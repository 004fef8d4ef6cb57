"""Structured outcome lines, so operators can grep a single event's story.

Which outcome is logged at which level is a choice between throughput and detail: at the
default INFO level one line per delivered event halved a quick pipeline's throughput, and
a healthy stream's delivered lines tell an operator nothing. So every outcome that needs
attention has its own line (``retried`` at INFO, ``dead_lettered`` at WARNING), the happy
ones (``delivered``, ``duplicate``) have theirs at DEBUG, and at INFO a summary line counts
every outcome once per ``SUMMARY_INTERVAL_S`` (``OutcomeSummary``).

Lines carry the event id, topic, partition, offset, attempt and error class, never payload
fields (they hold PHI). An undecodable record's id and type are those its headers state
(what ``dlq show`` displays), so grepping an event id finds its dead letter's line too.
When stderr is not a terminal each line is one JSON object (for log shippers); on a
terminal it is ``key=value`` text. The logger is ``clinic_events.outcome``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from consumer.observability.printable import printable
from consumer.pipeline.records import InboundRecord

LOGGER = logging.getLogger("clinic_events.outcome")
SUMMARY_INTERVAL_S = 10.0
#: The per-event line's level of each outcome.
OUTCOME_LEVEL: Mapping[str, int] = {"delivered": logging.DEBUG, "duplicate": logging.DEBUG,
                                    "retried": logging.INFO, "parked": logging.INFO,
                                    "dead_lettered": logging.WARNING}
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        document.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class TextFormatter(logging.Formatter):
    """``time level msg key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.getMessage()} {extras}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    """Send application logs to stderr, JSON unless stderr is a terminal."""
    use_json = not sys.stderr.isatty() if json_lines is None else json_lines
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger("clinic_events")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # The OpenTelemetry SDK and exporters warn through Python logging too ("Failed to
    # export ..."): the same handler keeps stderr one format for log shippers.
    otel = logging.getLogger("opentelemetry")
    otel.handlers[:] = [handler]
    otel.setLevel(logging.WARNING)
    otel.propagate = False


def outcome_logging_enabled(level: int) -> bool:
    """Whether outcome lines at ``level`` are written (asked once per batch, not per event)."""
    return LOGGER.isEnabledFor(level)


def log_outcome(outcome: str, record: InboundRecord, *, error_class: str | None = None,
                destination: str | None = None, behind: str | None = None) -> None:
    """Log what happened to one record (delivered, duplicate, retried, parked,
    dead_lettered), at the outcome's level (``OUTCOME_LEVEL``).

    A record moved behind an earlier event of its key (``behind``) says so in the message,
    "parked behind <event_id>", and in a ``parked_behind`` field.
    """
    level = OUTCOME_LEVEL[outcome]
    if not LOGGER.isEnabledFor(level):
        return
    event_id, event_type = record.event_id, record.event_type
    if event_id is None:  # rare: an undecodable value's id is what its headers state
        stated_id, stated_type = record.stated_identity()  # header text from anywhere:
        event_id = None if stated_id is None else printable(stated_id)  # no forged lines
        event_type = None if stated_type is None else printable(stated_type)
    message = outcome
    if behind is not None:
        message = f"parked behind {printable(behind)}" if outcome == "parked" else \
            f"{outcome}: parked behind {printable(behind)}"
    LOGGER.log(level, message, extra={
        "outcome": outcome,
        "event_id": event_id,
        "event_type": event_type,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "attempt": record.attempt,
        "error_class": error_class,
        "destination": destination,
        **({"parked_behind": printable(behind)} if behind is not None else {}),
    })


class OutcomeSummary:
    """Counts outcomes and logs them at INFO once per ``interval_s`` (none: no line).

    ``note`` is called with every counted outcome; ``tick`` with the monotonic time on each
    pass of the run loop, and at shutdown with ``final=True`` so the last counts are told.
    """

    def __init__(self, started_s: float, interval_s: float = SUMMARY_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._since_s = started_s
        self._counts: Counter[str] = Counter()

    def note(self, outcome: str, count: int = 1) -> None:
        self._counts[outcome] += count

    def tick(self, now_s: float, *, final: bool = False) -> None:
        if not final and now_s - self._since_s < self._interval_s:
            return
        counts, self._counts = self._counts, Counter()
        elapsed_s, self._since_s = now_s - self._since_s, now_s
        if counts and LOGGER.isEnabledFor(logging.INFO):
            LOGGER.info("outcomes", extra={
                "summary_s": round(elapsed_s, 1),
                **{outcome: counts[outcome] for outcome in OUTCOME_LEVEL}})
