"""``run``'s metrics beyond the pipeline's own: the Prometheus endpoint and the lag sampler.

The pipeline counts what it does (``consumer.observability.telemetry``); what Kafka holds
(lag per partition, waiting and overdue retries, the DLQ, the group's members) is read here,
by a daemon thread that takes a ``LagProbe`` sample every ``[metrics] lag_interval`` and
hands the judged report to the observable gauges (``consumer.ops.lag.gauges``). It is not in
``consumer.cli.wiring`` on purpose: the run wiring imports no operator tool, and the sampler
is one, started beside the runner and failing on its own (a failed sample is logged and
counted; the consumer goes on).
"""

from __future__ import annotations

import logging
import threading

from opentelemetry.sdk.metrics import MeterProvider

from consumer.config.settings import Settings
from consumer.kafka.lag_probe import LagProbe
from consumer.observability.telemetry import INSTRUMENTATION_NAME
from consumer.ops.lag.gauges import LagGauges
from consumer.ops.lag.model import LagRules, evaluate
from retry_topics.clock import Clock, SystemClock

__all__ = ["LAG_SCAN_CAP", "LagSampler"]

LOG = logging.getLogger("clinic_events.metrics")

#: Records read per retry partition to split waiting from overdue. A tier's due times grow
#: along the partition, so the overdue records come first: the cap bounds the cost of a
#: long backlog and only undercounts the waiting ones.
LAG_SCAN_CAP = 1_000
#: Figures older than this many intervals are not shown (see ``LagGauges``).
STALE_INTERVALS = 3


class LagSampler:
    """Samples the group's lag into gauges on ``meters``, every ``lag_interval``, until
    ``close``."""

    def __init__(self, settings: Settings, meters: MeterProvider, *,
                 clock: Clock | None = None) -> None:
        self._settings = settings
        self._clock = clock or SystemClock()
        interval_ms = settings.metrics.lag_interval_ms
        self._interval_s = interval_ms / 1000
        self.gauges = LagGauges(meters.get_meter(INSTRUMENTATION_NAME), clock=self._clock,
                                stale_after_ms=STALE_INTERVALS * interval_ms)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lag-metrics", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop sampling; a sample under way is left to finish on its own (daemon thread)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        # The probe's admin calls wait at most this long, so close() is not held up for
        # a whole default timeout by an unreachable broker.
        timeout_s = min(15.0, max(1.0, self._interval_s))
        probe: LagProbe | None = None
        try:
            while not self._stop.is_set():
                try:
                    if probe is None:
                        probe = LagProbe(self._settings, clock=self._clock,
                                         scan_cap=LAG_SCAN_CAP, timeout_s=timeout_s)
                    self.sample_once(probe)
                except Exception as exc:  # noqa: BLE001 - GroupQueryError, a client error, ...
                    # The consumer does not depend on its gauges: whatever the sample ran
                    # into is logged and counted, and the next one starts afresh.
                    self._failed(exc)
                    if probe is not None:
                        probe.close()
                        probe = None
                self._stop.wait(self._interval_s)
        finally:
            if probe is not None:
                probe.close()

    def sample_once(self, probe: LagProbe) -> None:
        """One sample, judged as ``lag`` judges it, into the gauges."""
        report = evaluate(probe.sample(), [], LagRules(
            outage_error_ms=self._settings.breaker.error_after_ms))
        self.gauges.update(report)
        if self._failing:
            LOG.info("lag metrics: sampling works again")
            self._failing = False

    def _failed(self, exc: Exception) -> None:
        self.gauges.failed()
        if not self._failing:  # once per outage, not every interval
            LOG.warning("lag metrics: cannot sample the group's lag (the gauges go blank "
                        "after %d intervals): %s", STALE_INTERVALS, exc)
            self._failing = True
