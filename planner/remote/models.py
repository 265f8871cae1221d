"""A published Hugging Face model without its weights: config.json, and the safetensors headers.

    entry = remote_model_entry("hf://deepseek-ai/DeepSeek-V3.2")       # --model hf://OWNER/REPO
    ck = published_checkpoint("hf://deepseek-ai/DeepSeek-V3.2")        # exact checkpoint bytes per dtype

`remote_model_entry` reads config.json (hf://, ms:// or a URL of the folder or of config.json itself) and
builds the catalog entry from it as for a local folder (planner.core.catalog.hparams_from_config); a
repository the catalog knows (its hf_repo) keeps the catalog's id, so measured accuracy and the formats'
published repositories apply.

`published_checkpoint` reads model.safetensors.index.json (else the one model.safetensors) and every shard's
header: 8 bytes (the JSON's length, little-endian u64) and the JSON {name: {"dtype", "shape",
"data_offsets": [begin, end]}}: the exact stored bytes per dtype, without a byte of the weights (one
1-byte probe and one ranged read of about 256 KiB per shard, cached like GGUF headers; shards read 8 at
a time).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field, replace
from typing import Any

from planner.errors import PlannerError
from planner.remote import hubs
from planner.remote.client import HTTPStatusError, Progress, RemoteFile, fetch_json

ST_FIRST_CHUNK = 256 << 10
ST_MAX_HEADER = 100 << 20                 # safetensors' own limit (100,000,000 bytes), rounded up
ST_DTYPE_BYTES = {"f64": 8, "f32": 4, "f16": 2, "bf16": 2, "i64": 8, "i32": 4, "i16": 2, "i8": 1, "u8": 1,
                  "u16": 2, "u32": 4, "u64": 8, "bool": 1, "f8_e4m3": 1, "f8_e5m2": 1, "f8_e8m0": 1}
INDEX = "model.safetensors.index.json"
WORKERS = 8
MAX_SHARDS = 4096                         # DeepSeek-V3's checkpoint has 163; a header per file is read


def _base(loc: hubs.Location) -> tuple[str, str]:
    """(the folder path in the repository, '' for its root; for a URL: the folder URL)."""
    if loc.kind == "url":
        u = loc.spec.split("?", 1)[0]
        return (u.rsplit("/", 1)[0] if u.endswith(".json") else u.rstrip("/")), ""
    p = loc.path
    if p.endswith(".json"):
        p = p.rsplit("/", 1)[0] if "/" in p else ""
    return "", p.strip("/")


def _file(loc: hubs.Location, name: str) -> tuple[str, str]:
    """(download URL, display name) of a file beside config.json."""
    url_base, folder = _base(loc)
    if loc.kind == "url":
        return f"{url_base}/{name}", f"{url_base}/{name}"
    path = f"{folder}/{name}" if folder else name
    return loc.url(path), loc.display(path)


_MEMO: dict[tuple, Any] = {}


def clear_memo() -> None:
    _MEMO.clear()


def _memo(kind: str, spec: str, fn):
    key = (kind, spec, hubs.hf_endpoint(), hubs.ms_endpoint())
    if key not in _MEMO:
        _MEMO[key] = fn(spec)
    return _MEMO[key]


def remote_model_entry(spec: str):
    """The catalog entry of a published model's config.json (read once per process)."""
    return _memo("entry", spec, _remote_model_entry)


def _remote_model_entry(spec: str):
    from planner.core import catalog as cat

    loc = hubs.parse(spec)
    url, label = _file(loc, "config.json")
    cfg = fetch_json(url, loc.auth(), label, limit=4 << 20)
    if not isinstance(cfg, dict):
        raise PlannerError(f"config {label}: expected a JSON object, got {type(cfg).__name__}")
    hp = cat.hparams_from_config(cfg, label)
    repo = loc.repo if loc.kind != "url" else ""
    known = next((e for e in cat.catalog().values() if repo and e.hf_repo.lower() == repo.lower()), None)
    if known is not None:
        return replace(known, hparams=hp, source=label, config=cfg)
    name = repo.rsplit("/", 1)[-1] if repo else _base(loc)[0].rsplit("/", 1)[-1]
    return cat.ModelEntry(id=name, name=name, hparams=hp, source=label, hf_repo=repo, config=cfg)


@dataclass
class PublishedCheckpoint:
    spec: str
    files: list[str]
    dtype_bytes: dict[str, int]
    n_tensors: int
    index_total: int | None = None         # the index's metadata.total_size
    bytes_received: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        return sum(self.dtype_bytes.values())


def _header(f: RemoteFile) -> dict[str, Any]:
    r = f.reader()
    try:
        raw = r.read(8)
        if len(raw) < 8:
            raise PlannerError(f"{f.label}: {f.size} bytes, too short for a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > ST_MAX_HEADER or 8 + n > f.size:
            raise PlannerError(f"{f.label}: not a safetensors file (a header of {n} bytes in a file of {f.size})")
        text = r.read(n)
    finally:
        r.close()
    try:
        h = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PlannerError(f"{f.label}: the safetensors header is not valid JSON ({e})") from None
    if not isinstance(h, dict):
        raise PlannerError(f"{f.label}: the safetensors header is not a JSON object")
    return h


def _shard_bytes(label: str, h: dict[str, Any], size: int) -> tuple[dict[str, int], list[str]]:
    out: dict[str, int] = {}
    names = []
    for name, t in h.items():
        if name == "__metadata__":
            continue
        if not isinstance(t, dict):
            raise PlannerError(f"{label}: tensor {name!r} has no dtype/shape/data_offsets")
        dt, shape, off = str(t.get("dtype", "")).lower(), t.get("shape"), t.get("data_offsets")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
                and isinstance(off, list) and len(off) == 2 and all(isinstance(o, int) for o in off)
                and 0 <= off[0] <= off[1]):
            raise PlannerError(f"{label}: tensor {name!r} has an invalid shape or data_offsets")
        n = off[1] - off[0]
        if dt in ST_DTYPE_BYTES and n != math.prod(shape) * ST_DTYPE_BYTES[dt]:
            raise PlannerError(f"{label}: tensor {name!r} ({dt} {shape}) takes {n} bytes, expected "
                               f"{math.prod(shape) * ST_DTYPE_BYTES[dt]}")
        out[dt] = out.get(dt, 0) + n
        names.append(name)
    return out, names


def published_checkpoint(spec: str) -> PublishedCheckpoint:
    """The published checkpoint's bytes per dtype from its safetensors headers (read once per process)."""
    return _memo("checkpoint", spec, _published_checkpoint)


def _published_checkpoint(spec: str) -> PublishedCheckpoint:
    from concurrent.futures import ThreadPoolExecutor

    loc = hubs.parse(spec)
    auth = loc.auth()
    url, label = _file(loc, INDEX)
    index_total = None
    try:
        index = fetch_json(url, auth, label, limit=64 << 20)
        wm = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(wm, dict) or not wm or not all(isinstance(v, str) for v in wm.values()):
            raise PlannerError(f"{label}: no weight_map of tensor -> file")
        files = sorted(set(wm.values()))
        if len(files) > MAX_SHARDS or any("/" in f and ".." in f.split("/") for f in files):
            raise PlannerError(f"{label}: the weight_map names {len(files)} files (at most {MAX_SHARDS}, "
                               "inside the repository)")
        meta = index.get("metadata")
        tot = meta.get("total_size") if isinstance(meta, dict) else None
        index_total = tot if isinstance(tot, int) and not isinstance(tot, bool) else None
    except HTTPStatusError as e:
        if e.status != 404:
            raise
        files, wm = ["model.safetensors"], None
    progress = Progress(f"safetensors headers of {spec}")

    def one(name: str):
        u, lab = _file(loc, name)
        f = RemoteFile(u, lab, auth, progress, first_chunk=ST_FIRST_CHUNK).open()
        b, names = _shard_bytes(lab, _header(f), f.size)
        return b, names, f.sent

    try:
        with ThreadPoolExecutor(max_workers=min(WORKERS, len(files))) as ex:
            results = list(ex.map(one, files))
    finally:
        progress.done()
    dtype_bytes: dict[str, int] = {}
    n = 0
    sent = 0
    seen: set[str] = set()
    for b, names, s in results:
        for k, v in b.items():
            dtype_bytes[k] = dtype_bytes.get(k, 0) + v
        n += len(names)
        seen.update(names)
        sent += s
    ck = PublishedCheckpoint(spec, files, dict(sorted(dtype_bytes.items())), n, index_total, sent)
    if wm is not None and set(wm) != seen:
        ck.notes.append(f"the index names {len(wm)} tensors, the shard headers hold {len(seen)}")
    return ck


def checkpoint_note(ck: PublishedCheckpoint, planned_id: str | None, planned_bytes: int | None) -> str:
    parts = ", ".join(f"{k} {v:,}" for k, v in sorted(ck.dtype_bytes.items(), key=lambda kv: -kv[1]))
    s = (f"published checkpoint {ck.spec}: {ck.size_bytes:,} bytes in {len(ck.files)} safetensors file"
         f"{'s' if len(ck.files) != 1 else ''}, {ck.n_tensors:,} tensors ({parts}), from their headers")
    if ck.index_total is not None and ck.index_total != ck.size_bytes:
        s += f"; the index's total_size says {ck.index_total:,}"
    if planned_id is not None and planned_bytes is not None:
        d = ck.size_bytes - planned_bytes
        s += (f"; the {planned_id} plan: {planned_bytes:,} bytes "
              + ("(the same)" if d == 0 else f"(published {d:+,} bytes, {100 * d / planned_bytes:+.3f}%)"))
    return s


def add_checkpoint_notes(plan, spec: str, entry) -> PublishedCheckpoint:
    """The published checkpoint's exact bytes beside the plan of its own format (the format whose
    requires_quant_method is the config's quantization_config.quant_method, else BF16)."""
    from planner.core.serving.hf_checkpoint import formats_for

    ck = published_checkpoint(spec)
    qm = ((entry.config or {}).get("quantization_config") or {}).get("quant_method")
    own = next((f.id for f in formats_for(entry) if qm and f.requires_quant_method == qm), None) or (
        None if qm else "BF16")
    scheme = next((s for s in plan.schemes if s.id == own), None)
    note = checkpoint_note(ck, own if scheme else None, scheme.size_bytes if scheme else None)
    plan.notes.append(note)
    plan.notes.extend(ck.notes)
    if scheme is not None:
        scheme.notes.append(note)
    plan.published_checkpoint = {"spec": ck.spec, "files": len(ck.files), "tensors": ck.n_tensors,  # type: ignore[attr-defined]
                                 "size_bytes": ck.size_bytes, "dtype_bytes": ck.dtype_bytes,
                                 "index_total_size": ck.index_total, "format": own,
                                 "planned_bytes": scheme.size_bytes if scheme else None}
    return ck
