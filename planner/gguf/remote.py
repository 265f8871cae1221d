"""GGUF headers of published files, read remotely: only header bytes move.

    from planner.gguf.remote import read_remote_gguf
    h = read_remote_gguf("hf://unsloth/DeepSeek-R1-GGUF", quant="UD-Q2_K_XL")   # every shard's header
    h = read_remote_gguf("https://host/DeepSeek-R1-Q4_K_M-00001-of-00009.gguf")
    h = read_remote_gguf("ms://OWNER/REPO/PATH.gguf")

The same parser as local files (planner.gguf.header.read_gguf) reads from range-reading file objects
(planner.remote.client): each shard costs a 1-byte probe (size, ETag) and ranged reads that grow as the
parser asks (a large vocabulary makes a first shard's header several MB; the other shards hold a few
hundred KB of tensor infos). The bytes read are kept in the header cache, so a second plan of the same
files moves only the probes. Split sets: every shard's header is read and the totals are the set's; a
shard that cannot be read is an error (a published set is complete), not a missing shard.
"""

from __future__ import annotations

from planner.errors import PlannerError
from planner.gguf.header import GGUFHeader, read_gguf
from planner.remote import hubs
from planner.remote.client import Progress, RemoteFile


class _Opener:
    """read_gguf's opener: names (URLs or hf://, ms:// names) to range-reading file objects."""

    def __init__(self, loc: hubs.Location, urls: dict[str, str], shards: list[str] | None,
                 progress: Progress, use_cache: bool = True) -> None:
        self.use_cache = use_cache
        self.loc = loc
        self.urls = urls                       # display name -> download URL
        self.set = shards
        self.progress = progress
        self.files: list[RemoteFile] = []

    def url(self, name: str) -> str:
        if name in self.urls:
            return self.urls[name]
        if self.loc.kind == "url":
            return name
        prefix = self.loc.display("")
        if not name.startswith(prefix):
            raise PlannerError(f"{name}: not in {self.loc.repo}")
        return self.loc.url(name[len(prefix):])

    def open(self, name: str):
        names = self.shards(name) or [name]
        n = len(names)
        i = names.index(name) + 1 if name in names else 1
        self.progress.current = f"shard {i} of {n}" if n > 1 else ""
        f = RemoteFile(self.url(name), str(name), self.loc.auth(), self.progress, magic=b"GGUF",
                       use_cache=self.use_cache).open()
        self.files.append(f)
        return f.reader(), f.size

    def shards(self, name: str) -> list[str] | None:
        return self.set if self.set is not None else hubs.sibling_shards(name)

    @property
    def bytes_received(self) -> int:
        return sum(f.sent for f in self.files)


_MEMO: dict[tuple, GGUFHeader] = {}


def clear_memo() -> None:
    """Forget the headers read in this process (the disk cache stays)."""
    _MEMO.clear()


def read_remote_gguf(spec: str, quant: str | None = None) -> GGUFHeader:
    """The header of a published GGUF model: a URL, hf://OWNER/REPO/PATH, ms://OWNER/REPO/PATH, or a
    repository (hf://OWNER/REPO, ms://OWNER/REPO) with `quant` naming one of its GGUF sets. Read once
    per process (the TUI re-plans on every change); a second process finds the bytes in the disk cache."""
    key = (spec, quant, hubs.hf_endpoint(), hubs.ms_endpoint())
    if key not in _MEMO:
        _MEMO[key] = _read(spec, quant)
    return _MEMO[key]


def _read(spec: str, quant: str | None) -> GGUFHeader:
    loc = hubs.parse(spec)
    urls: dict[str, str] = {}
    shards: list[str] | None = None
    if loc.kind == "url":
        if quant:
            raise PlannerError(f"--quant chooses a set in a hf:// or ms:// repository, not in a URL ({spec})")
        first = spec
    elif loc.path.lower().endswith(".gguf") and not quant:
        first = loc.display(loc.path)
    else:
        paths = hubs.choose_gguf_set(loc, hubs.list_files(loc), quant)
        shards = [loc.display(p) for p in paths]
        urls = {loc.display(p): loc.url(p) for p in paths}
        first = shards[0]
    progress = Progress(f"GGUF headers of {spec}")
    opener = _Opener(loc, urls, shards, progress)
    try:
        try:
            h = read_gguf(first, opener=opener)
        except PlannerError:
            if not any(f.from_cache for f in opener.files):
                raise
            # a cache entry that does not parse (written by another version, or damaged in a way its
            # checksum could not see): removed, and the header read again from the server
            for f in opener.files:
                f.discard_cache()
            opener = _Opener(loc, urls, shards, progress, use_cache=False)
            h = read_gguf(first, opener=opener)
    finally:
        progress.done()
    if shards is not None and h.split_count != len(shards):
        raise PlannerError(f"{first}: split.count is {h.split_count}, the repository lists {len(shards)} shards")
    h.path = spec if loc.kind == "url" or loc.path.lower().endswith(".gguf") else first
    h.bytes_received = opener.bytes_received        # type: ignore[attr-defined]
    return h
