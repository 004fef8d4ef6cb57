"""Keeping error messages small and free of secrets before they travel in headers.

An error message is the most useful thing an operator sees in the dead-letter topic, and the
most dangerous: an HTTP client error may echo an ``Authorization`` header, a query string with
a password, or a patient's phone or member number. Headers are copied into logs, spans and
tools far less protected than the record value, so before a message is put in
``clinic.error-message`` it is

1. **redacted**: bearer/basic credentials, ``password=...``-style pairs (also ``token``,
   ``secret``, ``api_key``, ``authorization``), credentials in URLs, e-mail addresses and runs
   of seven or more digits (phone, member and record numbers, dates) become ``***``, except
   the schema fingerprint of the codec's ``unknown schema fingerprint <16 hex digits>``: the
   8 bytes after the Avro single-object marker ``C3 01`` (which no UTF-8 text starts with)
   are a CRC-64 of a writer schema, not patient data, and the one clue to which producer
   wrote the record;
2. **capped** at :data:`MAX_ERROR_MESSAGE_BYTES` of UTF-8, cut on a character boundary (never
   in the middle of a multi-byte character) and ending in ``"…"`` when something was cut.

Redaction runs before capping, so a secret is never cut into a shape the patterns miss. Only
a bounded prefix of a huge message is scanned, and the word split by that cut is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["CUT_MARKER", "MAX_ERROR_MESSAGE_BYTES", "cap_utf8", "redact_message"]

MAX_ERROR_MESSAGE_BYTES = 1024
CUT_MARKER = "…"


def cap_utf8(text: str, max_bytes: int = MAX_ERROR_MESSAGE_BYTES) -> str:
    """Cut ``text`` to at most ``max_bytes`` of UTF-8, on a character boundary, marking the cut.

    When the text is cut it ends in ``"…"``, and the marker counts towards ``max_bytes``.
    Lone surrogates (which UTF-8 cannot carry) are replaced by ``"?"``.
    """
    data = text.encode("utf-8", errors="replace")
    if len(data) <= max_bytes:
        return data.decode("utf-8")
    marker = CUT_MARKER.encode("utf-8")
    end = max(0, max_bytes - len(marker))
    while end > 0 and (data[end] & 0b1100_0000) == 0b1000_0000:
        end -= 1  # data[end] continues a multi-byte character: cut before that character.
    return data[:end].decode("utf-8") + (CUT_MARKER if max_bytes >= len(marker) else "")


_SENSITIVE_PARAM_NAMES = (
    r"password|passwd|pwd|secret|client[_-]?secret|token|access[_-]?token|refresh[_-]?token|"
    r"api[_-]?key|apikey|authorization"
)
_SCHEMES = r"bearer|basic|digest|negotiate"


def _mask_parameter(match: re.Match[str]) -> str:
    name, separator, scheme = match.group(1, 2, 3)
    return f"{name}{separator}{scheme or ''}***"


def _mask_digits(match: re.Match[str]) -> str:
    return match.group("fingerprint") or "***"


# Every pattern starts with a literal or a look-behind that fails inside a run of the same
# characters, and uses possessive quantifiers, so each scans its input in linear time.
_REDACTIONS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    (re.compile(rf"(?i)\b({_SCHEMES})\s++[A-Za-z0-9\-._~+/]++=*+"), r"\1 ***"),
    (
        re.compile(
            rf"(?i)\b({_SENSITIVE_PARAM_NAMES})([\"']?\s*+[=:]\s*+)((?:{_SCHEMES})\s++)?"
            r"(\"[^\"]*+\"|'[^']*+'|[^\s&,;]++)"
        ),
        _mask_parameter,
    ),
    (re.compile(r"(://)[^/\s:@]++:[^/\s@]++@"), r"\1***@"),
    (re.compile(r"(?<![\w.+-])[\w.+-]++@[\w-]++(?:\.[\w-]++)++"), "***@***"),
    # Seven or more digits, possibly split by spaces, dashes, dots, slashes or brackets. A
    # schema fingerprint is matched whole first and kept, so no digit run starts inside it;
    # one that more digits continue is not a fingerprint's shape and is masked with them.
    (
        re.compile(
            r"(?P<fingerprint>unknown schema fingerprint [0-9a-f]{16}\b(?![\s\-.()/]{0,2}\d))"
            r"|(?<!\d)\d(?:[\s\-.()/]{0,2}\d){6,}"
        ),
        _mask_digits,
    ),
)
# Only this much of a message is scanned; a cut message ends in the marker.
_SCAN_CHARS = 64 * MAX_ERROR_MESSAGE_BYTES
_TRAILING_WORD = re.compile(r"\S*+\Z")


def redact_message(text: str, max_bytes: int = MAX_ERROR_MESSAGE_BYTES) -> str:
    """Mask secrets and PHI-like tokens in ``text``, then cap it to ``max_bytes`` of UTF-8."""
    cut = len(text) > _SCAN_CHARS
    # A cut may split a secret into a shape no pattern recognises: drop the split word.
    redacted = _TRAILING_WORD.sub("", text[:_SCAN_CHARS]) if cut else text
    for pattern, replacement in _REDACTIONS:
        redacted = pattern.sub(replacement, redacted)
    if cut:
        redacted += CUT_MARKER
    return cap_utf8(redacted, max_bytes)
