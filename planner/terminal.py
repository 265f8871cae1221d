"""Terminal text shared by the parsers of child-process output and the plain-text renderers."""

from __future__ import annotations

import re

# CSI sequences: colours (ESC[0;31m) and the cursor/private modes progress bars emit on a terminal (ESC[?25l)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)
