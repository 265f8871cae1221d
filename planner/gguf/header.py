"""Header-only GGUF reading: metadata and tensor infos without ever touching the tensor data.

gguf's GGUFReader memory-maps the whole file and builds arrays over the tensor data, so it fails on a
partly downloaded file or on one shard of a split model. This reader parses only the header (magic,
version, key/value pairs, tensor infos) with the gguf package's constants (GGUF_MAGIC, GGUFValueType,
GGMLQuantizationType, GGML_QUANT_SIZES via planner.core.ggml.tensor_types, Keys), reading the file in
chunks until the tensor infos end; the data section is only measured against the file size.

    from planner.gguf.header import read_gguf
    h = read_gguf("DeepSeek-R1-Q4_K_M-00001-of-00009.gguf")   # follows the other shards present
    h.architecture, h.file_type_name, h.tensor_bytes, h.missing_shards, h.data_complete
    h.to_dict()                                                 # JSON-ready, giant arrays summarised

Split models (NAME-00001-of-0000N.gguf, as llama-gguf-split and the converter name them): every shard
present is read and the tensor infos merged; the metadata is the first shard's (the others carry only
the split.* keys); shards that are absent are listed in missing_shards.

Any malformed file raises PlannerError with one line: not a GGUF file, unsupported version, a header
that ends before its tensor infos (truncated), unknown value or tensor types, impossible shapes.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from gguf import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUFValueType, Keys

# llama.cpp's types, including those the gguf package lacks (Q2_0): planner.core.ggml.gguf_constants
from planner.core.ggml.gguf_constants import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from planner.core.data_files import open_regular
from planner.core.ggml.shards import shard_names
from planner.core.ggml.tensor_types import tensor_bytes, type_name
from planner.core.llamacpp.type_rules import FTYPES
from planner.errors import PlannerError

GGML_MAX_DIMS = 4
SUPPORTED_VERSIONS = (2, 3)
ARRAY_SUMMARY_LIMIT = 32          # arrays longer than this are summarised by to_dict()

_SCALAR = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d", GGUFValueType.BOOL: "?",
}
_NUMPY = {
    GGUFValueType.UINT8: "u1", GGUFValueType.INT8: "i1", GGUFValueType.UINT16: "u2", GGUFValueType.INT16: "i2",
    GGUFValueType.UINT32: "u4", GGUFValueType.INT32: "i4", GGUFValueType.FLOAT32: "f4",
    GGUFValueType.UINT64: "u8", GGUFValueType.INT64: "i8", GGUFValueType.FLOAT64: "f8", GGUFValueType.BOOL: "?",
}
_CHUNK = 1 << 20
MAX_ARRAY_NESTING = 8             # llama.cpp reads no nested arrays at all; gguf-py writes them
INT64_MAX = (1 << 63) - 1         # ggml's element counts are int64_t
SIZE_MAX = (1 << 64) - 1          # and its byte sizes and offsets size_t / uint64_t
# What one header may make this process allocate, checked on the counts before anything is read: a
# Python list item costs ~32 bytes and a tensor info ~400, so a 400 MB array or 79 MB of tensor infos
# would take gigabytes. The largest real headers hold ~1.3M array items (a 262k vocabulary's tokens,
# scores and types, 500k merges) and ~47k tensors (DeepSeek-V3 with one tensor per expert).
MAX_ARRAY_ITEMS = 1 << 22         # array items of one header in all (about 130 MB as Python lists)
MAX_TENSORS = 1 << 18             # tensor infos of one file (about 100 MB)

# llama-quantize's names of general.file_type values (planner.core.llamacpp.type_rules.FTYPES) plus the
# converter-only ones
_FTYPE_NAMES: dict[int, str] = {int(f): n for n, f in FTYPES.items()}
_FTYPE_NAMES.setdefault(int(LlamaFileType.ALL_F32), "F32")
for _f in LlamaFileType:
    _FTYPE_NAMES.setdefault(int(_f), _f.name.removeprefix("MOSTLY_"))


def shown(text: str, limit: int = 80) -> str:
    """A name from a file, quoted for a one-line message: control characters escaped, long ones cut."""
    if len(text) <= limit and text.isprintable() and "'" not in text:
        return f"'{text}'"
    r = repr(text[:limit])
    return r + ("..." if len(text) > limit else "")


def ftype_name(ftype: int | None) -> str | None:
    """llama-quantize's name of a general.file_type value ("Q4_K_M"), or None when absent."""
    if ftype is None:
        return None
    f = int(ftype) & ~int(LlamaFileType.GUESSED)
    return _FTYPE_NAMES.get(f, f"ftype {f}")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]             # ggml order: ne0 (the row length) first
    type: GGMLQuantizationType
    offset: int                        # absolute byte offset of the data in its file
    bytes: int                         # ggml_nbytes: rows x row size
    shard: int = 0                     # index into GGUFHeader.shards

    @property
    def type_name(self) -> str:
        return type_name(self.type)

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class ShardInfo:
    path: str
    version: int
    tensor_count: int
    kv_count: int
    alignment: int
    data_offset: int                   # where the data section starts (the header's end, aligned)
    data_bytes: int                    # bytes the tensor data needs past data_offset
    file_size: int
    split_no: int = 0
    header_end: int = 0                # where the tensor infos end (data_offset is this, aligned up)

    @property
    def complete(self) -> bool:
        """Every tensor's data lies inside the file (a partial download is not complete)."""
        return self.file_size >= self.data_offset + self.data_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "version": self.version, "tensor_count": self.tensor_count,
                "kv_count": self.kv_count, "alignment": self.alignment, "header_end": self.header_end,
                "data_offset": self.data_offset,
                "data_bytes": self.data_bytes, "file_size": self.file_size, "complete": self.complete}


@dataclass
class GGUFHeader:
    path: str                          # the file asked for
    metadata: dict[str, Any]           # every key/value pair; arrays as lists
    metadata_types: dict[str, GGUFValueType]
    tensors: list[TensorInfo]
    shards: list[ShardInfo]            # the files read, in shard order
    split_count: int = 1
    missing_shards: list[str] = field(default_factory=list)
    expected_tensor_count: int | None = None   # split.tensors.count of a split model
    empty_shards: list[str] = field(default_factory=list)   # of missing_shards: present but 0 bytes

    # -- the first (or only) file --------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.shards[0].version

    @property
    def alignment(self) -> int:
        return self.shards[0].alignment

    @property
    def data_offset(self) -> int:
        return self.shards[0].data_offset

    # -- the model as a whole --------------------------------------------------------------------
    @property
    def file_size(self) -> int:
        return sum(s.file_size for s in self.shards)

    @property
    def data_complete(self) -> bool:
        return not self.missing_shards and all(s.complete for s in self.shards)

    @property
    def architecture(self) -> str | None:
        a = self.metadata.get(Keys.General.ARCHITECTURE)
        return a if isinstance(a, str) else None

    @property
    def file_type(self) -> int | None:
        v = self.metadata.get(Keys.General.FILE_TYPE)
        return int(v) if isinstance(v, int) and not isinstance(v, bool) else None

    @property
    def file_type_name(self) -> str | None:
        return ftype_name(self.file_type)

    @property
    def tensor_count(self) -> int:
        return len(self.tensors)

    @property
    def tensor_bytes(self) -> int:
        return sum(t.bytes for t in self.tensors)

    def arch_key(self, key: str) -> str:
        """A Keys.LLM / Keys.Attention / Keys.Rope template ("{arch}.block_count") for this file."""
        return key.format(arch=self.architecture or "")

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(self.arch_key(key), default)

    def tensor(self, name: str) -> TensorInfo | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None

    def metadata_summary(self, limit: int = ARRAY_SUMMARY_LIMIT) -> dict[str, Any]:
        """The metadata for display: arrays longer than `limit` become {"type", "length", "head"}."""
        return {k: summarise(v, self.metadata_types.get(k), limit) for k, v in self.metadata.items()}

    def to_dict(self, limit: int = ARRAY_SUMMARY_LIMIT) -> dict[str, Any]:
        split = self.split_count > 1
        tensors = []
        for t in self.tensors:
            d: dict[str, Any] = {"name": t.name, "shape": list(t.shape), "type": t.type_name,
                                 "bytes": t.bytes, "offset": t.offset}
            if split:
                d["shard"] = self.shards[t.shard].split_no + 1
            tensors.append(d)
        return {
            "path": self.path,
            "architecture": self.architecture,
            "file_type": self.file_type_name,
            "file_type_id": self.file_type,
            "version": self.version,
            "alignment": self.alignment,
            "data_offset": self.data_offset,
            "file_size": self.file_size,
            "data_complete": self.data_complete,
            "split_count": self.split_count,
            "shards": [s.to_dict() for s in self.shards],
            "missing_shards": self.missing_shards,
            "empty_shards": self.empty_shards,
            "tensor_count": self.tensor_count,
            "tensor_bytes": self.tensor_bytes,
            "tensors": tensors,
            "metadata": self.metadata_summary(limit),
        }


def summarise(value: Any, vtype: GGUFValueType | None = None, limit: int = ARRAY_SUMMARY_LIMIT) -> Any:
    """A value for display: float32 with the digits it has, long arrays as {"type", "length", "head"}."""
    if isinstance(value, float) and vtype == GGUFValueType.FLOAT32:
        return float(f"{value:.7g}")
    if isinstance(value, list):
        if value and isinstance(value[0], float):
            value = [float(f"{v:.7g}") for v in value[:limit + 1]] + value[limit + 1:]
        if len(value) > limit:
            return {"type": f"array[{_array_item_type(value)}]", "length": len(value), "head": value[:8]}
    return value


def _array_item_type(value: list[Any]) -> str:
    if not value:
        return "?"
    v = value[0]
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    return "array"


# ---------------------------------------------------------------------------------------------------
# One file
# ---------------------------------------------------------------------------------------------------

class _Reader:
    """Sequential reads from the start of a file, fetched in chunks; never past what is asked for."""

    def __init__(self, f: BinaryIO, path: str, file_size: int) -> None:
        self.f = f
        self.path = path
        self.size = file_size
        self.buf = bytearray()
        self.pos = 0
        self.endian = "<"
        self.what = "header"
        self.items = 0                 # array items read so far (MAX_ARRAY_ITEMS)

    def need(self, n: int) -> None:
        end = self.pos + n
        if end > self.size:
            raise PlannerError(f"{self.path}: truncated GGUF header: the {self.what} at byte {self.pos} "
                               f"needs {n} bytes but the file ends at {self.size}")
        while len(self.buf) < end:
            chunk = self.f.read(max(end - len(self.buf), _CHUNK))
            if not chunk:
                raise PlannerError(f"{self.path}: truncated GGUF header: the file ends at byte "
                                   f"{len(self.buf)} inside the {self.what}")
            self.buf += chunk

    def take(self, n: int) -> bytes:
        self.need(n)
        b = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return b

    def scalar(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size)
        v = struct.unpack_from(self.endian + fmt, self.buf, self.pos)[0]
        self.pos += size
        return v

    def u32(self) -> int:
        return self.scalar("I")

    def u64(self) -> int:
        return self.scalar("Q")

    def string(self) -> str:
        n = self.u64()
        if n > self.size - self.pos:
            raise PlannerError(f"{self.path}: truncated or corrupt GGUF header: a string of {n} bytes at "
                               f"byte {self.pos} in the {self.what} runs past the end of the file ({self.size})")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, key: str, depth: int = 0) -> Any:
        try:
            vt = GGUFValueType(vtype)
        except ValueError:
            raise PlannerError(f"{self.path}: corrupt GGUF header: unknown value type {vtype} for key {shown(key)}") from None
        if vt == GGUFValueType.STRING:
            return self.string()
        if vt == GGUFValueType.ARRAY:
            item = self.u32()
            count = self.u64()
            self.items += count
            if self.items > MAX_ARRAY_ITEMS:
                raise PlannerError(f"{self.path}: GGUF header not read: its arrays hold more than {MAX_ARRAY_ITEMS:,} "
                                   f"items in all (array {shown(key)} has {count:,}; the largest real vocabularies "
                                   "need about 1.3 million)")
            try:
                it = GGUFValueType(item)
            except ValueError:
                raise PlannerError(f"{self.path}: corrupt GGUF header: unknown array item type {item} "
                                   f"for key {shown(key)}") from None
            if it in _NUMPY:
                size = np.dtype(_NUMPY[it]).itemsize
                if count * size > self.size - self.pos:
                    raise PlannerError(f"{self.path}: truncated or corrupt GGUF header: array {shown(key)} of {count} "
                                       f"items runs past the end of the file ({self.size})")
                arr = np.frombuffer(self.take(count * size), dtype=np.dtype(_NUMPY[it]).newbyteorder(self.endian))
                return arr.tolist()
            if count * 8 > self.size - self.pos:   # a string or an array takes at least 8 bytes
                raise PlannerError(f"{self.path}: truncated or corrupt GGUF header: array {shown(key)} of {count} "
                                   f"items runs past the end of the file ({self.size})")
            if it == GGUFValueType.STRING:
                return self._strings(count, key)
            if depth >= MAX_ARRAY_NESTING:
                raise PlannerError(f"{self.path}: corrupt GGUF header: array {shown(key)} nests arrays more than "
                                   f"{MAX_ARRAY_NESTING} deep")
            return [self.value(item, key, depth + 1) for _ in range(count)]
        return self.scalar(_SCALAR[vt])

    def _strings(self, count: int, key: str) -> list[str]:
        """A string array (vocabularies: 100k+ items), read without per-item method calls."""
        out: list[str] = []
        append = out.append
        unpack = struct.Struct(self.endian + "Q").unpack_from
        buf = self.buf
        pos = self.pos
        for _ in range(count):
            if pos + 8 > len(buf):
                self.pos = pos
                self.need(8)
                buf = self.buf
            n = unpack(buf, pos)[0]
            pos += 8
            if pos + n > len(buf):
                if n > self.size - pos:
                    raise PlannerError(f"{self.path}: truncated or corrupt GGUF header: a string of {n} bytes "
                                       f"in array {shown(key)} runs past the end of the file ({self.size})")
                self.pos = pos
                self.need(n)
                buf = self.buf
            append(buf[pos:pos + n].decode("utf-8", errors="replace"))
            pos += n
        self.pos = pos
        return out


def _read_one(path: Path, shard: int = 0, opened: tuple[BinaryIO, int] | None = None,
              ) -> tuple[ShardInfo, dict[str, Any], dict[str, GGUFValueType], list[TensorInfo]]:
    """opened: (a file object, its size) to read instead of the path (planner.gguf.remote's ranged reads)."""
    spath = str(path)
    f = open_regular(path) if opened is None else opened[0]
    with f:
        size = os.fstat(f.fileno()).st_size if opened is None else opened[1]
        r = _Reader(f, spath, size)
        if size == 0:
            raise PlannerError(f"{spath}: empty file, not a GGUF file")
        if size < 4:
            raise PlannerError(f"{spath}: not a GGUF file ({size} bytes)")
        r.what = "magic"
        magic = r.scalar("I")
        if magic != GGUF_MAGIC:
            raise PlannerError(f"{spath}: not a GGUF file (bad magic {bytes(r.buf[:4])!r}, expected b'GGUF')")
        r.what = "version"
        version = r.u32()
        if version & 0xFFFF == 0 and (version >> 24) in SUPPORTED_VERSIONS:
            r.endian = ">"
            version >>= 24
        if version == 1:
            raise PlannerError(f"{spath}: GGUF version 1 is not supported (versions 2 and 3 are)")
        if version not in SUPPORTED_VERSIONS:
            raise PlannerError(f"{spath}: unsupported GGUF version {version} (versions 2 and 3 are supported)")
        r.what = "tensor and key/value counts"
        n_tensors = r.u64()
        n_kv = r.u64()
        if n_tensors > size or n_kv > size:    # each takes bytes: the loops below end at the file's end
            raise PlannerError(f"{spath}: corrupt GGUF header: {n_tensors} tensors and {n_kv} key/value pairs "
                               f"cannot fit in {size} bytes")
        if n_tensors > MAX_TENSORS:
            raise PlannerError(f"{spath}: GGUF header not read: {n_tensors:,} tensors, more than the {MAX_TENSORS:,} "
                               "a model holds (DeepSeek-V3 with one tensor per expert has about 47,000)")

        metadata: dict[str, Any] = {}
        types: dict[str, GGUFValueType] = {}
        for i in range(n_kv):
            r.what = f"key/value pair {i + 1} of {n_kv}"
            key = r.string()
            vtype = r.u32()
            if key in metadata:
                raise PlannerError(f"{spath}: corrupt GGUF header: duplicate key {shown(key)}")
            metadata[key] = r.value(vtype, key)
            types[key] = GGUFValueType(vtype)

        alignment = metadata.get(Keys.General.ALIGNMENT, GGUF_DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
            raise PlannerError(f"{spath}: invalid {Keys.General.ALIGNMENT} {alignment!r} (a power of two)")

        raw: list[tuple[str, tuple[int, ...], int, int]] = []
        for i in range(n_tensors):
            r.what = f"tensor info {i + 1} of {n_tensors}"
            name = r.string()
            n_dims = r.u32()
            if n_dims < 1 or n_dims > GGML_MAX_DIMS:
                raise PlannerError(f"{spath}: corrupt GGUF header: tensor {shown(name)} has {n_dims} dimensions "
                                   f"(1 to {GGML_MAX_DIMS})")
            shape = tuple(r.u64() for _ in range(n_dims))
            ttype = r.u32()
            offset = r.u64()
            raw.append((name, shape, ttype, offset))
        header_end = r.pos

    data_offset = -(-header_end // alignment) * alignment
    tensors: list[TensorInfo] = []
    seen: set[str] = set()
    data_bytes = 0                     # the data section so far: each tensor padded to the alignment
    for name, shape, ttype, offset in raw:
        if name in seen:
            raise PlannerError(f"{spath}: corrupt GGUF header: duplicate tensor {shown(name)}")
        seen.add(name)
        try:
            t = GGMLQuantizationType(ttype)
        except ValueError:
            raise PlannerError(f"{spath}: tensor {shown(name)} has unknown ggml type id {ttype}") from None
        if t not in GGML_QUANT_SIZES:
            raise PlannerError(f"{spath}: tensor {shown(name)} has unsupported ggml type {t.name}")
        if any(d > INT64_MAX for d in shape):
            raise PlannerError(f"{spath}: corrupt GGUF header: tensor {shown(name)} has shape {list(shape)}")
        n_elements = 1
        for d in shape:
            n_elements *= d
        if n_elements > INT64_MAX:      # ggml_nelements is an int64_t (gguf.cpp refuses the same)
            raise PlannerError(f"{spath}: corrupt GGUF header: tensor {shown(name)} of shape {list(shape)} has "
                               f"{n_elements} elements, more than 2^63-1")
        try:
            nbytes = tensor_bytes(shape, t)
        except ValueError:
            raise PlannerError(f"{spath}: tensor {shown(name)}: rows of {shape[0]} elements are not whole "
                               f"{type_name(t)} blocks of {GGML_QUANT_SIZES[t][0]}") from None
        if offset % alignment:
            raise PlannerError(f"{spath}: tensor {shown(name)} data offset {offset} is not a multiple of the "
                               f"alignment {alignment}")
        if offset != data_bytes:         # llama.cpp's gguf.cpp: the tensors' data lie back to back
            raise PlannerError(f"{spath}: corrupt GGUF header: tensor {shown(name)} data offset {offset}, expected "
                               f"{data_bytes} (tensor data lies back to back in header order)")
        data_bytes = offset + -(-nbytes // alignment) * alignment
        if data_offset + data_bytes > SIZE_MAX:
            raise PlannerError(f"{spath}: corrupt GGUF header: the data of tensor {shown(name)} would end at byte "
                               f"{data_offset + data_bytes}, past 2^64")
        tensors.append(TensorInfo(name, shape, t, data_offset + offset, nbytes, shard))
    if tensors:                          # the last tensor needs its bytes, not its padding
        data_bytes = tensors[-1].offset - data_offset + tensors[-1].bytes

    split_no = metadata.get(Keys.Split.LLM_KV_SPLIT_NO, 0)
    info = ShardInfo(path=spath, version=version, tensor_count=n_tensors, kv_count=n_kv, alignment=alignment,
                     data_offset=data_offset, data_bytes=data_bytes, file_size=size,
                     split_no=int(split_no) if isinstance(split_no, int) else 0, header_end=header_end)
    return info, metadata, types, tensors


def read_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """One file's header alone (a shard is read as it is, without its siblings)."""
    info, md, types, tensors = _read_one(Path(path))
    return GGUFHeader(path=str(path), metadata=md, metadata_types=types, tensors=tensors, shards=[info])


# ---------------------------------------------------------------------------------------------------
# Split models
# ---------------------------------------------------------------------------------------------------

def shard_paths(path: str | os.PathLike[str]) -> list[Path] | None:
    """All shard paths of a split model from any one of its names, or None if the name is not a shard's."""
    p = Path(path)
    names = shard_names(p.name)
    return None if names is None else [p.with_name(n) for n in names]


def _empty(path: Path) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_size == 0 and stat.S_ISREG(st.st_mode)


def read_gguf(path: str | os.PathLike[str], *, opener: Any = None) -> GGUFHeader:
    """The header of a GGUF model: one file, or every shard present of a split model (any shard's name).

    Only headers are read. Shards that are absent are listed in missing_shards (their tensors are
    then unknown); the metadata is the first shard's. opener: files that are not local
    (planner.gguf.remote): opener.open(name) -> (file object, size), opener.shards(name) -> every
    shard's name or None; names are then strings, and every shard is read.
    """
    p = Path(path) if opener is None else path
    first_info, first_md, first_types, first_tensors = _read_one(p, opened=opener.open(p) if opener else None)
    count = first_md.get(Keys.Split.LLM_KV_SPLIT_COUNT, 1)
    count = int(count) if isinstance(count, int) and count > 0 else 1
    if count == 1:
        return GGUFHeader(path=str(path), metadata=first_md, metadata_types=first_types, tensors=first_tensors,
                          shards=[first_info])

    names = shard_paths(p) if opener is None else opener.shards(p)
    if names is None or len(names) != count:
        # a split model renamed away from NAME-0000i-of-0000N: only this file can be found
        names = [p if i == first_info.split_no else None for i in range(count)]  # type: ignore[misc]
    shards: list[ShardInfo] = []
    tensors: list[TensorInfo] = []
    metadata: dict[str, Any] = {}
    mtypes: dict[str, GGUFValueType] = {}
    missing: list[str] = []
    empty: list[str] = []
    seen: set[str] = set()
    for i, sp in enumerate(names):
        if sp is None:
            missing.append(f"shard {i + 1} of {count}")
            continue
        if sp == p:
            info, md, types, ts = first_info, first_md, first_types, first_tensors
        elif opener is not None:
            info, md, types, ts = _read_one(sp, opened=opener.open(sp))
        elif not sp.exists():
            missing.append(str(sp))
            continue
        elif _empty(sp):                 # a download not started yet: as good as missing
            missing.append(str(sp))
            empty.append(str(sp))
            continue
        else:
            info, md, types, ts = _read_one(sp)
        if md.get(Keys.Split.LLM_KV_SPLIT_NO, i) != i or md.get(Keys.Split.LLM_KV_SPLIT_COUNT, count) != count:
            raise PlannerError(f"{sp}: split.no/split.count say shard {md.get(Keys.Split.LLM_KV_SPLIT_NO)} of "
                               f"{md.get(Keys.Split.LLM_KV_SPLIT_COUNT)}, expected {i} of {count}")
        idx = len(shards)
        shards.append(info)
        for t in ts:
            if t.name in seen:
                raise PlannerError(f"{sp}: tensor {shown(t.name)} is also in an earlier shard")
            seen.add(t.name)
            tensors.append(TensorInfo(t.name, t.shape, t.type, t.offset, t.bytes, idx))
        for k, v in md.items():          # the first shard's keys first; later shards add split.* only
            if k not in metadata:
                metadata[k] = v
                mtypes[k] = types[k]
    expected = metadata.get(Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)
    return GGUFHeader(path=str(path), metadata=metadata, metadata_types=mtypes, tensors=tensors, shards=shards,
                      split_count=count, missing_shards=missing, empty_shards=empty,
                      expected_tensor_count=int(expected) if isinstance(expected, int) else None)
