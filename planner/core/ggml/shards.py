"""The file names of a split GGUF model: NAME-00001-of-0000N.gguf, as llama.cpp's llama_split_path (and
llama-gguf-split, the converter) writes them."""

from __future__ import annotations

import re

SPLIT_RE = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
SHARD_FORMAT = "{prefix}-{no:05d}-of-{count:05d}.gguf"   # llama.cpp's llama_split_path


def shard_names(name: str) -> list[str] | None:
    """Every shard's file name of a split model from one shard's file name (no folder), in shard order;
    None when the name is not a shard's (or numbers a shard outside its count)."""
    m = SPLIT_RE.match(name)
    if not m:
        return None
    count = int(m["count"])
    if count < 1 or not 1 <= int(m["no"]) <= count:
        return None
    return [SHARD_FORMAT.format(prefix=m["prefix"], no=i, count=count) for i in range(1, count + 1)]
