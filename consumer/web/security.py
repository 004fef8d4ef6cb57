"""Security headers on every response, and CSRF tokens for every POST.

**Headers.** A strict Content-Security-Policy (the pages have no scripts at all, styles only
from ``/static``, forms post only to the page itself, no framing), ``X-Frame-Options: DENY``
for older browsers, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``
(so a link out to the trace viewer carries no address of ours) and ``Cache-Control:
no-store``, since pages may show an event's (masked or revealed) contents.

**CSRF.** The synchronizer-token pattern: each session holds a random token
(:func:`csrf_token`), every form carries it in a hidden field, and every POST is refused
unless the field equals the session's (:func:`csrf_ok`, compared in constant time). The
session cookie is ``SameSite=Strict`` on top. Chosen over a double-submit cookie library
because the session (signed by itsdangerous, via Starlette's ``SessionMiddleware``) already
exists, the check is a few lines with no extra dependency, and it also covers the sign-in
form (login CSRF).
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_FIELD = "csrf_token"
HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class SecurityHeaders:
    """ASGI middleware adding :data:`HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(
                    (k.encode(), v.encode()) for k, v in HEADERS.items()
                    if k.encode() not in present)]
            await send(message)

        await self._app(scope, receive, with_headers)


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, sent: object) -> bool:
    expected = request.session.get("csrf")
    return isinstance(expected, str) and isinstance(sent, str) and \
        secrets.compare_digest(expected.encode(), sent.encode())
