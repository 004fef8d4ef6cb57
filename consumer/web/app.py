"""The review page's routes: sign-in, the grouped list, one record, replay / discard, audit.

Every page but sign-in needs a session; every POST needs the session's CSRF token
(:mod:`consumer.web.security`), and replay, discard and reveal need the operator role. URLs
hold only non-PHI values: filters (a reason key, an event type, a clinic id, times) and DLQ
coordinates (``/records/<partition>/<offset>``), never an event's fields. Kafka calls block,
so they run in the thread pool; a Kafka failure is a 503 page saying so.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from consumer.config.settings import TRACE_ID_PLACEHOLDER, ServeSettings, ServeUser
from consumer.errors import (
    ClinicEventsError,
    DedupStoreError,
    DedupStoreUnavailable,
    DiscardedKeysStillHeld,
)
from consumer.events.codec import EVENT_TYPES
from consumer.ops.dlq.model import UNDECODABLE, DlqFilterError, key_text, parse_time_ms, record_view
from consumer.ops.dlq.review import (
    ReviewFilter,
    clinic_of,
    group_records,
    journey,
    plain_reason,
)
from consumer.web.auth import authenticate, find_user, may_act
from consumer.web.security import CSRF_FIELD, SecurityHeaders, csrf_ok, csrf_token
from consumer.web.source import ReviewSource

HERE = Path(__file__).parent
SESSION_COOKIE = "clinic_review"
MAX_RECORDS_SHOWN = 200
MAX_REASON_CHARS = 500
_COORDINATE = re.compile(r"^(\d{1,9}):(\d{1,19})$")
Handler = Callable[[Request], Awaitable[Response]]


def _when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class _Refused(Exception):
    """A request the page answers with an error page (status, message without PHI)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def build_app(serve: ServeSettings, source: ReviewSource, *, secret: str) -> Starlette:
    """The review page over ``source``, for the users of ``serve``; ``secret`` signs
    session cookies."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["when"] = _when
    # Behind a proxy that serves the page under a path (public_url https://host/dlq-review)
    # and strips it before passing requests on, the routes stay at / but every link and
    # redirect the browser follows must carry the path.
    root = urlsplit(serve.public_url).path.rstrip("/") if serve.public_url else ""

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        user = _user(request)
        return templates.TemplateResponse(request, name, status_code=status, context={
            "user": user, "operator": user is not None and may_act(user),
            "csrf": csrf_token(request), "csrf_field": CSRF_FIELD, "topics": source.topics,
            "root": root, **context})

    def _user(request: Request) -> ServeUser | None:
        user = find_user(serve.users, request.session.get("user"))
        since = request.session.get("since")
        if user is None or not isinstance(since, int | float) \
                or time.time() - since > serve.session_ttl_ms / 1000:
            return None
        return user

    def page(*, operator: bool = False, post: bool = False) -> Callable[[Handler], Handler]:
        """Sign-in (and the operator role, and the CSRF token) required; refusals and
        Kafka failures rendered as an error page."""
        def wrap(handler: Handler) -> Handler:
            async def guarded(request: Request) -> Response:
                user = _user(request)
                if user is None:
                    if post:
                        return render(request, "error.html", 403,
                                      message="Your session has ended: sign in again.")
                    request.session.pop("user", None)
                    return RedirectResponse(f"{root}/login", status_code=303)
                try:
                    if post and not csrf_ok(request, (await request.form()).get(CSRF_FIELD)):
                        raise _Refused(403, "The form was out of date: go back, reload the "
                                            "page and try again.")
                    if operator and not may_act(user):
                        raise _Refused(403, "This needs the operator role; you are signed in "
                                            "as a viewer.")
                    return await handler(request)
                except _Refused as refused:
                    return render(request, "error.html", refused.status, message=str(refused))
                except DiscardedKeysStillHeld as exc:
                    return render(request, "error.html", 503, message=str(exc),
                                  heading="Discarded, but their keys still hold events back")
                except (ClinicEventsError, DlqFilterError) as exc:
                    what = "The dedup store" if isinstance(
                        exc, DedupStoreError | DedupStoreUnavailable) else "Kafka"
                    return render(request, "error.html", 503,
                                  message=f"{what} could not be read or written: {exc}")
            return guarded
        return wrap

    async def login_form(request: Request) -> Response:
        return render(request, "login.html")

    async def login(request: Request) -> Response:
        form = await request.form()
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return render(request, "login.html", 403, error="The form was out of date; "
                                                              "try again.")
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        user = await run_in_threadpool(authenticate, serve.users, name, password)
        if user is None:
            return render(request, "login.html", 401, error="Wrong name or password.")
        request.session.clear()  # a fresh session: no fixation of an earlier one
        request.session.update(user=user.name, since=int(time.time()))
        csrf_token(request)
        return RedirectResponse(f"{root}/", status_code=303)

    async def logout(request: Request) -> Response:
        if csrf_ok(request, (await request.form()).get(CSRF_FIELD)):
            request.session.clear()
        return RedirectResponse(f"{root}/login", status_code=303)

    @page()
    async def review_list(request: Request) -> Response:
        flt, given = _filter(request.query_params)
        records = await run_in_threadpool(source.open_records)
        band = await run_in_threadpool(_status, source)
        groups = group_records((r for r in records if flt.matches(r, serve.downstream_name)),
                               serve.downstream_name)
        every = group_records(records, serve.downstream_name)
        shown = [r for r in records if flt.matches(r, serve.downstream_name)] \
            if any(given.values()) else []
        return render(request, "list.html", groups=groups, band=band[0], band_error=band[1],
                      given=given, total=len(records),
                      reasons=sorted({(g.reason.key, g.reason.text) for g in every},
                                     key=lambda r: r[1]),
                      event_types=[*EVENT_TYPES, UNDECODABLE],
                      clinics=sorted({g.clinic for g in every}),
                      records=[_row(r, serve.downstream_name)
                               for r in shown[:MAX_RECORDS_SHOWN]],
                      more=max(0, len(shown) - MAX_RECORDS_SHOWN))

    async def _record_page(request: Request, reveal: bool, status: int = 200) -> Response:
        partition = int(request.path_params["partition"])
        offset = int(request.path_params["offset"])
        record = await run_in_threadpool(source.record, partition, offset)
        if record is None:
            raise _Refused(404, f"No dead letter at partition {partition}, offset {offset}.")
        hops = await run_in_threadpool(source.hops, record)
        view = record_view(record, reveal=reveal)
        body = view.get("event", view.get("undecodable"))
        return render(request, "record.html", status, record=record, view=view,
                      key=key_text(record.key), reason=plain_reason(record, serve.downstream_name),
                      clinic=clinic_of(record), revealed=reveal,
                      body=json.dumps(body, indent=2, default=str),
                      steps=journey(record, hops, main=source.topics["main"],
                                    tiers=source.tiers, dlq_topic=source.topics["dlq"],
                                    downstream=serve.downstream_name),
                      trace_link=_trace_link(serve.trace_url))

    @page()
    async def record_page(request: Request) -> Response:
        return await _record_page(request, reveal=False)

    @page(operator=True, post=True)
    async def reveal(request: Request) -> Response:
        why = str((await request.form()).get("why", "")).strip()
        if not why:
            raise _Refused(400, "Say why you need to see the patient's details.")
        partition = int(request.path_params["partition"])
        offset = int(request.path_params["offset"])
        record = await run_in_threadpool(source.record, partition, offset)
        if record is None:
            raise _Refused(404, f"No dead letter at partition {partition}, offset {offset}.")
        user = _user(request)
        assert user is not None  # the page guard signed them in
        await run_in_threadpool(source.audit_reveal, record, user.name, why[:MAX_REASON_CHARS])
        return await _record_page(request, reveal=True)

    @page()
    async def confirm(request: Request) -> Response:
        action = request.query_params.get("action")
        if action not in ("replay", "discard"):
            raise _Refused(400, "Choose replay or discard.")
        flt, given = _filter(request.query_params)
        records = [r for r in await run_in_threadpool(source.open_records)
                   if flt.matches(r, serve.downstream_name)]
        destinations = sorted({r.headers.original_topic or "(no original topic: left open)"
                               for r in records})
        return render(request, "confirm.html", action=action, given=given, count=len(records),
                      destinations=destinations,
                      coordinates=" ".join(f"{r.partition}:{r.offset}" for r in records),
                      groups=group_records(records, serve.downstream_name))

    @page(operator=True, post=True)
    async def act(request: Request) -> Response:
        action = request.path_params["action"]
        form = await request.form()
        records = _coordinates(str(form.get("records", "")))
        user = _user(request)
        assert user is not None
        actor = f"{user.name} (review page)"
        if action == "replay":
            result = await run_in_threadpool(source.replay, records, actor)
        elif action == "discard":
            reason = str(form.get("reason", "")).strip()
            if not reason:
                raise _Refused(400, "Say why these records are discarded.")
            result = await run_in_threadpool(source.discard, records,
                                             reason[:MAX_REASON_CHARS], actor)
        else:
            raise _Refused(404, "No such action.")
        return render(request, "done.html", result=result, asked=len(records))

    @page()
    async def audit(request: Request) -> Response:
        entries = await run_in_threadpool(source.audit_trail, 100)
        return render(request, "audit.html", entries=entries)

    routes = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", review_list, methods=["GET"]),
        Route("/records/{partition:int}/{offset:int}", record_page, methods=["GET"]),
        Route("/records/{partition:int}/{offset:int}/reveal", reveal, methods=["POST"]),
        Route("/confirm", confirm, methods=["GET"]),
        Route("/actions/{action}", act, methods=["POST"]),
        Route("/audit", audit, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    https = bool(serve.public_url and serve.public_url.startswith("https://"))
    return Starlette(routes=routes, middleware=[
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=secret, session_cookie=SESSION_COOKIE,
                   max_age=serve.session_ttl_ms // 1000, same_site="strict",
                   https_only=https),
    ])


def _filter(query: Any) -> tuple[ReviewFilter, dict[str, str]]:
    """The list's filter from the query string; the values as given, for the form."""
    given = {name: str(query.get(name, "")).strip()
             for name in ("reason", "event_type", "clinic", "from", "to")}
    now_ms = time.time_ns() // 1_000_000
    try:
        return ReviewFilter(
            reason=given["reason"] or None, event_type=given["event_type"] or None,
            clinic=given["clinic"] or None,
            since_ms=parse_time_ms(given["from"], now_ms) if given["from"] else None,
            until_ms=parse_time_ms(given["to"], now_ms) if given["to"] else None), given
    except DlqFilterError as exc:
        raise _Refused(400, str(exc)) from exc


def _coordinates(text: str) -> frozenset[tuple[int, int]]:
    found = set()
    for item in text.split():
        match = _COORDINATE.match(item)
        if match is None:
            raise _Refused(400, "The form named records the page does not know.")
        found.add((int(match.group(1)), int(match.group(2))))
    if not found:
        raise _Refused(400, "No records were chosen.")
    return frozenset(found)


def _status(source: ReviewSource) -> tuple[Any, str | None]:
    """The status band, or why it could not be read (the list is still worth showing)."""
    try:
        return source.status(), None
    except Exception as exc:  # noqa: BLE001 - any probe failure is shown, not raised
        return None, f"status unavailable: {type(exc).__name__}"


def _trace_link(template: str | None) -> Callable[[str | None], str | None]:
    def link(trace_id: str | None) -> str | None:
        if template is None or trace_id is None:
            return None
        return template.replace(TRACE_ID_PLACEHOLDER, trace_id)
    return link


def _row(record: Any, downstream: str) -> dict[str, Any]:
    return {"partition": record.partition, "offset": record.offset,
            "at": record.timestamp_ms, "event_type": record.event_type,
            "clinic": clinic_of(record), "reason": plain_reason(record, downstream).text,
            "attempts": record.headers.attempts, "replays": record.headers.replay_count or 0}
