"""`dq-planner bench --model-file F.gguf [PLAN OPTIONS]`: llama.cpp's own llama-bench against the plan's
predicted speed (planner/core/llamacpp/speed.py): prefill of --prompt tokens, decode of --gen tokens at depth 0
and at --depth, predicted vs measured tokens/s.

The host is measured right before (the built-in probe, with as many threads as llama-bench gets), so
the prediction is made for the machine as it is now; the load average is printed with the result.
Without --device the plan is for this machine's detected devices, or the host alone (CPU llama.cpp).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace

from planner.errors import PlannerError


@dataclass
class Row:
    test: str
    predicted: float
    measured: float
    stddev: float

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted - self.measured) / self.measured if self.measured else float("nan")

    def to_dict(self) -> dict:
        return {"test": self.test, "predicted_tps": round(self.predicted, 3), "measured_tps": round(self.measured, 3),
                "stddev_tps": round(self.stddev, 3), "error_pct": round(self.error_pct, 2)}


def measure_host(threads: int, lib_dirs: list | None = None, llama_bench=None, types: list[str] | None = None):
    """The host probe (a HostProbe) in a child process whose BLAS uses `threads` threads (as llama-bench
    -t does), with llama.cpp's ggml CPU kernels per weight type measured too
    (planner/hardware/kernel_probe.py) when lib_dirs (the llama.cpp binaries' folders) are given, and
    with llama-bench (a path) llama.cpp's fixed cost per layer and token
    (planner/engines/llamacpp/overhead_probe.py); `types`: only these weight types' kernels (a file's
    own, a few seconds), else every type's. The kernels are cached for plans on this machine."""
    from planner.core.devices.host_kernels import HostProbe

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    code = ("from planner.hardware.host import probe_host_speed as p; import json; "
            f"h = p({threads}, refresh=True); print(json.dumps([h.bandwidth_gbs, h.tflops]))")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise PlannerError(f"host probe failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    bw, tf = json.loads(r.stdout.strip().splitlines()[-1])[:2]
    if not lib_dirs:
        return HostProbe(float(bw), float(tf))
    from planner.hardware.host import probe_host_kernels, store_host_kernels

    try:
        kernels = probe_host_kernels(threads, lib_dirs, types=types)
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        raise PlannerError(f"host kernel probe failed: {e}") from None
    if llama_bench is not None:
        from planner.engines.llamacpp.overhead_probe import probe_overhead

        o = probe_overhead(llama_bench, threads)
        kernels = replace(kernels, layer_seconds=o["layer_seconds"], token_seconds=o["token_seconds"])
    store_host_kernels(kernels)
    return HostProbe(float(bw), float(tf), kernels)


def llama_bench(binary, model_file: str, *, prompt: int, gen: int, depth: int, threads: int, reps: int,
                extra: list[str] | None = None) -> list[dict]:
    """llama-bench's JSON records (one per test: n_prompt, n_gen, n_depth, avg_ts, stddev_ts)."""
    depths = "0" if depth == 0 else f"0,{depth}"
    argv = [str(binary), "-m", model_file, "-p", str(prompt), "-n", str(gen), "-d", depths, "-t", str(threads),
            "-r", str(reps), "-o", "json"] + (extra or [])
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        tail = r.stderr.strip().splitlines()[-3:]
        raise PlannerError(f"llama-bench failed ({r.returncode}): {' | '.join(tail)}")
    return json.loads(r.stdout)


def _best(rec: dict) -> float:
    """The median repetition (robust to the few runs another process disturbs on a shared machine);
    the mean and spread stay in the record."""
    import statistics

    samples = rec.get("samples_ts") or []
    return float(statistics.median(samples)) if samples else float(rec["avg_ts"])


def _spread(rec: dict) -> float:
    """The standard deviation of the repetitions (all of them where several runs were pooled)."""
    import statistics

    samples = rec.get("samples_ts") or []
    return float(statistics.stdev(samples)) if len(samples) > 1 else float(rec["stddev_ts"])


def predicted_vs_measured(req, records: list[dict], gen: int) -> list[Row]:
    """Rows for llama-bench's tests (measured: the median repetition), each predicted with the plan at
    the test's own workload."""
    from planner.make_plan import make_plan

    rows = []
    for rec in records:
        p, n, d = int(rec["n_prompt"]), int(rec["n_gen"]), int(rec.get("n_depth", 0))
        if p:
            sp = make_plan(replace(req, prompt=p, depth=d)).schemes[0]
            rows.append(Row(f"pp{p}" + (f" @ d{d}" if d else ""), sp.speed.prefill_tps,
                            _best(rec), _spread(rec)))
        elif n:
            # decode of n tokens after d: the cache grows from d to d + n, on average d + n/2
            sp = make_plan(replace(req, depth=d + n // 2)).schemes[0]
            rows.append(Row(f"tg{n}" + (f" @ d{d}" if d else ""), sp.speed.decode_tps,
                            _best(rec), _spread(rec)))
    return rows


def plan_request(a: argparse.Namespace):
    from planner.options import request_from_namespace
    from planner.make_plan import local_devices

    req = request_from_namespace(a)
    if not req.model_file:
        raise PlannerError("bench needs --model-file F.gguf")
    if req.device is None and local_devices(req) is None:
        req = replace(req, device="host")
    return req


def main(argv: list[str]) -> int:
    from planner.arg_parser import Parser
    from planner.options import add_plan_options

    p = Parser(prog="dq-planner bench", description=__doc__.splitlines()[0])
    add_plan_options(p)
    p.add_argument("--threads", type=int, default=2, help="llama-bench -t [2]")
    p.add_argument("--repetitions", type=int, default=3, help="llama-bench -r [3]")
    p.add_argument("--gen", type=int, default=128, help="decoded tokens per test [128]")
    p.add_argument("--llama-cpp", metavar="DIR", help="the llama.cpp binaries' folder")
    p.add_argument("--no-kernel-probe", action="store_true",
                   help="skip measuring the ggml CPU kernels per type and llama.cpp's cost per layer (~45 s): "
                        "the host's bandwidth and factors only")
    p.add_argument("--json", action="store_true")
    try:
        a = p.parse_args(argv)
        if a.threads < 1 or a.repetitions < 1 or a.gen < 1:
            raise PlannerError("--threads, --repetitions and --gen must be at least 1")
        from planner.engines.llamacpp.locate import locate

        lc = locate(a.llama_cpp)
        binary = lc.binary("llama-bench")
        req = plan_request(a)
        req = replace(req, host_probe=measure_host(a.threads, None if a.no_kernel_probe else lc.folders,
                                                   None if a.no_kernel_probe else binary))
        load = os.getloadavg()
        records = llama_bench(binary, req.model_file, prompt=req.prompt, gen=a.gen, depth=req.depth,
                              threads=a.threads, reps=a.repetitions)
        rows = predicted_vs_measured(req, records, a.gen)
    except PlannerError as e:
        print(f"dq-planner: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps({"model_file": req.model_file, "host_probe": {"bandwidth_gbs": req.host_probe.bandwidth_gbs,
                          "tflops": req.host_probe.tflops}, "loadavg": load, "threads": a.threads,
                          "rows": [r.to_dict() for r in rows]}, indent=1))
        return 0
    print(f"{req.model_file}: host {req.host_probe.bandwidth_gbs:.1f} GB/s, {req.host_probe.tflops * 1e3:.0f} GFLOPS measured "
          f"with {a.threads} thread(s); load average {load[0]:.2f}")
    w = max(len(r.test) for r in rows) if rows else 4
    print(f"{'test':<{w}}  {'predicted t/s':>13}  {'measured t/s':>14}  {'error':>7}")
    for r in rows:
        print(f"{r.test:<{w}}  {r.predicted:13.2f}  {r.measured:8.2f} ±{r.stddev:5.2f}  {r.error_pct:+6.1f}%")
    return 0
