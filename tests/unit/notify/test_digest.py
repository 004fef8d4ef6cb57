"""The digest: when the next message may go, and what it says (a manual clock, no I/O)."""

from __future__ import annotations

from collections import Counter

import pytest

from consumer.notify.digest import MAX_KEYS, OTHER, Digest, DigestPolicy, describe
from consumer.pipeline.notifier import DeadLetterNote
from retry_topics.clock import ManualClock
from retry_topics.system_state import SystemState

MINUTE = 60_000


def _note(clinic: str = "clinic-north", event_type: str = "intake.submitted",
          error_class: str = "http.422", reason: str = "permanent") -> DeadLetterNote:
    return DeadLetterNote(reason=reason, error_class=error_class,  # type: ignore[arg-type]
                          event_type=event_type, clinic_id=clinic)


def _digest(review_url: str | None = None) -> tuple[Digest, ManualClock]:
    clock = ManualClock()
    return Digest(DigestPolicy(min_interval_ms=MINUTE, review_url=review_url,
                               topic="clinic.events"), clock), clock


def _state(clock: ManualClock, condition: str, reason: str = "",
           since_ms: int | None = None) -> SystemState:
    now = clock.now_ms()
    return SystemState(instance="host:1", condition=condition,  # type: ignore[arg-type]
                       since_ms=now if since_ms is None else since_ms, reason=reason,
                       stated_at_ms=now)


def test_nothing_happened_nothing_to_say() -> None:
    digest, _ = _digest()
    assert digest.wait_s() is None
    assert not digest.pending


def test_a_burst_is_gathered_for_a_few_seconds_then_told_at_once() -> None:
    digest, clock = _digest()
    digest.dead_lettered(_note())
    assert digest.wait_s() == 5.0
    clock.advance(3_000)
    for _ in range(9):
        digest.dead_lettered(_note())
    assert digest.wait_s() == 2.0
    clock.advance(2_000)
    assert digest.wait_s() == 0.0
    message = digest.compose()
    assert message.fields["dead_lettered"]["total"] == 10
    assert message.text.startswith("clinic-events (clinic.events): 10 events dead-lettered")


def test_at_most_one_message_per_interval_with_the_counts_since_the_last() -> None:
    digest, clock = _digest()
    digest.dead_lettered(_note())
    clock.advance(5_000)
    assert digest.compose().fields["dead_lettered"]["total"] == 1
    digest.sent()
    assert digest.wait_s() is None
    clock.advance(10_000)
    digest.dead_lettered(_note(clinic="clinic-south"))
    digest.dead_lettered(_note(clinic="clinic-south"))
    assert digest.wait_s() == pytest.approx(50.0)  # a minute after the last message
    clock.advance(50_000)
    assert digest.wait_s() == 0.0
    dead = digest.compose().fields["dead_lettered"]
    assert dead["total"] == 2
    assert dead["by_clinic"] == {"clinic-south": 2}


def test_counts_by_reason_event_type_and_clinic_in_plain_words() -> None:
    digest, _ = _digest()
    for _ in range(3):
        digest.dead_lettered(_note(clinic="clinic-north", event_type="appointment.scheduled"))
    digest.dead_lettered(_note(clinic="clinic-south", error_class="http.503",
                               reason="exhausted"))
    digest.dead_lettered(_note(clinic="clinic-south", error_class="undecodable",
                               reason="undecodable", event_type=None))  # type: ignore[arg-type]
    message = digest.compose()
    assert message.text.splitlines() == [
        message.text.splitlines()[0],
        "- 3 rejected (the downstream answered 422)",
        "- 1 gave up after every retry (the downstream answered 503)",
        "- 1 could not be decoded",
        "Event types: appointment.scheduled 3, intake.submitted 1, (unknown) 1",
        "Clinics: clinic-north 3, clinic-south 2",
    ]
    dead = message.fields["dead_lettered"]
    assert dead["by_event_type"] == {"appointment.scheduled": 3, "intake.submitted": 1,
                                     "(unknown)": 1}
    assert dead["by_reason"][0] == {"reason": "permanent", "error_class": "http.422",
                                    "description": "rejected (the downstream answered 422)",
                                    "count": 3}
    assert message.payload()["text"] == message.text


def test_a_message_that_failed_keeps_its_counts_for_the_next_slot() -> None:
    digest, clock = _digest()
    digest.dead_lettered(_note())
    clock.advance(5_000)
    digest.failed()
    assert digest.wait_s() == pytest.approx(60.0)
    digest.dead_lettered(_note())
    clock.advance(MINUTE)
    assert digest.compose().fields["dead_lettered"]["total"] == 2


def test_a_message_keeps_its_id_until_it_is_sent_so_a_receiver_can_drop_repeats() -> None:
    """A try that timed out may have arrived: the next try, and a later message carrying its
    counts, have the same id; the next message after one was sent has another."""
    digest, clock = _digest()
    digest.dead_lettered(_note())
    first = digest.compose().fields["id"]
    assert len(first) == 32
    digest.failed()
    digest.dead_lettered(_note())
    clock.advance(MINUTE)
    again = digest.compose().fields
    assert (again["id"], again["dead_lettered"]["total"]) == (first, 2)
    digest.sent()
    digest.dead_lettered(_note())
    assert digest.compose().fields["id"] not in ("", first)


def test_an_outage_and_its_end_in_one_message_or_two() -> None:
    digest, clock = _digest()
    opened = _state(clock, "outage", "6 of the last 20 calls failed (503)")
    digest.condition(opened)
    clock.advance(5_000)
    text = digest.compose().text
    assert text.startswith("clinic-events (clinic.events): the downstream is unavailable\n")
    assert "Downstream unavailable since" in text
    assert "failed (503)" in text
    assert "nothing is dead-lettered for the outage" in text
    digest.sent()
    clock.advance(4 * MINUTE)
    digest.condition(_state(clock, "ok"))
    assert digest.wait_s() == 5.0  # gathered like any news (the last message was long ago)
    clock.advance(5_000)
    message = digest.compose()
    assert message.text.startswith("clinic-events (clinic.events): back to normal\n")
    assert "Downstream available again" in message.text
    assert "(unavailable for 4 min)" in message.text
    assert message.fields["condition"]["condition"] == "ok"
    assert [c["condition"] for c in message.fields["changes"]] == ["ok"]


def test_a_halt_says_what_to_fix_and_that_a_restart_is_needed() -> None:
    digest, clock = _digest()
    digest.condition(_state(clock, "halted", "20 dead letters in a row, every one answered "
                                             "404: check delivery.url"))
    text = digest.compose().text
    assert "Dead letters halted" in text
    assert "check delivery.url" in text
    assert "restarted" in text


def test_the_review_link_only_when_configured() -> None:
    with_link, _ = _digest("https://review.example/clinic-events")
    without, _ = _digest()
    for digest in (with_link, without):
        digest.dead_lettered(_note())
    assert with_link.compose().text.endswith("\nReview: https://review.example/clinic-events")
    assert with_link.compose().fields["review_url"] == "https://review.example/clinic-events"
    assert "Review" not in without.compose().text
    assert without.compose().fields["review_url"] is None


def test_breakdowns_stay_bounded_whatever_arrives() -> None:
    digest, _ = _digest()
    for n in range(MAX_KEYS + 30):
        digest.dead_lettered(_note(clinic=f"clinic-{n}"))
    by_clinic = digest.compose().fields["dead_lettered"]["by_clinic"]
    assert len(by_clinic) == MAX_KEYS + 1
    assert by_clinic[OTHER] == 30
    assert "and 43 more" in digest.compose().text


def test_dead_letters_the_inbox_had_no_room_for_are_counted_by_reason() -> None:
    digest, _ = _digest()
    digest.dead_lettered(_note())
    digest.unitemized(Counter({("permanent", "http.422"): 4}))
    message = digest.compose()
    assert message.fields["dead_lettered"]["total"] == 5
    assert message.fields["dead_lettered"]["unitemized"] == 4
    assert "4 of them came too fast" in message.text


@pytest.mark.parametrize(("reason", "error_class", "words"), [
    ("permanent", "http.404", "rejected (the downstream answered 404)"),
    ("exhausted", "connection", "gave up after every retry (connection)"),
    ("undecodable", "undecodable", "could not be decoded"),
])
def test_reasons_in_plain_words(reason: str, error_class: str, words: str) -> None:
    assert describe(reason, error_class) == words


def test_a_policy_with_no_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="min_interval_ms"):
        DigestPolicy(min_interval_ms=0)


def test_parked_dead_letters_are_described_as_held_not_by_their_class() -> None:
    assert describe("parked", "clinic_events.parked") == (
        "held behind an earlier dead letter of the same key")
