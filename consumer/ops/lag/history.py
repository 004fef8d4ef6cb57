"""Earlier lag samples, kept in the state folder so a single ``lag`` run can see a trend.

Why: growth and stall are statements about *change*, and a cron job runs ``clinic-events lag``
once per invocation. Each run appends its sample's (committed, lag) per partition to
``lag-history.json`` in the state folder (``--state-dir``, else ``$CLINIC_EVENTS_STATE_DIR``,
else ``.clinic-events``) and compares with the samples that fall within the window.

Samples are keyed by consumer group and main topic, so several configurations can share one
state folder. Points older than the window (and beyond the newest 500) are dropped on write.
The file is replaced atomically; an unreadable file is treated as empty, because losing trend
history must never stop the command from reporting the current state.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from consumer.ops.lag.model import HistoryPoint

FILE_NAME = "lag-history.json"
MAX_POINTS = 500
_VERSION = 1


def default_history_file(state_dir: Path | None = None) -> Path:
    """``<state dir>/lag-history.json``; the state dir defaults like the local broker's."""
    base = state_dir or Path(os.environ.get("CLINIC_EVENTS_STATE_DIR", ".clinic-events"))
    return base / FILE_NAME


def points_to_json(points: list[HistoryPoint]) -> list[dict[str, Any]]:
    return [
        {"at": point.taken_at_ms,
         "p": [[topic, partition, committed, lag]
               for (topic, partition), (committed, lag) in sorted(point.offsets.items())]}
        for point in points
    ]


def points_from_json(raw: object) -> list[HistoryPoint]:
    """Parse points written by :func:`points_to_json`; malformed entries are skipped."""
    points: list[HistoryPoint] = []
    if not isinstance(raw, list):
        return points
    for entry in raw:
        try:
            offsets = {(str(t), int(p)): (None if c is None else int(c), int(lag))
                       for t, p, c, lag in entry["p"]}
            points.append(HistoryPoint(taken_at_ms=int(entry["at"]), offsets=offsets))
        except (KeyError, TypeError, ValueError):
            continue
    return points


class HistoryFile:
    """The history of one (group, main topic) inside the shared JSON file."""

    def __init__(self, path: Path, *, group: str, main_topic: str) -> None:
        self.path = path
        self._key = f"{group}|{main_topic}"

    def _read_all(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(document, dict) or document.get("version") != _VERSION:
            return {}
        groups = document.get("groups")
        return groups if isinstance(groups, dict) else {}

    def load(self) -> list[HistoryPoint]:
        return points_from_json(self._read_all().get(self._key))

    def append(self, point: HistoryPoint, *, keep_ms: int) -> None:
        """Add ``point``, drop points older than ``keep_ms`` before it, and save atomically."""
        groups = self._read_all()
        points = [p for p in points_from_json(groups.get(self._key))
                  if point.taken_at_ms - keep_ms <= p.taken_at_ms < point.taken_at_ms]
        points = [*points, point][-MAX_POINTS:]
        groups[self._key] = points_to_json(points)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".lag-history.")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump({"version": _VERSION, "groups": groups}, out, separators=(",", ":"))
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
