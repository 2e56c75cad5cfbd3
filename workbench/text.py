"""Text that came from outside (folder and file names, shard labels, spec values, error messages) made safe
to show: in a terminal, a TUI cell or header, an exported table or a spreadsheet. One place, so every
face shows the same thing.

A control or format character (ESC, BEL, NUL, a bidi override such as U+202E) would otherwise reach the
terminal: retitle it, recolour it, or reorder what the reader sees. Each is shown as a visible escape
(`\\x1b`, `\\u202e`) instead. This module imports nothing of the product: every layer may use it.
"""

from __future__ import annotations

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula


def _escaped(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, keep: str = "") -> str:
    """`text` with every character that is not printable (control, format, surrogate, private-use,
    unassigned, line and paragraph separators, spaces other than ' ') shown escaped; `keep`: characters
    to leave as they are (a log keeps "\\n")."""
    if text.isprintable():  # the common case, at C speed
        return text
    return "".join(c if c.isprintable() or c in keep else _escaped(c) for c in text)


def spreadsheet_cell(value):
    """A CSV cell that a spreadsheet shows as text: a string that would start a formula (`=1+1`,
    `@SUM(...)`, `-2+3`) gets a leading apostrophe; every string is `printable`. Numbers pass as they are."""
    if not isinstance(value, str):
        return value
    value = printable(value)
    return "'" + value if value.startswith(FORMULA_START) else value
