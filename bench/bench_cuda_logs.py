"""The CUDA memory model against published llama.cpp runs on NVIDIA GPUs; writes bench/out/cuda_logs.md.

Each case of tests/fixtures/cuda_logs/cases.toml is planned as the run it is (model, file type, devices,
-c, -ub, -b, -fa, -ngl, -ts, -ot) with the CUDA backend's compute model, and every buffer line of its log
(model, KV, compute per device, CUDA_Host) is compared with the plan. Fork logs (fork/) are not scored.

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
    from planner.core.memory import MemoryOptions, Slot, plan_memory
    from planner.core.schemes import resolve_scheme
    from planner.core.sizing import resolve_catalog_model, size_scheme

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
        backend="CUDA")
    return plan_memory(model.hparams, sp.tensors, slots, opts)


def compare(case: dict) -> list[Row]:
    from planner.engines.llamacpp.logs import parse_memory

    rep = parse_memory((CASES / case["file"]).read_text().splitlines())
    mem = plan_case(case)
    dev = {d.device: d for d in mem.per_device}
    rows: list[Row] = []
    name = case["file"].removesuffix(".txt")

    def add(kind: str, buf: str, logged: float, planned: int) -> None:
        rows.append(Row(name, case["source"], kind, buf, logged, planned / MiB))

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


def summary(rows: list[Row], kind: str, device_kind: str) -> tuple[int, float, float] | None:
    errs = [abs(r.error) for r in rows if r.kind == kind and r.device_kind == device_kind]
    if not errs:
        return None
    return len(errs), statistics.median(errs), max(errs)


def main() -> int:
    cases = load_cases()
    rows = [r for c in cases for r in compare(c)]
    out = ["# CUDA memory model against published llama.cpp runs", "",
           f"{len(cases)} mainline case(s) from tests/fixtures/cuda_logs (fork logs kept apart, not scored).",
           "Planned with the CUDA backend's compute model; model buffers from the file's llama.cpp type.", "",
           "| what | device | lines | median error | worst error |", "| --- | --- | ---: | ---: | ---: |"]
    for kind in ("model", "KV", "compute"):
        for dk in ("GPU", "host"):
            s = summary(rows, kind, dk)
            if s:
                out.append(f"| {kind} | {dk} | {s[0]} | {100 * s[1]:.2f}% | {100 * s[2]:.2f}% |")
    out += ["", "| case | source | buffer | what | logged MiB | planned MiB | error |",
            "| --- | --- | --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r.case} | {r.source} | {r.buffer} | {r.kind} | {r.logged_mib:.2f} | {r.planned_mib:.2f} "
                   f"| {100 * r.error:+.2f}% |")
    text = "\n".join(out) + "\n"
    dst = ROOT / "bench" / "out" / "cuda_logs.md"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
