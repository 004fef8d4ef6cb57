"""A Python delivery handler: clinic events into an EHR through its client library.

Configure it instead of HTTP delivery (set ``url`` or ``handler``, not both)::

    [delivery]
    handler = "examples.handler:deliver"

The module must be importable by the Python that runs ``clinic-events``: install your
handler's package into that environment, or put its folder on ``PYTHONPATH`` (here, the
repository root: ``PYTHONPATH=. clinic-events run``).

The contract is small. Return normally once the EHR holds the event. Raise
:class:`~consumer.TransientError` when the same call can succeed later (the EHR is busy or
unreachable): the consumer retries it quickly in process, then through the retry topics.
Raise :class:`~consumer.PermanentError` when no retry can help (the EHR rejects the
request): the event is dead-lettered at once, for an operator to fix and replay. Any other
exception is classified by the ``[classification]`` rules (transient unless they say
otherwise), so translating the client's errors here states the intent where it is known.

The handler is called from several worker threads at once (``delivery.concurrency``), and
at least once per event: a crash between the EHR's answer and the consumer recording the
outcome means the event comes again. So the EHR call carries ``context.event_id`` as its
idempotency key, and the client is shared and thread-safe.

``FakeEhrClient`` stands in for a vendor's client so the example runs anywhere: it knows
two clinics and rejects the others, and it is busy for its first few calls, as an EHR
coming out of a maintenance window is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from consumer import DeliveryContext, EventRecord, PermanentError, TransientError

__all__ = ["EhrBusy", "EhrDelivery", "EhrError", "EhrRejected", "FakeEhrClient", "deliver"]

#: The EHR resource each event type writes; the key field names the entity it writes.
RESOURCE_BY_EVENT_TYPE: dict[str, tuple[str, str]] = {
    "intake.submitted": ("intake", "intake_id"),
    "appointment.scheduled": ("appointment", "appointment_id"),
    "appointment.rescheduled": ("appointment", "appointment_id"),
    "appointment.cancelled": ("appointment", "appointment_id"),
    "eligibility.check_requested": ("eligibility-check", "check_id"),
}


class EhrError(Exception):
    """Root of the (fake) EHR client's errors, as a vendor library would define them."""


class EhrBusy(EhrError):
    """The EHR answered 503: try again after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"EHR busy, retry after {retry_after_s:g} s")
        self.retry_after_s = retry_after_s


class EhrRejected(EhrError):
    """The EHR answered 422: the request is invalid and will stay so."""


@dataclass(frozen=True, slots=True)
class StoredResource:
    """What the EHR holds for one entity: the latest event written to it."""

    resource: str
    event_id: str
    event_type: str


class FakeEhrClient:
    """An in-memory EHR: upserts by (resource, entity id), idempotent by key, thread-safe."""

    def __init__(
        self, *, facilities: Iterable[str], busy_calls: int = 0, retry_after_s: float = 0.2
    ) -> None:
        self._facilities = frozenset(facilities)
        self._busy_calls = busy_calls
        self._retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self.resources: dict[tuple[str, str], StoredResource] = {}
        self.idempotency_keys: set[str] = set()
        self.calls = 0

    def upsert(
        self, facility: str, resource: str, entity_id: str, body: Mapping[str, Any], *,
        idempotency_key: str,
    ) -> None:
        """Write ``body`` as ``entity_id`` of ``facility``; a key seen before is a no-op."""
        with self._lock:
            self.calls += 1
            if self.calls <= self._busy_calls:
                raise EhrBusy(self._retry_after_s)
            if facility not in self._facilities:
                raise EhrRejected(f"unknown facility {facility!r}")
            if idempotency_key in self.idempotency_keys:
                return
            self.idempotency_keys.add(idempotency_key)
            self.resources[(resource, entity_id)] = StoredResource(
                resource, idempotency_key, str(body["event_type"]))


class EhrDelivery:
    """Delivers clinic events to an EHR client, translating its errors into intent."""

    def __init__(self, client: FakeEhrClient) -> None:
        self.client = client

    def __call__(self, event: EventRecord, context: DeliveryContext) -> None:
        resource, key_field = RESOURCE_BY_EVENT_TYPE[event["event_type"]]
        try:
            self.client.upsert(
                event["clinic_id"], resource, event["payload"][key_field],
                {"event_type": event["event_type"], "occurred_at": event["occurred_at"]},
                idempotency_key=context.event_id,
            )
        except EhrBusy as exc:
            # The hint becomes the wait: a short one is waited out in process, a long one
            # sends the event to the first retry tier at least that long.
            raise TransientError(str(exc), error_class="ehr.busy",
                                 retry_after_ms=round(exc.retry_after_s * 1000)) from exc
        except EhrRejected as exc:
            # The message travels in the dead letter's headers: it names the clinic,
            # never the patient.
            raise PermanentError(str(exc), error_class="ehr.rejected") from exc
        except (ConnectionError, TimeoutError) as exc:
            raise TransientError(f"EHR unreachable: {type(exc).__name__}",
                                 error_class="ehr.unreachable") from exc


#: What ``handler = "examples.handler:deliver"`` loads: one client shared by every worker.
deliver = EhrDelivery(FakeEhrClient(facilities={"clinic-north", "clinic-riverside"},
                                    busy_calls=2))
