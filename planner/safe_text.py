"""Text from files, servers and recipes made safe for a terminal or a shell script.

A GGUF's general.name, a recipe's id, a server's file name or error text can hold anything: a newline
that starts a new line in a generated script (a comment line then becomes a command), ANSI escapes
that rewrite the terminal, bidirectional overrides that show text in another order. `printable(s)`
writes every such character as a visible escape (`\\n`, `\\x1b`, `\\u202e`), so what reaches a script
or a terminal is one inert line; `keep` names the characters a multi-line document may keep (its own
newlines). `has_controls(s)` says whether a text would be changed.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls; the line and paragraph separators; the bidirectional embeddings,
# overrides and isolates (U+202A-U+202E, U+2066-U+2069) and marks (U+200E, U+200F, U+061C)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    o = ord(ch)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def printable(text: object, keep: str = "") -> str:
    """`text` with every control, separator and bidirectional-override character escaped (those in
    `keep` excepted)."""
    s = str(text)
    if not _UNSAFE.search(s):
        return s
    return _UNSAFE.sub(lambda m: m.group(0) if m.group(0) in keep else _escape(m.group(0)), s)


def has_controls(text: str) -> bool:
    return bool(_UNSAFE.search(text))


def json_text(dumped: str) -> str:
    """A JSON document (json.dumps with ensure_ascii=False) with the characters above written as \\uXXXX
    escapes: the same document, inert on a terminal (json itself escapes those below 0x20 inside strings;
    the line ends and indentation between them are the document's own)."""
    return _UNSAFE.sub(lambda m: m.group(0) if m.group(0) in "\n\r\t" else f"\\u{ord(m.group(0)):04x}",
                       dumped)
