"""The review page without Kafka: sign-in, roles, CSRF, headers, masking, actions."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from consumer.config.settings import ServeSettings, ServeUser
from consumer.errors import (
    DedupStoreError,
    DedupStoreUnavailable,
    DiscardedKeysStillHeld,
    KafkaUnreachable,
)
from consumer.events.codec import EventCodec
from consumer.ops.dlq.model import DlqRecord
from consumer.ops.lag.band import StatusBand
from consumer.web.app import build_app
from consumer.web.auth import authenticate, hash_password
from consumer.web.memory_source import MemoryReviewSource
from consumer.web.source import ActionResult
from retry_topics.headers import RecordHeaders
from tests.unit.sample_events import sample_event

PASSWORD = "correct horse battery staple"
BAND = StatusBand(status="WARN", reasons=("clinic.events.dlq: holds 3 dead-lettered record(s)",),
                  waiting=2, overdue=0, members=1, downstream="available",
                  flood_guard="running", taken_at_ms=1_700_000_000_000)


@pytest.fixture(scope="module")
def users() -> tuple[ServeUser, ...]:
    digest = hash_password(PASSWORD)
    return (ServeUser(name="ana", password_hash=digest, role="operator"),
            ServeUser(name="bo", password_hash=digest, role="viewer"))


def _record(offset: int, cls: str | None = "http.422", reason: str = "permanent",
            attempts: int = 1, behind: str | None = None) -> DlqRecord:
    event = sample_event("intake.submitted", event_id=f"evt-{offset}")
    return DlqRecord(
        partition=0, offset=offset, timestamp_ms=1_700_000_000_000 + offset, key=b"intake-1001",
        value=EventCodec().encode(event),
        headers=RecordHeaders(dlq_reason=reason, error_class=cls, attempts=attempts,  # type: ignore[arg-type]
                              event_type="intake.submitted", event_id=f"evt-{offset}",
                              original_topic="clinic.events", original_partition=0,
                              original_offset=offset, parked_behind=behind),
        event=event)


@pytest.fixture
def source() -> MemoryReviewSource:
    return MemoryReviewSource([_record(0), _record(1), _record(2, "http.503", "exhausted", 4)],
                              band=BAND)


@pytest.fixture
def client(users: tuple[ServeUser, ...], source: MemoryReviewSource) -> Iterator[TestClient]:
    serve = ServeSettings(users=users, trace_url="http://jaeger/trace/{trace_id}")
    with TestClient(build_app(serve, source, secret="s" * 40), base_url="http://127.0.0.1",
                    follow_redirects=False) as test_client:
        yield test_client


def _csrf(client: TestClient, path: str = "/login") -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)


def _sign_in(client: TestClient, name: str = "ana", password: str = PASSWORD) -> int:
    answer = client.post("/login", data={"name": name, "password": password,
                                         "csrf_token": _csrf(client)})
    return int(answer.status_code)


def test_every_page_needs_sign_in(client: TestClient) -> None:
    for path in ("/", "/records/0/0", "/audit", "/confirm?action=replay"):
        answer = client.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/login"


def test_wrong_passwords_and_unknown_users_are_refused(
        client: TestClient, users: tuple[ServeUser, ...]) -> None:
    assert _sign_in(client, password="nope") == 401
    assert _sign_in(client, name="mallory") == 401
    assert authenticate(users, "ana", PASSWORD) == users[0]
    assert client.get("/").status_code == 303


def test_sign_in_without_the_csrf_token_is_refused(client: TestClient) -> None:
    client.get("/login")
    answer = client.post("/login", data={"name": "ana", "password": PASSWORD})
    assert answer.status_code == 403
    assert client.get("/").status_code == 303


def test_the_list_groups_in_plain_words_with_the_status_band(client: TestClient) -> None:
    assert _sign_in(client) == 303
    page = client.get("/")
    assert page.status_code == 200
    assert "EHR rejected the request: 422 Unprocessable Entity" in page.text
    assert "gave up after 4 attempts: EHR unavailable (503)" in page.text
    assert ">WARN<" in page.text
    assert "parked keys <b>n/a</b>" in page.text
    assert "Replay…" in page.text  # an operator


def test_filters_narrow_the_list_and_bad_ones_are_explained(client: TestClient) -> None:
    _sign_in(client)
    page = client.get("/", params={"reason": "permanent:http.422"})
    assert "EHR unavailable" not in page.text.split('id="groups"')[1]
    assert page.text.count('class="record"') == 2
    assert client.get("/", params={"from": "yesterday-ish"}).status_code == 400


def test_pages_carry_the_security_headers_and_a_strict_session_cookie(
        client: TestClient) -> None:
    answer = client.get("/login")
    csp = answer.headers["content-security-policy"]
    assert "script-src" not in csp
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "<script" not in answer.text


def test_a_record_shows_its_journey_with_phi_masked(client: TestClient) -> None:
    _sign_in(client)
    page = client.get("/records/0/2")
    assert page.status_code == 200
    for phi in ("Maria", "Okafor", "MBR99887766", "+15551234567", "pat-501"):
        assert phi not in page.text
    assert "****" in page.text
    assert "dead-lettered to clinic.events.dlq: gave up after 4 attempts" in page.text
    assert client.get("/records/0/99").status_code == 404


def test_revealing_phi_needs_the_operator_a_reason_and_is_audited(
        client: TestClient, source: MemoryReviewSource) -> None:
    _sign_in(client)
    token = _csrf(client, "/records/0/0")
    assert client.post("/records/0/0/reveal", data={"csrf_token": token,
                                                    "why": ""}).status_code == 400
    shown = client.post("/records/0/0/reveal", data={"csrf_token": token,
                                                     "why": "ticket CL-12"})
    assert shown.status_code == 200
    assert "Okafor" in shown.text
    assert source.audit[-1]["action"] == "dlq.reveal"
    assert (source.audit[-1]["actor"], source.audit[-1]["why"]) == ("ana", "ticket CL-12")


def test_a_viewer_can_read_but_not_act_or_reveal(
        client: TestClient, source: MemoryReviewSource) -> None:
    assert _sign_in(client, name="bo") == 303
    assert "Replay…" not in client.get("/").text
    token = _csrf(client, "/records/0/0")
    for path, data in (("/records/0/0/reveal", {"why": "x"}),
                       ("/actions/replay", {"records": "0:0"}),
                       ("/actions/discard", {"records": "0:0", "reason": "x"})):
        answer = client.post(path, data={"csrf_token": token, **data})
        assert answer.status_code == 403
    assert source.audit == []
    assert len(source.open_records()) == 3


def test_posts_without_the_csrf_token_change_nothing(
        client: TestClient, source: MemoryReviewSource) -> None:
    _sign_in(client)
    answer = client.post("/actions/replay", data={"records": "0:0", "csrf_token": "forged"})
    assert answer.status_code == 403
    assert source.replayed == []


def test_a_group_replay_confirms_the_count_then_replays_exactly_it(
        client: TestClient, source: MemoryReviewSource) -> None:
    _sign_in(client)
    confirm = client.get("/confirm", params={"action": "replay", "reason": "permanent:http.422",
                                             "event_type": "intake.submitted",
                                             "clinic": "clinic-north"})
    assert '<span id="count">2</span>' in confirm.text
    assert "clinic.events" in confirm.text
    records = re.search(r'name="records" value="([^"]+)"', confirm.text)
    assert records is not None
    token = _csrf(client, "/")
    done = client.post("/actions/replay", data={"csrf_token": token,
                                                "records": records.group(1)})
    assert done.status_code == 200
    assert [r.offset for r in source.replayed] == [0, 1]
    assert "EHR rejected" not in client.get("/").text
    trail = client.get("/audit").text
    assert "ana (review page)" in trail
    assert "dlq.replay" in trail


def test_discard_needs_a_reason_and_leaves_the_list(
        client: TestClient, source: MemoryReviewSource) -> None:
    _sign_in(client)
    token = _csrf(client, "/")
    assert client.post("/actions/discard", data={"csrf_token": token, "records": "0:2",
                                                 "reason": " "}).status_code == 400
    assert client.post("/actions/discard", data={"csrf_token": token, "records": "0:2",
                                                 "reason": "test data"}).status_code == 200
    assert "EHR unavailable" not in client.get("/").text
    assert source.audit[-1]["reason"] == "test data"


def test_a_discard_done_whose_keys_the_store_did_not_release_is_not_called_not_done(
        client: TestClient, source: MemoryReviewSource, monkeypatch: pytest.MonkeyPatch) -> None:
    _sign_in(client)
    token = _csrf(client, "/")
    said = ("dedup store redis://ro:****@127.0.0.1:6379/0: no permissions; the discard of 1 "
            "record(s) is committed, but their keys may still hold back their later events")

    def store_failed(*_args: object) -> ActionResult:
        raise DiscardedKeysStillHeld(said)

    monkeypatch.setattr(source, "discard", store_failed)
    page = client.post("/actions/discard", data={"csrf_token": token, "records": "0:2",
                                                 "reason": "test data"})
    assert page.status_code == 503
    text = html.unescape(page.text)
    assert "<h1>Discarded, but their keys still hold events back</h1>" in text
    assert "Not done" not in text
    assert said in text


def test_malformed_record_lists_are_refused(client: TestClient) -> None:
    _sign_in(client)
    token = _csrf(client, "/")
    answer = client.post("/actions/replay", data={"csrf_token": token,
                                                  "records": "0:0 evt-1"})
    assert answer.status_code == 400


def test_signing_out_ends_the_session(client: TestClient) -> None:
    _sign_in(client)
    client.post("/logout", data={"csrf_token": _csrf(client, "/")})
    assert client.get("/").status_code == 303


@pytest.mark.parametrize(("error", "said"), [
    (DedupStoreError("dedup store redis://127.0.0.1:6379/0: Timeout reading from "
                     "127.0.0.1:6379"), "The dedup store could not be read or written: "),
    (DedupStoreUnavailable("dedup.store 'redis://alice:****@127.0.0.1:6379/0' cannot be "
                           "opened: AuthenticationError: invalid username-password pair"),
     "The dedup store could not be read or written: "),
    (KafkaUnreachable("Kafka at 127.0.0.1:9092 is unreachable"),
     "Kafka could not be read or written: "),
])
def test_a_page_that_cannot_be_built_says_which_system_failed(
    client: TestClient, source: MemoryReviewSource, monkeypatch: pytest.MonkeyPatch,
    error: Exception, said: str,
) -> None:
    _sign_in(client)

    def failing() -> list[DlqRecord]:
        raise error

    monkeypatch.setattr(source, "open_records", failing)
    page = client.get("/")
    assert page.status_code == 503
    assert html.unescape(page.text).count(said + str(error)) == 1


def test_a_parked_dead_letter_says_what_it_waits_for_not_an_empty_error(
    users: tuple[ServeUser, ...],
) -> None:
    """It did not fail: an earlier dead letter of its key holds it. The list groups it under
    that, and its page names the event it is held behind."""
    source = MemoryReviewSource([_record(0), _record(1, None, "parked", behind="evt-0")],
                                band=BAND)
    with TestClient(build_app(ServeSettings(users=users), source, secret="s" * 40),
                    base_url="http://127.0.0.1", follow_redirects=False) as client:
        _sign_in(client)
        listed = client.get("/").text
        assert "held behind an earlier dead letter of the same key" in listed
        assert "no reason recorded" not in listed
        page = client.get("/records/0/1").text
        assert "Held behind</dt><dd>evt-0 (an earlier dead letter" in page
        assert "Error</dt>" not in page


def test_under_a_path_prefix_every_link_and_redirect_carries_it(
    users: tuple[ServeUser, ...], source: MemoryReviewSource,
) -> None:
    """public_url https://host/dlq-review behind a proxy that strips the path: the routes
    stay at /, what the browser follows carries /dlq-review."""
    serve = ServeSettings(users=users, public_url="https://review.example/dlq-review")
    with TestClient(build_app(serve, source, secret="s" * 40), base_url="https://127.0.0.1",
                    follow_redirects=False) as client:
        assert client.get("/").headers["location"] == "/dlq-review/login"
        login = client.get("/login").text
        assert 'action="/dlq-review/login"' in login
        assert 'href="/dlq-review/static/review.css"' in login
        signed_in = client.post("/login", data={"name": "ana", "password": PASSWORD,
                                                "csrf_token": _csrf(client)})
        assert signed_in.headers["location"] == "/dlq-review/"
        pages = [client.get(path).text for path in ("/", "/records/0/2", "/audit")]
    links = [link for text in pages
             for link in re.findall(r'(?:href|action|src)="(/[^"]*)"', text)]
    assert links
    assert all(link.startswith("/dlq-review/") for link in links), links
