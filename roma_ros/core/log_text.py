"""Make text that came from outside safe to put in a log line.

Anything a publisher controls (task ids, question ids, image formats, instructions) may carry
newlines, carriage returns or ANSI escape sequences, which would let it forge extra log lines
or repaint a terminal. `loggable` escapes every non-printable character and caps the length.
"""
from __future__ import annotations

LOG_TEXT_LIMIT = 160


def loggable(text: object, limit: int = LOG_TEXT_LIMIT) -> str:
    """`text` on one line: control characters escaped (\\n, \\x1b, ...), at most `limit` chars."""
    text = str(text)
    if len(text) > limit:
        text = f"{text[:limit]}...(+{len(text) - limit} chars)"
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
