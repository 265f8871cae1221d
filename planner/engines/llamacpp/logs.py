"""Parsers for what llama.cpp prints: llama-quantize's per-tensor lines, the memory lines of a model
load (model/KV/compute/output buffers, the KV cache summary, the memory breakdown table) and
llama-fit-params' output.

Lines are recognised by their content, not by the function-name prefix llama.cpp puts in front (older
builds used other prefixes: llama_kv_cache_unified:, llama_new_context_with_model:, llm_load_tensors:).
Figures printed as "%8.2f MiB" are kept as printed (MiB, float); `mib_to_bytes_range` gives the byte
interval a printed figure stands for, which is how predictions are compared with them.

The formats (src/llama-quant.cpp llama_model_quantize_impl, src/llama-model.cpp load_tensors,
src/llama-kv-cache.cpp, src/llama-context.cpp, common/fit.cpp) are checked by the tests against output
captured from the real binaries (tests/fixtures/llamacpp/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from planner.terminal import strip_ansi

MIB = 1024 * 1024


def clean(line: str) -> str:
    return strip_ansi(line).rstrip("\r\n")


def mib_to_bytes_range(mib: float, decimals: int) -> tuple[int, int]:
    """The bytes [lo, hi] whose value printed with `decimals` places in MiB is `mib`."""
    half = 0.5 * 10 ** -decimals
    lo = max(0, int((mib - half) * MIB) + 1)
    hi = int((mib + half) * MIB)
    return lo, hi


def shows_as_mib(n_bytes: int, printed: float, decimals: int = 2) -> bool:
    """Whether llama.cpp would print `n_bytes` as `printed` ("%.{decimals}f MiB")."""
    return f"{n_bytes / MIB:.{decimals}f}" == f"{printed:.{decimals}f}"


# ---------------------------------------------------------------------------------------------------
# llama-quantize
# ---------------------------------------------------------------------------------------------------

# "[  27/ 142]   blk.1.ffn_down_exps.weight   - [   256,    256,      4,      1], type =    f16, "
_TENSOR_HEAD = re.compile(
    r"^\[\s*(?P<i>\d+)/\s*(?P<n>\d+)\]\s+(?P<name>\S+)\s+-\s+\[(?P<shape>[\s\d,]+)\],\s+type\s+=\s+(?P<src>\w+),\s*")
# the rest of a real run: "converting to q6_K .. size =     0.50 MiB ->     0.21 MiB"; other output can come
# between "converting to q6_K .. " and "size =" (the imatrix loader's lines, flushed late from stdout)
_CONVERTING = re.compile(r"converting to (?P<dst>\w+) \.\.")
_SIZES = re.compile(r"size =\s+(?P<a>[\d.]+) MiB ->\s+(?P<b>[\d.]+) MiB(?: \((?P<dst>\w+)\))?")
# copied unchanged (both modes): "size =    0.001 MiB"
_COPY = re.compile(r"size =\s+(?P<a>[\d.]+) MiB\s*$")
_FALLBACK = re.compile(
    r"warning:\s+(?P<name>\S+)\s+-\s+ncols\s+(?P<ncols>\d+) not divisible by\s+(?P<bs>\d+) \(required for type\s+"
    r"(?P<want>\w+)\)\s*(?:\(WARNING: must use F16 due to unusual shape\)\s*)?-> falling back to\s+(?P<got>\w+)")
_OVERRIDE = re.compile(r"(?P<name>\S+)\s+- applying manual override: (?P<old>\w+) -> (?P<new>\w+)")
_TOTALS = re.compile(r"(?P<what>model|quant) size\s+=\s+(?P<mib>[\d.]+) MiB \((?P<bpw>[\d.]+) BPW\)")


@dataclass
class QuantTensor:
    """One per-tensor line of llama-quantize."""

    index: int                       # 1-based, as printed
    total: int
    name: str
    ne: tuple[int, int, int, int]    # ggml order, 4 dims as printed
    src_type: str
    type: str                        # the type written (src_type when copied unchanged)
    src_mib: float
    mib: float                       # size written, MiB as printed (2 decimals; 3 when copied)
    converted: bool                  # False: copied unchanged

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.ne:
            n *= d
        return n

    @property
    def mib_decimals(self) -> int:
        return 2 if self.converted else 3


@dataclass
class QuantizeLog:
    """Everything recognised in one llama-quantize run."""

    tensors: list[QuantTensor] = field(default_factory=list)
    fallbacks: dict[str, tuple[str, str]] = field(default_factory=dict)   # name -> (wanted, used)
    overrides: dict[str, tuple[str, str]] = field(default_factory=dict)   # name -> (ftype's, manual)
    model_mib: float | None = None
    quant_mib: float | None = None
    dry_run: bool = False
    needs_imatrix: bool = False
    errors: list[str] = field(default_factory=list)

    def types(self) -> dict[str, str]:
        return {t.name: t.type for t in self.tensors}


class QuantizeLineParser:
    """Feeds on llama-quantize's output one line at a time; yields each tensor as it completes.

    A tensor's line can be interrupted by other output (imatrix notices are printed between
    "type = f16, " and "converting to", the imatrix loader's stdout between "converting to" and
    "size ="), so an unfinished tensor waits for the line with its size.
    """

    def __init__(self) -> None:
        self.log = QuantizeLog()
        self._pending: dict | None = None

    def feed(self, raw: str) -> QuantTensor | None:
        line = clean(raw)
        m = _TENSOR_HEAD.match(line)
        if m:
            ne = tuple(int(x) for x in m.group("shape").replace(" ", "").split(",") if x)
            ne = (ne + (1, 1, 1, 1))[:4]
            self._pending = {"index": int(m.group("i")), "total": int(m.group("n")), "name": m.group("name"),
                             "ne": ne, "src": m.group("src")}
            rest = line[m.end():]
            return self._finish(rest)
        if self._pending is not None:
            return self._finish(line)
        self._other(line)
        return None

    def _finish(self, rest: str) -> QuantTensor | None:
        p = self._pending
        if p is None:
            return None
        if (m := _CONVERTING.search(rest)):
            p["dst"] = m.group("dst")
            rest = rest[m.end():]
        t: QuantTensor | None = None
        if (m := _SIZES.search(rest)):
            dst = m.group("dst") or p.get("dst")
            if m.group("dst"):
                self.log.dry_run = True
            if dst is not None:
                t = QuantTensor(p["index"], p["total"], p["name"], p["ne"], p["src"], dst,
                                float(m.group("a")), float(m.group("b")), True)
        elif (m := _COPY.search(rest)) and "dst" not in p:
            t = QuantTensor(p["index"], p["total"], p["name"], p["ne"], p["src"], p["src"],
                            float(m.group("a")), float(m.group("a")), False)
        if t is not None:
            self._pending = None
            self.log.tensors.append(t)
        elif rest.strip():
            self._other(rest)
        return t

    def _other(self, line: str) -> None:
        log = self.log
        if (m := _FALLBACK.search(line)):
            log.fallbacks[m.group("name")] = (m.group("want"), m.group("got"))
        elif (m := _OVERRIDE.search(line)):
            log.overrides[m.group("name")] = (m.group("old"), m.group("new"))
        elif (m := _TOTALS.search(line)):
            if m.group("what") == "model":
                log.model_mib = float(m.group("mib"))
            else:
                log.quant_mib = float(m.group("mib"))
        elif "will require an imatrix" in line or "requires an importance matrix" in line:
            log.needs_imatrix = True
        if _is_error(line):
            log.errors.append(line.strip())


_ERROR_WORDS = re.compile(r"\b(error|failed|failure|invalid|cannot|unable|missing|malformed|bad arguments)\b", re.I)


def _is_error(line: str) -> bool:
    s = line.strip()
    if not s or s.startswith("[") and _TENSOR_HEAD.match(s):
        return False
    return bool(_ERROR_WORDS.search(s)) and "WARNING: dry run completed" not in s


def parse_quantize(lines: Iterable[str]) -> QuantizeLog:
    p = QuantizeLineParser()
    for line in lines:
        p.feed(line)
    return p.log


def quantize_error(lines: Iterable[str]) -> str:
    """The most telling error line of a failed llama-quantize run (llama.cpp's own words)."""
    lines = [clean(l).strip() for l in lines]
    for l in lines:
        m = re.search(r"failed to quantize: (.+)$", l)
        if m:
            return m.group(1).strip()
    for l in lines:
        if "ERROR:" in l:
            return l.split("ERROR:", 1)[1].strip()
    errs = [l for l in lines if _is_error(l)]
    # "main: failed to quantize model from ..." only says that something failed: prefer the cause
    causes = [l for l in errs if "failed to quantize model from" not in l]
    if causes:
        return causes[0]
    if errs:
        return errs[-1]
    rest = [l for l in lines if l]
    return rest[-1] if rest else "no output"


# ---------------------------------------------------------------------------------------------------
# model load: memory lines
# ---------------------------------------------------------------------------------------------------

_BUF = re.compile(r"(?P<buf>\S+)\s+(?P<kind>model|KV|compute|output|RS|LoRA) buffer size\s+=\s+(?P<mib>[\d.]+) MiB")
_KV_SUMMARY = re.compile(
    r"size\s+=\s+(?P<mib>[\d.]+) MiB \(\s*(?P<cells>\d+) cells,\s+(?P<layers>\d+) layers,\s+(?P<seqs>\d+)/\s*(?P<nseq>\d+) seqs\),"
    r"\s+K \((?P<kt>\w+)\):\s+(?P<k>[\d.]+) MiB,\s+V \((?P<vt>\w+)\):\s+(?P<v>[\d.]+) MiB")
# builds of 2024: "KV self size  = 1080.00 MiB, K (f16):  540.00 MiB, V (f16):  540.00 MiB"
_KV_OLD = re.compile(r"KV self size\s+=\s+(?P<mib>[\d.]+) MiB,\s+K \((?P<kt>\w+)\):\s+(?P<k>[\d.]+) MiB,"
                     r"\s+V \((?P<vt>\w+)\):\s+(?P<v>[\d.]+) MiB")
_FILE_SIZE = re.compile(r"file size\s+=\s+(?P<v>[\d.]+) (?P<u>MiB|GiB) \((?P<bpw>[\d.]+) BPW\)")
_N_CTX = re.compile(r"\bn_ctx\s+=\s+(\d+)")
# memory breakdown rows
_BD_DEVICE = re.compile(
    r"\|\s+-\s+(?P<name>.+?)\s+\|\s+(?P<total>\d+)\s+=\s+(?P<free>\d+)\s+\+\s+\(\s*(?P<self>\d+)\s+=\s+(?P<model>\d+)\s+\+"
    r"\s+(?P<context>\d+)\s+\+\s+(?P<compute>\d+)\s*\)\s+\+\s+(?P<unacc>-?\d+)\s+\|")
_BD_OTHER = re.compile(
    r"\|\s+-\s+(?P<name>.+?)\s+\|\s+(?P<self>\d+)\s+=\s+(?P<model>\d+)\s+\+\s+(?P<context>\d+)\s+\+\s+(?P<compute>\d+)\s+\|")


@dataclass
class KvSummary:
    mib: float
    cells: int
    layers: int
    seqs: int
    k_type: str
    k_mib: float
    v_type: str
    v_mib: float


@dataclass
class BreakdownRow:
    """One row of llama.cpp's memory breakdown table (whole MiB, truncated)."""

    name: str                       # "CUDA0 (RTX 4090)", "Host", "CPU_REPACK", "RPC0[127.0.0.1:50052] (...)"
    self_mib: int
    model_mib: int
    context_mib: int
    compute_mib: int
    total_mib: int | None = None    # devices only
    free_mib: int | None = None
    unaccounted_mib: int | None = None

    @property
    def device(self) -> str:
        """The device/buffer name without its description."""
        return self.name.split(" (", 1)[0]


@dataclass
class MemoryReport:
    """Memory figures of one model load, per buffer name (CPU, CPU_Mapped, CUDA0, RPC0[host:port] ...)."""

    model_mib: dict[str, float] = field(default_factory=dict)
    kv_mib: dict[str, float] = field(default_factory=dict)
    compute_mib: dict[str, float] = field(default_factory=dict)
    output_mib: dict[str, float] = field(default_factory=dict)
    kv: KvSummary | None = None
    file_mib: float | None = None
    n_ctx: int | None = None
    breakdown: list[BreakdownRow] = field(default_factory=list)

    def feed(self, raw: str) -> None:
        line = clean(raw)
        if (m := _BUF.search(line)):
            target = {"model": self.model_mib, "KV": self.kv_mib, "compute": self.compute_mib,
                      "output": self.output_mib}.get(m.group("kind"))
            if target is not None:
                # llama.cpp prints each buffer once per load; a repeated name (several buffers of one
                # type) adds up
                target[m.group("buf")] = round(target.get(m.group("buf"), 0.0) + float(m.group("mib")), 2)
            return
        if (m := _KV_SUMMARY.search(line)):
            self.kv = KvSummary(float(m.group("mib")), int(m.group("cells")), int(m.group("layers")),
                                int(m.group("nseq")), m.group("kt"), float(m.group("k")), m.group("vt"),
                                float(m.group("v")))
            return
        if (m := _KV_OLD.search(line)):
            self.kv = KvSummary(float(m.group("mib")), 0, 0, 0, m.group("kt"), float(m.group("k")),
                                m.group("vt"), float(m.group("v")))
            return
        if (m := _FILE_SIZE.search(line)):
            v = float(m.group("v"))
            self.file_mib = v * 1024 if m.group("u") == "GiB" else v
            return
        if "|" in line and "breakdown" in line:
            if (m := _BD_DEVICE.search(line)):
                self.breakdown.append(BreakdownRow(
                    m.group("name").strip(), int(m.group("self")), int(m.group("model")), int(m.group("context")),
                    int(m.group("compute")), int(m.group("total")), int(m.group("free")), int(m.group("unacc"))))
            elif (m := _BD_OTHER.search(line)):
                self.breakdown.append(BreakdownRow(
                    m.group("name").strip(), int(m.group("self")), int(m.group("model")), int(m.group("context")),
                    int(m.group("compute"))))
            return
        if self.n_ctx is None and (m := _N_CTX.search(line)) and "n_ctx_train" not in line:
            self.n_ctx = int(m.group(1))


def parse_memory(lines: Iterable[str]) -> MemoryReport:
    r = MemoryReport()
    for line in lines:
        r.feed(line)
    return r


# ---------------------------------------------------------------------------------------------------
# llama-fit-params
# ---------------------------------------------------------------------------------------------------

@dataclass
class FitDevice:
    name: str                 # "CPU", "CUDA0", "RPC0[127.0.0.1:50052]", "Host"
    model_mib: int
    context_mib: int
    compute_mib: int


@dataclass
class FitParams:
    """llama-fit-params: either its fitted arguments or (--fit-print on) its per-device estimate."""

    args: list[str] = field(default_factory=list)          # "-c 4096 -ngl 48 -ot ..." split
    devices: list[FitDevice] = field(default_factory=list)
    status: str | None = None                              # "success" | "failure" | "error"


_FIT_ROW = re.compile(r"^(?P<name>\S+) (?P<model>\d+) (?P<context>\d+) (?P<compute>\d+)\s*$")
_FIT_ARGS = re.compile(r"^-c \d+ -ngl -?\d+")


def parse_fit_params(lines: Iterable[str]) -> FitParams:
    """Parse stdout (and optionally stderr) of llama-fit-params."""
    import shlex

    out = FitParams()
    for raw in lines:
        line = clean(raw).strip()
        if (m := _FIT_ROW.match(line)):
            out.devices.append(FitDevice(m.group("name"), int(m.group("model")), int(m.group("context")),
                                         int(m.group("compute"))))
        elif _FIT_ARGS.match(line):
            out.args = shlex.split(line)
        elif "successfully fit params" in line:
            out.status = "success"
        elif "failed to fit params" in line or "failed to fit CLI arguments" in line:
            out.status = "failure"
        elif "encountered an error while trying to fit" in line:
            out.status = "error"
    return out


def iter_clean(lines: Iterable[str]) -> Iterator[str]:
    for l in lines:
        yield clean(l)
