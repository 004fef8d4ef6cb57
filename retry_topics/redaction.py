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

The patterns cannot know a name: "invalid visit for Ada Testperson" has no shape to catch.
:func:`mask_values` masks the values the caller knows to be identifying (the consumer passes
the failing event's own names, birth date, phone, member and patient ids) wherever they
appear, in any case and with any separators between their letter and digit runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

__all__ = ["CUT_MARKER", "MAX_ERROR_MESSAGE_BYTES", "cap_utf8", "mask_values", "redact_message"]

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


_MASK = "***"
#: A value with fewer letters and digits than this is masked only as a whole word: a patient
#: id "42" or a first name "Al" must not eat every "42" in "4242" or "al" in "fatal".
_WHOLE_WORD_BELOW = 4
_VALUE_RUN = re.compile(r"[^\W\d_]++|\d++")  # a run of letters, or of digits
_CUT_WORD = re.compile(rf"[^\s{CUT_MARKER}]*+{CUT_MARKER}\Z")
_SEPARATORS = r"[\W_]*+"


def mask_values(text: str, values: Iterable[str]) -> str:
    """Mask every occurrence of each of ``values`` in ``text`` with ``***``.

    Matching ignores case and what separates a value's runs of letters and of digits:
    ``TEST-MBR-000101`` also matches ``test mbr 000101`` and ``TESTMBR000101``. A value is
    never matched inside a longer number; a short value (under four letters and digits) only
    as a whole word, or next to something already masked. Values with fewer than two
    letters and digits are ignored (an initial identifies no one). Longer values are masked
    first, so a full name wins over its parts.

    Text that was cut before it got here (it ends in ``"…"``) loses its last word: the cut
    may have left a prefix of a value ("Testp…") that no longer matches it. Only a bounded
    prefix of a huge text is scanned, as in :func:`redact_message`.
    """
    if len(text) > _SCAN_CHARS:
        text = _TRAILING_WORD.sub("", text[:_SCAN_CHARS]) + CUT_MARKER
    long_patterns: dict[str, int] = {}
    short_patterns: dict[str, int] = {}
    for value in values:
        runs = _VALUE_RUN.findall(value)
        size = sum(map(len, runs))
        if size < 2:
            continue
        body = _SEPARATORS.join(re.escape(run) for run in runs)
        if size < _WHOLE_WORD_BELOW:
            short_patterns[rf"(?<![^\W_]){body}(?![^\W_])"] = size
            continue
        before = r"(?<!\d)" if runs[0][0].isdigit() else ""
        after = r"(?!\d)" if runs[-1][-1].isdigit() else ""
        long_patterns[f"{before}{body}{after}"] = size
    if not long_patterns and not short_patterns:
        return text
    masked = _CUT_WORD.sub(CUT_MARKER, text)
    for patterns in (long_patterns, short_patterns):
        if patterns:
            ordered = sorted(patterns, key=lambda pattern: -patterns[pattern])
            masked = re.sub("|".join(ordered), _MASK, masked, flags=re.IGNORECASE)
    return masked
