"""The CUDA memory model against published llama.cpp runs on NVIDIA GPUs; writes bench/out/cuda_logs.md.

Each case of tests/fixtures/cuda_logs/cases.toml is planned as the run it is (model, file type, devices,
-c, -ub, -b, -fa, -ngl, -ts, -ot, the KV layout and mask type of the llama.cpp it ran) with the CUDA
backend's compute model, and every buffer line of its log (model, KV, compute per device, CUDA_Host) is
compared with the plan. A row is scored unless the case says why not: model buffers where only the
file's per-type counts are known (types_known = false), and the rows a case lists in `unscored` (with
its reason in cases.toml). Fork logs (fork/) are not planned at all.

    python bench/bench_cuda_logs.py
"""

from __future__ import annotations

import statistics
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "tests" / "fixtures" / "cuda_logs"
MiB = 1 << 20


@dataclass
class Row:
    case: str
    source: str
    kind: str          # model | KV | compute
    buffer: str        # CUDA0 ... | host (CUDA_Host, CPU, CPU_Mapped)
    logged_mib: float
    planned_mib: float
    scored: bool = True

    @property
    def error(self) -> float:
        return (self.planned_mib - self.logged_mib) / self.logged_mib if self.logged_mib else 0.0

    @property
    def device_kind(self) -> str:
        return "host" if self.buffer == "host" else "GPU"


def load_cases() -> list[dict]:
    return tomllib.loads((CASES / "cases.toml").read_text())["case"]


def plan_case(case: dict):
    from planner.core.catalog import catalog
    from planner.core.llamacpp.memory import MemoryOptions, Slot, plan_memory
    from planner.core.llamacpp.schemes import resolve_scheme
    from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme

    model = resolve_catalog_model(catalog()[case["model"]], case.get("layout"))
    sp = size_scheme(model, resolve_scheme(case["scheme"]))
    slots = [Slot(f"{case.get('device', 'CUDA')}{i}", 1 << 50) for i in range(case["gpus"])]
    opts = MemoryOptions(
        ctx=case["ctx"], kv_mode=case.get("kv_mode", "mla" if model.hparams.arch == "deepseek2" else None),
        cache_type_k=case.get("cache_type_k", "f16"), cache_type_v=case.get("cache_type_v", "f16"),
        flash_attn=case.get("flash_attn", "on") != "off", parallel=case.get("parallel", 1),
        ubatch=case.get("ubatch", 512), batch=case.get("batch", 2048), ngl=case.get("ngl"),
        n_cpu_moe=case.get("n_cpu_moe", 0),
        tensor_split=tuple(case["tensor_split"]) if case.get("tensor_split") else None,
        tensor_overrides=tuple(tuple(r.split("=", 1)) for r in case.get("overrides", [])),  # type: ignore[misc]
        backend="CUDA", mask_f16=case.get("mask_f16", True),
        ngl_output_first=case.get("ngl_output_first", True), op_offload=case.get("op_offload", True))
    return plan_memory(model.hparams, sp.tensors, slots, opts)


def compare(case: dict) -> list[Row]:
    from planner.engines.llamacpp.logs import parse_memory

    rep = parse_memory((CASES / case["file"]).read_text().splitlines())
    mem = plan_case(case)
    dev = {d.device: d for d in mem.per_device}
    rows: list[Row] = []
    name = case["file"].removesuffix(".txt")
    unscored = set(case.get("unscored", []))
    types_known = case.get("types_known", True)

    def add(kind: str, buf: str, logged: float, planned: int) -> None:
        scored = f"{buf} {kind}" not in unscored and (kind != "model" or types_known)
        rows.append(Row(name, case["source"], kind, buf, logged, planned / MiB, scored))

    host_buf = f"{case.get('device', 'CUDA')}_Host"
    host_model = sum(v for k, v in rep.model_mib.items() if k not in dev)
    for buf, mib in rep.model_mib.items():
        if buf in dev:
            add("model", buf, mib, dev[buf].weights_bytes)
    if host_model:
        add("model", "host", host_model, mem.host.weights_bytes)
    for buf, mib in rep.kv_mib.items():
        if buf in dev:
            add("KV", buf, mib, dev[buf].kv_bytes)
    for buf, mib in rep.compute_mib.items():
        if buf in dev:
            add("compute", buf, mib, dev[buf].compute_bytes)
        elif buf in (host_buf, "CPU"):
            add("compute", "host", mib, mem.host.compute_bytes)
    return rows


def is_hybrid(case: dict) -> bool:
    """Weights in host memory while GPUs compute (-ot ...=CPU, --n-cpu-moe, -ngl below every layer): the
    runs whose GPU compute buffers hold op offload's weight copies (or, with --no-op-offload, do not)."""
    return bool(case.get("n_cpu_moe") or case.get("ngl") is not None
                or any(r.endswith("=CPU") for r in case.get("overrides", [])))


def summary(rows: list[Row], kind: str, device_kind: str | None = None) -> tuple[int, float, float, Row] | None:
    """(lines, median |error|, worst |error|, the worst row) of the scored rows of one kind."""
    sel = [r for r in rows if r.scored and r.kind == kind and (device_kind is None or r.device_kind == device_kind)]
    if not sel:
        return None
    worst = max(sel, key=lambda r: abs(r.error))
    return len(sel), statistics.median(abs(r.error) for r in sel), abs(worst.error), worst


def equal_to_the_mib(rows: list[Row], kind: str) -> tuple[int, int]:
    """(scored lines whose planned figure prints as the logged one, scored lines) for model or KV."""
    sel = [r for r in rows if r.scored and r.kind == kind]
    return sum(f"{r.planned_mib:.2f}" == f"{r.logged_mib:.2f}" for r in sel), len(sel)


def main() -> int:
    cases = load_cases()
    rows = [r for c in cases for r in compare(c)]
    nvidia = [c for c in cases if c.get("device", "CUDA") == "CUDA"]
    others = ", ".join(f"{sum(c.get('device') == d for c in cases)} {d}" for d in
                       sorted({c["device"] for c in cases if c.get("device", "CUDA") != "CUDA"}))
    out = ["# CUDA memory model against published llama.cpp runs", "",
           f"{len(cases)} cases from tests/fixtures/cuda_logs ({len(nvidia)} on NVIDIA GPUs"
           + (f"; the others ggml-cuda built for other GPUs: {others}" if others else "") + "); fork logs "
           "(ik_llama.cpp) kept apart, not planned. Each case is planned as the run it "
           "is, with the KV layout and mask type of the llama.cpp it ran (cases.toml); model buffers from the "
           "file's llama.cpp type.", ""]
    for kind in ("model", "KV"):
        eq, n = equal_to_the_mib(rows, kind)
        out.append(f"- {kind} buffers: {eq} of {n} scored lines equal to the MiB")
    for dk in ("GPU", "host"):
        s = summary(rows, "compute", dk)
        if s:
            out.append(f"- compute buffers, {dk}: {s[0]} lines, median |error| {100 * s[1]:.2f}%, worst "
                       f"{100 * s[2]:.2f}% ({s[3].case} {s[3].buffer})")
    s = summary(rows, "compute")
    if s:
        out.append(f"- compute buffers, all: {s[0]} lines, median |error| {100 * s[1]:.2f}%, worst {100 * s[2]:.2f}% "
                   f"({s[3].case} {s[3].buffer})")
    out.append(f"- rows not scored: {sum(not r.scored for r in rows)} (a case's types known only as counts, "
               "or a row it lists with its reason)")
    hybrid = [c for c in cases if is_hybrid(c)]
    hrows = [r for c in hybrid for r in compare(c) if r.kind == "compute"]
    hs = [r for r in hrows if r.scored]
    out.append(f"- hybrid runs (weights in host memory; op offload {'on' if all(c.get('op_offload', True) for c in hybrid) else 'on/off'}): "
               f"{len(hybrid)} cases, {len(hs)} scored compute lines, worst |error| "
               + (f"{100 * max(abs(r.error) for r in hs):.2f}%" if hs else "-"))
    out += ["", "## Hybrid runs, compute buffers per device", ""]
    for c in hybrid:
        where = (f"-ngl {c['ngl']}" if c.get("ngl") is not None else "") + \
                (f" --n-cpu-moe {c['n_cpu_moe']}" if c.get("n_cpu_moe") else "") + \
                (" -ot " + " -ot ".join(c["overrides"]) if c.get("overrides") else "") + \
                ("" if c.get("op_offload", True) else " --no-op-offload")
        out.append(f"- {c['file'].removesuffix('.txt')}: `{where.strip()}`, -c {c['ctx']}, -ub {c.get('ubatch', 512)}, "
                   f"-fa {c.get('flash_attn', 'on')}")
    out += ["", "| case | buffer | logged MiB | planned MiB | error | scored |", "| --- | --- | ---: | ---: | ---: | --- |"]
    for r in hrows:
        out.append(f"| {r.case} | {r.buffer} | {r.logged_mib:.2f} | {r.planned_mib:.2f} | {100 * r.error:+.2f}% "
                   f"| {'yes' if r.scored else 'no'} |")
    out += ["", "## Cases", "", "| case | runner | date | source |", "| --- | --- | --- | --- |"]
    for c in cases:
        out.append(f"| {c['file'].removesuffix('.txt')} | {c.get('runner', '')} | {c.get('date', '')} | {c['source']} |")
    why = [(c["file"].removesuffix(".txt"), c["why_unscored"]) for c in cases if c.get("why_unscored")]
    if why:
        out += ["", "Not scored:", ""] + [f"- {name}: {reason}" for name, reason in why]
    out += ["", "## Per buffer", "", "| case | buffer | what | logged MiB | planned MiB | error | scored |",
            "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        out.append(f"| {r.case} | {r.buffer} | {r.kind} | {r.logged_mib:.2f} | {r.planned_mib:.2f} "
                   f"| {100 * r.error:+.2f}% | {'yes' if r.scored else 'no'} |")
    text = "\n".join(out) + "\n"
    dst = ROOT / "bench" / "out" / "cuda_logs.md"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
