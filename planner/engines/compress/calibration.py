"""Calibration text for llm-compressor from a local file: nothing is downloaded.

Two layouts, told apart by the first non-blank line: JSON Lines (it starts with "{") where each line is
an object with a string "text" field, or plain text with one sample per line. Blank lines are skipped;
the first `samples` samples are taken. Every read is bounded: at most MAX_FILE_BYTES are read, and a
sample longer than MAX_SAMPLE_CHARS is cut there (the tokenizer cuts it to --max-seq-len tokens anyway).
"""

from __future__ import annotations

import json
from pathlib import Path

from planner.core.data_files import open_regular
from planner.errors import PlannerError

MAX_FILE_BYTES = 1 << 30          # 1 GiB read at most
MAX_SAMPLE_CHARS = 1 << 20        # 1 Mi characters kept of one sample
MAX_SAMPLES = 1 << 20


def read_samples(path: str | Path, samples: int) -> list[str]:
    """The first `samples` samples of the file; PlannerError (exit 2, one line) for a file that is not
    readable text, a JSONL line without a string "text", or no sample at all."""
    where = f"--calibration {path}"
    out: list[str] = []
    jsonl: bool | None = None
    read = 0
    with open_regular(path, "--calibration") as f:
        for lineno, raw in enumerate(f, 1):
            read += len(raw)
            if read > MAX_FILE_BYTES:
                break
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise PlannerError(f"{where}: line {lineno} is not UTF-8 text") from None
            if not line.strip():
                continue
            if jsonl is None:
                jsonl = line.lstrip().startswith("{")
            if jsonl:
                try:
                    doc = json.loads(line)
                except ValueError as e:
                    raise PlannerError(f"{where}: line {lineno} is not JSON ({e.msg})") from None
                text = doc.get("text") if isinstance(doc, dict) else None
                if not isinstance(text, str):
                    raise PlannerError(f"{where}: line {lineno} has no string \"text\" field")
                if not text.strip():
                    continue
            else:
                text = line
            out.append(text[:MAX_SAMPLE_CHARS])
            if len(out) >= samples:
                break
    if not out:
        raise PlannerError(f"{where}: no calibration samples (text lines, or JSON lines with a \"text\" field)")
    return out
