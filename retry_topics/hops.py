"""How a record's headers change as it hops from topic to topic.

A failing record travels ``main -> retry tier 1 -> ... -> retry tier N -> DLQ`` and may be
replayed from the DLQ back to the main topic by an operator. Each hop rewrites the headers
defined in :mod:`retry_topics.headers` by the same rules, kept here so every publisher agrees:

* **provenance** (``clinic.original-*``) is taken from the record being consumed on its
  first hop and never changed afterwards, so a DLQ record always points at the record that
  first entered the system;
* **first-failure time** is set once, **last-failure time** on every hop;
* **attempts** is the number of topic attempts made (as decided by
  :func:`retry_topics.routing.decide_next`);
* **error class / message / classification** describe the latest failure; the message is
  redacted and capped (:func:`retry_topics.redaction.redact_message`);
* **due time** is present only on retry-tier records and **DLQ reason** only on DLQ records;
* trace context, event id/type, replay count and unknown headers ride along unchanged (the
  telemetry layer re-stamps ``traceparent`` with :func:`retry_topics.headers.replace_header`);
* a **replay** clears attempts, due time, DLQ reason and the failure description, increments
  the replay count, and carries ``clinic.replay-force`` only when the replay is forced;
* a **park** (:func:`parked_hop_headers`: the record waits behind an earlier event of its key)
  sets ``clinic.parked-behind`` and a due time (or the DLQ reason ``parked``), keeps the
  attempt count and the failure description as they were (no handler call was made), and
  sets provenance on a first hop like any other. A failure hop or a replay clears
  ``clinic.parked-behind``: the record then moves for its own sake.
"""

from __future__ import annotations

import dataclasses

from retry_topics.classification import Classification
from retry_topics.headers import REPLAY_FORCE, DlqReason, FailureInfo, Provenance, RecordHeaders
from retry_topics.redaction import redact_message

__all__ = ["next_hop_headers", "parked_hop_headers", "replay_headers"]


def next_hop_headers(
    incoming: RecordHeaders,
    *,
    source: Provenance,
    attempts: int,
    now_ms: int,
    error_class: str,
    error_message: str,
    classification: Classification,
    due_at_ms: int | None = None,
    dlq_reason: DlqReason | None = None,
) -> RecordHeaders:
    """Headers for republishing a failed record to a retry tier or to the DLQ.

    ``source`` is where the failing record was consumed from; it becomes the provenance only
    on the first hop (a record already carrying provenance keeps it). The first-failure time is
    kept likewise, the last-failure time is ``now_ms``, and the message is redacted and capped.
    Pass ``due_at_ms`` for a retry tier and ``dlq_reason`` for the DLQ; the other is cleared.
    Trace context, event id/type, replay count and unknown headers are carried over.
    """
    provenance = incoming.provenance or source
    failure = FailureInfo(
        attempts=attempts,
        first_failure_at_ms=(
            incoming.first_failure_at_ms if incoming.first_failure_at_ms is not None else now_ms
        ),
        last_failure_at_ms=now_ms,
        error_class=error_class,
        error_message=redact_message(error_message),
        classification=classification,
    )
    hop = incoming.with_provenance(provenance).with_failure(failure)
    return dataclasses.replace(hop, due_at_ms=due_at_ms, dlq_reason=dlq_reason,
                               parked_behind=None)


def parked_hop_headers(
    incoming: RecordHeaders,
    *,
    source: Provenance,
    attempts: int,
    behind: str,
    due_at_ms: int | None = None,
    dlq_reason: DlqReason | None = None,
) -> RecordHeaders:
    """Headers for moving a record that waits behind event ``behind`` of its key.

    No handler call was made, so ``attempts`` is the count the record already had (0 for a
    record never tried: ``clinic.attempts`` is written anyway, which marks a record a
    retry-tier record) and the failure description is carried over unchanged. Pass
    ``due_at_ms`` for a retry tier, or ``dlq_reason="parked"`` when the record follows a
    dead-lettered head to the DLQ.
    """
    provenance = incoming.provenance or source
    return dataclasses.replace(incoming.with_provenance(provenance), attempts=attempts,
                               due_at_ms=due_at_ms, dlq_reason=dlq_reason,
                               parked_behind=behind)


def replay_headers(dead_letter: RecordHeaders, *, force: bool = False) -> RecordHeaders:
    """Headers for replaying a dead-lettered record onto its original topic.

    The record starts over: attempt count, due time, DLQ reason and the failure description
    (error class and message, classification, first and last failure times) are cleared, and
    the replay count is incremented. Provenance, trace context and event identity stay, so a
    record that fails again still points at where it first entered the system; the failure
    that dead-lettered it is kept in the audit record of the replay, not on the record.

    ``force`` adds ``clinic.replay-force: 1`` (last, after the other unknown headers). A
    marker left by an earlier forced replay is dropped either way: each replay decides anew.
    """
    other = tuple(header for header in dead_letter.other if header[0] != REPLAY_FORCE)
    return dataclasses.replace(
        dead_letter,
        attempts=None,
        due_at_ms=None,
        dlq_reason=None,
        parked_behind=None,
        error_class=None,
        error_message=None,
        classification=None,
        first_failure_at_ms=None,
        last_failure_at_ms=None,
        replay_count=(dead_letter.replay_count or 0) + 1,
        other=(*other, (REPLAY_FORCE, b"1")) if force else other,
    )
