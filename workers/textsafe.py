"""Text from a backlog or a user, made safe to print on a terminal.

Task names, lanes, errors and tracebacks come from whoever submitted or ran a
job; printed raw, an ESC sequence in them could clear the screen, retitle the
window or hide text. :func:`printable` shows every control, format or
otherwise non-printable character as a visible escape (``\\x1b``,
``\\u202e``); machine-readable JSON needs none of this (JSON escapes them).
"""

from __future__ import annotations

__all__ = ["printable"]

_SHORT = {"\t": "\\t", "\r": "\\r", "\n": "\\n"}


def printable(text: str, *, multiline: bool = False) -> str:
    """``text`` with non-printable characters escaped; ``multiline`` keeps ``\\n``."""
    if text.isprintable():
        return text
    out: list[str] = []
    for ch in text:
        if ch.isprintable() or (multiline and ch == "\n"):
            out.append(ch)
        elif ch in _SHORT:
            out.append(_SHORT[ch])
        else:
            code = ord(ch)
            if code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    return "".join(out)
