"""A librdkafka client logger that passes each distinct line on once and counts repeats.

While a broker is unreachable librdkafka logs the same connect failure every few
milliseconds, and a client hands its log lines over only when polled or closed: a single
30 s metadata request of a ``dlq`` command used to end in some 580 identical lines.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from consumer.config.settings import KAFKA_CLIENT_LOGGER

REPEAT_LOG_INTERVAL_S = 60.0  # a repeated client log line is logged again, counted, after this

#: Parts of a client log line that differ between repeats of the same event.
_VARYING = re.compile(r"after \d+ms")


@dataclass(slots=True)
class _Repeats:
    logged_at: float
    text: str
    count: int = 0


class ClientLog:
    """The ``logger`` of a dlq command's Kafka client: each distinct line once, repeats counted.

    While a broker is unreachable librdkafka logs the same connect failure every few
    milliseconds, and a client hands its log lines over only when polled or closed: one
    30 s metadata request used to end in some 580 identical lines. The first line of each
    kind is logged; its repeats are counted and reported with the next one once
    :data:`REPEAT_LOG_INTERVAL_S` has passed, and by :meth:`close` (after the client's own
    close, which hands over the last lines).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logging.getLogger(KAFKA_CLIENT_LOGGER)
        self._clock = clock
        self._kinds: dict[tuple[int, str], _Repeats] = {}

    def log(self, level: int, msg: str, *args: object) -> None:
        """What confluent-kafka calls for every librdkafka log line."""
        text = msg % args if args else msg
        kind, now = (level, _VARYING.sub("after ...ms", text)), self._clock()
        seen = self._kinds.get(kind)
        if seen is None:
            self._kinds[kind] = _Repeats(logged_at=now, text=text)
            self._logger.log(level, "%s", text)
        elif now - seen.logged_at >= REPEAT_LOG_INTERVAL_S:
            self._logger.log(level, "%s (and %d times before in %.0f s)", text, seen.count,
                             now - seen.logged_at)
            seen.logged_at, seen.count = now, 0
        else:
            seen.count, seen.text = seen.count + 1, text

    def close(self) -> None:
        """Report the repeats not reported yet."""
        for (level, _), seen in self._kinds.items():
            if seen.count:
                self._logger.log(level, "%s (repeated %d more times)", seen.text, seen.count)
        self._kinds.clear()
