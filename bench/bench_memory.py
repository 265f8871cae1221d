"""Prediction fidelity of the memory model against llama.cpp itself; writes bench/out/memory.md.

1. Full scale, no weights: sparse GGUFs carrying the real headers of the catalog architectures
   (DeepSeek-R1 and V2 in both deepseek2 layouts, V2-Lite, R1-Distill Qwen-7B/32B, Llama-8B/70B), fed to
   llama-fit-params on the CPU alone and over four loopback RPC devices, with flash attention on and off,
   at 4096 and 16384 tokens. Per device: weights, KV cache and compute buffer, planned vs llama.cpp.
2. Real runs of tiny generated models (llama-completion on the CPU): KV, weights, compute.

    python bench/bench_memory.py            (about a minute on 2 cores)
"""

from __future__ import annotations

import itertools
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from planner.core.catalog import catalog
from planner.core.llamacpp.memory import MemoryOptions, Slot, plan_memory
from planner.core.llamacpp.schemes import resolve_scheme
from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
from planner.engines.llamacpp.locate import locate
from planner.engines.llamacpp.logs import parse_fit_params, parse_memory
from planner.gguf.writer import write_gguf, write_sparse_gguf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))   # the tiny test models
from tiny_models import tiny_model  # noqa: E402

MiB = 1 << 20
FULL = ["deepseek-r1:mla", "deepseek-r1:legacy", "deepseek-v2:mla", "deepseek-v2:legacy", "deepseek-v2-lite:mla",
        "deepseek-r1-distill-qwen-7b:", "deepseek-r1-distill-qwen-32b:", "deepseek-r1-distill-llama-8b:",
        "deepseek-r1-distill-llama-70b:"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_rpc(exe: str, n: int) -> tuple[list[subprocess.Popen], list[str]]:
    procs, addrs = [], []
    for _ in range(n):
        p = _port()
        procs.append(subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(p)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        addrs.append(f"127.0.0.1:{p}")
    for a in addrs:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", int(a.split(":")[1])), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
    return procs, addrs


def full_scale(lc, tmp: Path, rows: list[list[str]], errs: dict[str, list[float]]) -> None:
    fit = str(lc.binary("llama-fit-params"))
    procs, addrs = _start_rpc(str(lc.binary("rpc-server")), 4)
    try:
        for spec in FULL:
            mid, lay = spec.split(":")
            model = resolve_catalog_model(catalog()[mid], lay or None)
            sp = size_scheme(model, resolve_scheme("Q8_0"))
            path = tmp / f"{mid}-{lay}.gguf"
            write_sparse_gguf(path, model, types=sp)
            kvm = lay or None
            for ctx, fa, rpc in itertools.product((4096, 16384), ("on", "off"), (False, True)):
                cmd = [fit, "-m", str(path), "-c", str(ctx), "-fa", fa, "--fit", "off", "--fit-print", "on"]
                if rpc:
                    cmd += ["-ngl", "99", "-ts", "1,1,1,1", "--rpc", ",".join(addrs)]
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
                theirs = {d.name.split("[")[0]: d for d in parse_fit_params(out.splitlines()).devices}
                slots = [Slot(f"RPC{i}", 1 << 50) for i in range(4)] if rpc else []
                mp = plan_memory(model.hparams, sp.tensors, slots,
                                 MemoryOptions(ctx=ctx, kv_mode=kvm, flash_attn=fa == "on"))
                ours = {d.device: d for d in mp.per_device}
                ours["Host"] = mp.host
                for name, t in theirs.items():
                    d = ours.get(name)
                    if d is None:
                        continue
                    ce = 100 * (d.compute_bytes / MiB - t.compute_mib) / t.compute_mib if t.compute_mib else 0.0
                    errs["weights"].append(abs(d.weights_bytes / MiB - t.model_mib))
                    errs["kv"].append(abs(d.kv_bytes / MiB - t.context_mib))
                    errs["compute_single" if not rpc else "compute_split"].append(abs(ce))
                    rows.append([f"{mid} {lay}".strip(), str(ctx), fa, "4 RPC" if rpc else "CPU", name,
                                 f"{t.model_mib}/{d.weights_bytes / MiB:.0f}", f"{t.context_mib}/{d.kv_bytes / MiB:.0f}",
                                 f"{t.compute_mib}/{d.compute_bytes / MiB:.0f}", f"{ce:+.1f}%"])
            path.unlink()
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def tiny_runs(lc, tmp: Path, rows: list[list[str]], errs: dict[str, list[float]]) -> None:
    from planner.core.plan import PlanRequest
    from planner.make_plan import make_plan

    exe = str(lc.binary("llama-completion"))
    for kind in ("deepseek2-mla", "qwen2", "llama"):
        path = tmp / f"{kind}.gguf"
        write_gguf(path, tiny_model(kind))
        for ctx, ub, fa in itertools.product((1024, 4096), (128, 512), ("on", "off")):
            cmd = [exe, "-m", str(path), "-c", str(ctx), "-ub", str(ub), "-fa", fa, "-n", "1", "-p", "hi",
                   "-no-cnv", "-lv", "4", "-t", "1", "--no-warmup", "-ngl", "0"]
            r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=120)
            rep = parse_memory(r.stderr.splitlines())
            plan = make_plan(PlanRequest(model_file=str(path), device="h100", gpus=1, ngl=0, ctx=ctx, ubatch=ub,
                                         flash_attn=fa))
            mem = plan.schemes[0].memory
            measured = rep.compute_mib.get("CPU", 0.0)
            ce = 100 * (mem.host.compute_bytes / MiB - measured) / measured if measured else 0.0
            errs["tiny_compute"].append(abs(ce))
            errs["tiny_kv"].append(abs(mem.kv_cache_bytes / MiB - (rep.kv.mib if rep.kv else 0)))
            rows.append([f"tiny {kind}", str(ctx), fa, f"CPU ub{ub}", "CPU",
                         f"{rep.model_mib.get('CPU_Mapped', 0):.2f}/{mem.host.weights_bytes / MiB:.2f}",
                         f"{rep.kv.mib if rep.kv else 0:.2f}/{mem.kv_cache_bytes / MiB:.2f}",
                         f"{measured:.2f}/{mem.host.compute_bytes / MiB:.2f}", f"{ce:+.1f}%"])


def main() -> int:
    lc = locate()
    rows: list[list[str]] = []
    errs: dict[str, list[float]] = {k: [] for k in ("weights", "kv", "compute_single", "compute_split",
                                                    "tiny_compute", "tiny_kv")}
    with tempfile.TemporaryDirectory() as td:
        full_scale(lc, Path(td), rows, errs)
        tiny_runs(lc, Path(td), rows, errs)

    def stat(k: str, unit: str) -> str:
        v = errs[k]
        return f"median {statistics.median(v):.2f}{unit}, max {max(v):.2f}{unit} over {len(v)}" if v else "n/a"

    lines = [
        "# memory model vs llama.cpp",
        f"llama.cpp: {lc.describe()}",
        "",
        f"- weights per device, |planned - llama.cpp| MiB: {stat('weights', ' MiB')}",
        f"- KV cache per device, |planned - llama.cpp| MiB: {stat('kv', ' MiB')}",
        f"- compute buffer, single device (CPU), |error|: {stat('compute_single', '%')}",
        f"- compute buffer, split over 4 RPC devices + host, |error|: {stat('compute_split', '%')}",
        f"- tiny real runs, compute |error|: {stat('tiny_compute', '%')}; KV |diff|: {stat('tiny_kv', ' MiB')}",
        "",
        "| model | ctx | FA | devices | buffer | weights MiB llama.cpp/plan | KV MiB | compute MiB | compute err |",
        "|---|---|---|---|---|---|---|---|---|",
    ] + ["| " + " | ".join(r) + " |" for r in rows]
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    (out / "memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:9]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
