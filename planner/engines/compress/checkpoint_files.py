"""What a written Hugging Face checkpoint holds, read from its files' headers, against the plan.

`read_tensors()` reads every *.safetensors file's header (8 bytes of length, then JSON; bounded) and
returns each tensor's name, dtype, shape and the bytes its data takes in the file. `verify_tensors()`
compares them with the plan's tensors (planner.core.serving.hf_checkpoint.Checkpoint.tensors()): every tensor
present with the planned dtype and shape, its bytes in the file equal to the planned bytes, and no
tensor the plan does not have. `verify_quantization_config()` checks config.json's quantization_config
against the format the scheme names.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from planner.core.serving.hf_checkpoint import DTYPE_BYTES, CkptTensor, Format
from planner.errors import RunError

MAX_HEADER_BYTES = 100 << 20          # safetensors' own limit on the JSON header

# safetensors dtype names -> the plan's
DTYPES = {"BF16": "bf16", "F16": "f16", "F32": "f32", "F8_E4M3": "f8_e4m3", "I8": "i8", "I32": "i32",
          "I64": "i64", "U8": "u8", "F64": "f64", "I16": "i16", "BOOL": "bool"}


@dataclass(frozen=True)
class FileTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int                  # data_offsets end - start
    file: str


@dataclass
class Mismatch:
    name: str
    what: str                    # dtype, shape, bytes, missing, unexpected, config
    predicted: str
    actual: str

    def __str__(self) -> str:
        return f"{self.name}: {self.what} planned {self.predicted}, written {self.actual}"


def read_header(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise RunError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", raw)
            if n > MAX_HEADER_BYTES:
                raise RunError(f"{path}: safetensors header of {n} bytes, more than {MAX_HEADER_BYTES}")
            doc = json.loads(f.read(n))
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:
        raise RunError(f"{path}: the safetensors header is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise RunError(f"{path}: the safetensors header is not an object")
    return doc


def read_tensors(folder: Path) -> dict[str, FileTensor]:
    out: dict[str, FileTensor] = {}
    for p in sorted(folder.glob("*.safetensors")):
        for name, info in read_header(p).items():
            if name == "__metadata__":
                continue
            try:
                start, end = info["data_offsets"]
                t = FileTensor(name, DTYPES.get(info["dtype"], info["dtype"].lower()),
                               tuple(int(x) for x in info["shape"]), int(end) - int(start), p.name)
            except (KeyError, TypeError, ValueError, AttributeError):
                raise RunError(f"{p}: tensor {name!r} has a malformed header entry") from None
            if name in out:
                raise RunError(f"{folder}: tensor {name} is in both {out[name].file} and {p.name}")
            out[name] = t
    return out


def verify_tensors(planned: list[CkptTensor], written: dict[str, FileTensor]) -> list[Mismatch]:
    out: list[Mismatch] = []
    left = dict(written)
    for p in planned:
        t = left.pop(p.name, None)
        if t is None:
            out.append(Mismatch(p.name, "missing", "present", "absent"))
            continue
        if t.dtype != p.dtype:
            out.append(Mismatch(p.name, "dtype", p.dtype, t.dtype))
        if t.shape != tuple(p.shape):
            out.append(Mismatch(p.name, "shape", str(list(p.shape)), str(list(t.shape))))
        if t.nbytes != p.bytes:
            out.append(Mismatch(p.name, "bytes", str(p.bytes), str(t.nbytes)))
        elif t.dtype in DTYPE_BYTES and t.nbytes != math.prod(t.shape) * DTYPE_BYTES[t.dtype]:
            out.append(Mismatch(p.name, "bytes", f"{math.prod(t.shape) * DTYPE_BYTES[t.dtype]} for its shape",
                                str(t.nbytes)))
    for name in left:
        out.append(Mismatch(name, "unexpected", "absent", f"in {left[name].file}"))
    return out


# compressed-tensors' format names and argument values for the formats made here
_EXPECTED = {
    # method, weight dtype -> (format, weights{...}, input activations{...} or None)
    ("channel", "f8_e4m3"): ("float-quantized", {"num_bits": 8, "type": "float", "strategy": "channel",
                                                 "symmetric": True, "group_size": None},
                             {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True}),
    ("channel", "i8"): ("int-quantized", {"num_bits": 8, "type": "int", "strategy": "channel", "symmetric": True,
                                          "group_size": None},
                        {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True}),
    ("group", "i32"): ("pack-quantized", {"num_bits": 4, "type": "int", "strategy": "group", "symmetric": True},
                       None),
}


def expected_config(fmt: Format, group_size: int) -> tuple[str, dict, dict | None]:
    fmt_name, w, a = _EXPECTED[(fmt.method, fmt.weight_dtype)]
    w = dict(w)
    if fmt.method == "group":
        w["group_size"] = group_size
        w["symmetric"] = fmt.symmetric
    return fmt_name, w, a


def verify_quantization_config(folder: Path, fmt: Format, group_size: int, ignore: tuple[str, ...]) -> list[Mismatch]:
    """config.json's quantization_config against the format: compressed-tensors, compressed, one
    config group with the format's weight (and activation) arguments, and the recipe's ignore list."""
    where = "config.json quantization_config"
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        return [Mismatch(where, "config", "readable", str(e))]
    qc = cfg.get("quantization_config") if isinstance(cfg, dict) else None
    if not isinstance(qc, dict):
        return [Mismatch(where, "config", "present", "absent")]
    fmt_name, w_want, a_want = expected_config(fmt, group_size)
    out: list[Mismatch] = []

    def check(key: str, want, got) -> None:
        if want != got:
            out.append(Mismatch(f"{where}.{key}", "config", json.dumps(want), json.dumps(got)))

    check("quant_method", "compressed-tensors", qc.get("quant_method"))
    check("quantization_status", "compressed", qc.get("quantization_status"))
    check("format", fmt_name, qc.get("format"))
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or len(groups) != 1:
        check("config_groups", "one group", f"{len(groups) if isinstance(groups, dict) else 0} groups")
        return out
    (gname, g), = groups.items()
    if not isinstance(g, dict):
        check(f"config_groups.{gname}", "an object", type(g).__name__)
        return out
    w = g.get("weights") or {}
    for k, v in w_want.items():
        check(f"config_groups.{gname}.weights.{k}", v, w.get(k))
    a = g.get("input_activations")
    if a_want is None:
        check(f"config_groups.{gname}.input_activations", None, a)
    else:
        a = a or {}
        for k, v in a_want.items():
            check(f"config_groups.{gname}.input_activations.{k}", v, a.get(k))
    got_ignore = qc.get("ignore") or []
    for pat in ignore:
        if pat.startswith("re:"):
            continue               # compressed-tensors writes the matched module names, not the pattern
        if pat not in got_ignore:
            check("ignore", f"contains {pat}", got_ignore)
    return out


def checkpoint_bytes(folder: Path) -> int:
    return sum(os.path.getsize(p) for p in folder.glob("*.safetensors"))
