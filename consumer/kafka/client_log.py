"""librdkafka client loggers that pass each distinct line on once and count repeats.

While a broker is unreachable librdkafka logs the same connect failure every few
milliseconds, and a client hands its log lines over only when polled or closed: a single
30 s metadata request of a ``dlq`` command used to end in some 580 identical lines.
``ClientLog`` serves the short-lived clients of the admin commands; ``ConnectionLog`` the
long-lived consumer and producer of ``run``, which live through broker outages.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError

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

    def __init__(self, clock: Callable[[], float] = time.monotonic, *,
                 reported: re.Pattern[str] | None = None) -> None:
        self._logger = logging.getLogger(KAFKA_CLIENT_LOGGER)
        self._clock = clock
        self._kinds: dict[tuple[int, str], _Repeats] = {}
        self._reported = reported

    def log(self, level: int, msg: str, *args: object) -> None:
        """What confluent-kafka calls for every librdkafka log line.

        Lines matching ``reported`` are logged at INFO at most: the caller reports what they
        say itself, in plain words, and librdkafka's CRITICAL would page someone for it.
        """
        text = msg % args if args else msg
        if self._reported is not None and self._reported.search(text):
            level = min(level, logging.INFO)
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


#: A client log line saying a broker connection failed or was lost.
_CONNECTION_LOST = re.compile(r"Connect to .* failed|Disconnected|brokers are down|"
                              r"Receive failed|Send failed|Failed to resolve|timed out")


class ConnectionLog:
    """The ``logger``, ``error_cb`` and ``stats_cb`` of ``run``'s consumer and producer.

    While the broker is down librdkafka logs a failed connect per broker connection every
    few hundred milliseconds, and reports each as an error too: a 6-10 s broker restart
    used to cost every ``run`` instance 143-239 ERROR lines. Here the first connection
    failure is logged as one line saying Kafka is unreachable; every client line after it
    is counted, not logged (a reminder with the count every :data:`REPEAT_LOG_INTERVAL_S`),
    until the client's statistics (``statistics.interval.ms``, :data:`STATS_INTERVAL_MS`)
    show a broker connection up again: then one line says Kafka is back, with the count.
    Lines outside an outage go through a :class:`ClientLog` (each distinct one once).
    """

    #: How often the client hands over its statistics: how soon "back" is noticed.
    STATS_INTERVAL_MS = 1000

    def __init__(self, kind: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._kind = kind
        self._logger = logging.getLogger(KAFKA_CLIENT_LOGGER)
        self._clock = clock
        self._others = ClientLog(clock)
        self._down_since: float | None = None
        self._reminded_at = 0.0
        self.suppressed = 0

    @property
    def unreachable(self) -> bool:
        return self._down_since is not None

    def log(self, level: int, msg: str, *args: object) -> None:
        """What confluent-kafka calls for every librdkafka log line."""
        text = msg % args if args else msg
        if self._down_since is None and not _CONNECTION_LOST.search(text):
            self._others.log(level, "%s", text)
        elif level >= logging.ERROR or self._down_since is not None:
            self._count(text)
        else:  # a connection closed (idle, or by the broker), not yet a failure to connect
            self._others.log(level, "%s", text)

    def on_error(self, error: KafkaError) -> None:
        """The ``error_cb``: a connection error is one more suppressed line; others logged."""
        text = str(error.str())
        if _CONNECTION_LOST.search(text) or error.code() in (KafkaError._TRANSPORT,
                                                               KafkaError._ALL_BROKERS_DOWN):
            self._count(text)
        else:
            self._others.log(logging.ERROR if error.fatal() else logging.WARNING,
                             "%s: %s", self._kind, text)

    def on_stats(self, stats_json: str) -> None:
        """The ``stats_cb``: a broker connection up again ends an outage."""
        if self._down_since is None:
            return
        brokers = json.loads(stats_json).get("brokers", {})
        if any(broker.get("state") == "UP" for broker in brokers.values()):
            now = self._clock()
            self._logger.warning(
                "Kafka is reachable again (%s): %d client line(s) suppressed in %.0f s",
                self._kind, self.suppressed, now - self._down_since)
            self._down_since, self.suppressed = None, 0

    def _count(self, text: str) -> None:
        now = self._clock()
        if self._down_since is None:
            self._down_since = self._reminded_at = now
            self._logger.error("Kafka is unreachable (%s): %s (further client lines are "
                               "counted until it is back)", self._kind, text)
            return
        self.suppressed += 1
        if now - self._reminded_at >= REPEAT_LOG_INTERVAL_S:
            self._reminded_at = now
            self._logger.error("Kafka is still unreachable (%s) after %.0f s: %d client "
                               "line(s) suppressed so far", self._kind, now - self._down_since,
                               self.suppressed)

    def close(self) -> None:
        """Say how many lines the outage suppressed if it has not ended; report repeats."""
        if self._down_since is not None and self.suppressed:
            self._logger.error("Kafka was still unreachable (%s) when the client closed: %d "
                               "client line(s) suppressed", self._kind, self.suppressed)
        self._others.close()
