"""`dq-planner bench --model-file F.gguf [PLAN OPTIONS]`: llama.cpp's own llama-bench against the plan's
predicted speed (planner/core/llamacpp/speed.py): prefill of --prompt tokens, decode of --gen tokens at depth 0
and at --depth, predicted vs measured tokens/s.

The host is measured right before (the built-in probe, with as many threads as llama-bench gets), so
the prediction is made for the machine as it is now; the load average is printed with the result. The
kernel probe measures what this plan reads (its file's weight types, its routed experts' types, its
attention class: well under a minute on 2 cores), with progress on stderr; --all-kernel-types measures
every type. A probe that cannot finish leaves its figures to the bandwidth model, with a note.
Without --device the plan is for this machine's detected devices, or the host alone (CPU llama.cpp).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from planner.errors import PlannerError
from planner.engines.llamacpp.process import run_captured

if TYPE_CHECKING:
    from planner.core.devices.host_kernels import HostProbe
    from planner.hardware.host import ProbeScope


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


def probe_scope(req) -> ProbeScope:
    """What the host's kernel probe measures for the plan of `req` (its first scheme): the weight types
    of its matrices, the most bytes first (f32, the router's, costed as f16), the types of its routed
    experts, its model's attention class (flash attention's) and its layers' kind (llama.cpp's cost per
    layer)."""
    from planner.core.devices.host_kernels import HostProbe
    from planner.core.llamacpp.speed import attention_class, layer_attention
    from planner.hardware.host import ProbeScope
    from planner.make_plan import make_plan

    # the tensors and the model are what is read here; a placeholder host figure keeps the plan from
    # measuring the host for a speed nobody reads
    plan = make_plan(replace(req, host_probe=HostProbe(1.0, 1.0)))
    by_type: dict[str, int] = {}
    experts: set[str] = set()
    for t in plan.schemes[0].tensors:
        if len(t.shape) < 2 or t.name == "token_embd.weight":      # norms; one embedding row per token
            continue
        ty = "f16" if t.type == "f32" else t.type
        by_type[ty] = by_type.get(ty, 0) + t.bytes
        if "_exps" in t.name:
            experts.add(ty)
    types = tuple(sorted(by_type, key=lambda ty: -by_type[ty]))
    arch = plan.model.architecture
    return ProbeScope(types, tuple(t for t in types if t in experts), (attention_class(arch, plan.kv_mode),),
                      (layer_attention(arch),))


def measure_host(threads: int, lib_dirs: list | None = None, llama_bench=None, scope: ProbeScope | None = None,
                 *, timeout: float | None = None, progress=None) -> tuple[HostProbe | None, list[str]]:
    """The host probe (a HostProbe) in a child process whose BLAS uses `threads` threads (as llama-bench
    -t does), with llama.cpp's ggml CPU kernels of `scope` (planner/hardware/kernel_probe.py) when
    lib_dirs (the llama.cpp binaries' folders) are given, and with llama-bench (a path) llama.cpp's
    fixed cost per layer and token of the scope's attention (planner/engines/llamacpp/overhead_probe.py);
    progress lines go to `progress` (a text stream). The kernels are cached for plans on this machine.

    Nothing here fails the bench: a probe that cannot finish (it runs past `timeout`, is killed, or
    llama.cpp cannot run a type here) leaves its figures out, and the plan predicts them from the
    bandwidth model (the host's bandwidth and the speed factors; without even the bandwidth: the host
    profile's figures, HostProbe None). The notes say what was left out and why."""
    from planner.core.devices.host_kernels import HostProbe
    from planner.hardware.host import KERNEL_PROBE_TIMEOUT_S, ProbeScope, probe_host_kernels, store_host_kernels

    notes: list[str] = []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    code = ("from planner.hardware.host import probe_host_speed as p; import json; "
            f"h = p({threads}, refresh=True); print(json.dumps([h.bandwidth_gbs, h.tflops]))")
    try:
        r = run_captured([sys.executable, "-c", code], env=env, timeout=300)
        bw, tf = (float(x) for x in json.loads(r.stdout.strip().splitlines()[-1])[:2])
    except (subprocess.TimeoutExpired, OSError, ValueError, IndexError, TypeError):
        notes.append("the host's bandwidth probe did not finish: speed predicted from the host profile's figures")
        return None, notes
    if not lib_dirs:
        return HostProbe(bw, tf), notes
    scope = scope or ProbeScope(every=True)
    res = probe_host_kernels(threads, lib_dirs, scope, timeout=timeout or KERNEL_PROBE_TIMEOUT_S,
                             progress=progress)
    if res.missing:
        notes.append(f"the host kernel probe {res.stopped}: {', '.join(res.missing)} not measured; their speed is "
                     "predicted from the host's bandwidth and the speed factors")
    kernels = res.kernels
    if kernels is None:
        # nothing measured: the plan of a host without a kernel probe (the layer costs belong with it)
        return HostProbe(bw, tf), notes
    if llama_bench is not None:
        from planner.engines.llamacpp.overhead_probe import CLASS_SKELETONS, probe_overhead

        say = None if progress is None else (lambda line: (progress.write(line + "\n"), progress.flush()))
        try:
            o = probe_overhead(llama_bench, threads, classes=list(scope.layers or CLASS_SKELETONS), say=say)
        except PlannerError as e:
            notes.append(f"llama.cpp's cost per layer was not measured ({e}): predicted from the speed factors")
        else:
            kernels = replace(kernels, layer_seconds=o["layer_seconds"], token_seconds=o["token_seconds"])
    store_host_kernels(kernels)
    return HostProbe(bw, tf, kernels), notes


def llama_bench(binary, model_file: str, *, prompt: int, gen: int, depth: int, threads: int, reps: int,
                extra: list[str] | None = None) -> list[dict]:
    """llama-bench's JSON records (one per test: n_prompt, n_gen, n_depth, avg_ts, stddev_ts)."""
    depths = "0" if depth == 0 else f"0,{depth}"
    argv = [str(binary), "-m", model_file, "-p", str(prompt), "-n", str(gen), "-d", depths, "-t", str(threads),
            "-r", str(reps), "-o", "json"] + (extra or [])
    r = run_captured(argv)
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
    add_plan_options(p, without=("gen_tokens",))   # its own --gen: the timed requests' tokens
    p.add_argument("--threads", type=int, default=2, help="llama-bench -t [2]")
    p.add_argument("--repetitions", type=int, default=3, help="llama-bench -r [3]")
    p.add_argument("--gen", type=int, default=128, help="decoded tokens per test [128]")
    p.add_argument("--llama-cpp", metavar="DIR", help="the llama.cpp binaries' folder")
    p.add_argument("--no-kernel-probe", action="store_true",
                   help="skip measuring the ggml CPU kernels and llama.cpp's cost per layer: the host's "
                        "bandwidth and factors only")
    p.add_argument("--all-kernel-types", action="store_true",
                   help="measure the kernels of every weight type and attention class, not only the file's "
                        "(several minutes on 2 cores; cached for later plans)")
    p.add_argument("--probe-timeout", type=float, metavar="S",
                   help="stop the kernel probe after S seconds and predict what it did not measure from the "
                        "bandwidth model [300]")
    p.add_argument("--json", action="store_true")
    try:
        a = p.parse_args(argv)
        if a.threads < 1 or a.repetitions < 1 or a.gen < 1:
            raise PlannerError("--threads, --repetitions and --gen must be at least 1")
        if a.probe_timeout is not None and not 0 < a.probe_timeout <= 86400:
            raise PlannerError("--probe-timeout must be more than 0 and at most 86400 seconds")
        from planner.engines.llamacpp.locate import locate

        lc = locate(a.llama_cpp)
        binary = lc.binary("llama-bench")
        req = plan_request(a)
        from planner.hardware.host import ProbeScope

        scope = ProbeScope(every=True) if a.all_kernel_types else probe_scope(req)
        probe, notes = measure_host(a.threads, None if a.no_kernel_probe else lc.folders,
                                    None if a.no_kernel_probe else binary, scope, timeout=a.probe_timeout,
                                    progress=sys.stderr)
        req = replace(req, host_probe=probe)
        load = os.getloadavg()
        records = llama_bench(binary, req.model_file, prompt=req.prompt, gen=a.gen, depth=req.depth,
                              threads=a.threads, reps=a.repetitions)
        rows = predicted_vs_measured(req, records, a.gen)
    except PlannerError as e:
        print(f"dq-planner: {e}", file=sys.stderr)
        return 2
    kernels = probe.kernels if probe is not None else None
    if a.json:
        print(json.dumps({"model_file": req.model_file,
                          "host_probe": None if probe is None else {
                              "bandwidth_gbs": probe.bandwidth_gbs, "tflops": probe.tflops,
                              "kernel_types": sorted(kernels.types) if kernels else [],
                              "attention": sorted(kernels.attention) if kernels else []},
                          "loadavg": load, "threads": a.threads, "rows": [r.to_dict() for r in rows],
                          "notes": notes}, indent=1))
        return 0
    if probe is not None:
        print(f"{req.model_file}: host {probe.bandwidth_gbs:.1f} GB/s, {probe.tflops * 1e3:.0f} GFLOPS measured "
              f"with {a.threads} thread(s); load average {load[0]:.2f}")
    for n in notes:
        print(f"note: {n}")
    w = max(len(r.test) for r in rows) if rows else 4
    print(f"{'test':<{w}}  {'predicted t/s':>13}  {'measured t/s':>14}  {'error':>7}")
    for r in rows:
        print(f"{r.test:<{w}}  {r.predicted:13.2f}  {r.measured:8.2f} ±{r.stddev:5.2f}  {r.error_pct:+6.1f}%")
    return 0
