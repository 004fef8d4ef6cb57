"""Text from anywhere (Kafka headers, keys) made safe to write to a terminal or a log line.

Header and key bytes come from any producer: a control character in them could move the
cursor, recolour the terminal or start a forged log line, so they are shown escaped.
"""

from __future__ import annotations

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` safe to write to a terminal: each character that is not printable (control
    characters such as NUL and ESC, line breaks, C1 controls) as a Python-style escape."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _ESCAPES.get(char) or _escape(char)
                   for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    return (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
            else f"\\U{code:08x}")
