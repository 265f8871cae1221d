"""The serving model's coefficients (profiles/speed/serving.toml [coef]) derived from the published runs
(tests/fixtures/serving/published.toml), and every run predicted with them.

Derivation (planner/core/serving/throughput.py's docstring has the model): every quantity the model
compares with a published figure is linear in the coefficients once the run's deployment is known:
  - single-stream end-to-end latency = prefill(P) + (G - 1) step(1, P + G/2);
  - 1 / maximum request rate = e2e(c) / c at the saturation concurrency c (the KV-bound concurrency
    within max_num_seqs; queueing's 1 / (1 - rho) left out of the derivation, kept in the prediction);
  - TPOT at concurrency c = step(c, P + G/2) + (c - 1) P p / G.
So one non-negative least-squares problem per (engine, GPU class) over the relative errors of all the
group's runs gives its coefficients at once: no run is fitted alone, and each coefficient is a share
of peak (or a fixed time) that one run cannot move far. A run whose figure the model does not derive
from (TTFT, output tokens/s) is only predicted. Leave-one-out: each run predicted with the coefficients
derived without it.

    python bench/serving_fit.py            print the derived coefficients and the errors
    python bench/serving_fit.py --write    also rewrite profiles/speed/serving.toml's [coef] tables
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from planner.core.catalog import resolve_model  # noqa: E402
from planner.core.devices.profiles import load_profile, profiles  # noqa: E402
from planner.core.plan import PlanRequest  # noqa: E402
from planner.core.serving import throughput  # noqa: E402
from planner.core.serving.hf_checkpoint import resolve_format  # noqa: E402
from planner.core.serving.plan_formats import EngineOptions, serving_parts  # noqa: E402

PUBLISHED = ROOT / "tests" / "fixtures" / "serving" / "published.toml"
FIXTURE_DEVICES = {"a6000": ROOT / "tests" / "fixtures" / "serving" / "a6000.toml"}
PROFILE = ROOT / "profiles" / "speed" / "serving.toml"
# vLLM before 0.8 ran its V0 engine, whose EngineArgs.max_num_seqs default is 256 (V1: 1024, the profile's)
V0_MAX_NUM_SEQS = 256
# The model cards' multi-stream tables give the hardware as "A6000x4" for every format of a model, while
# their single-stream tables give each format its own number of GPUs (tensor-parallel size): a format that
# runs on fewer GPUs is read as that many replicas of its single-stream deployment sharing the load
# (published QPS / replicas = one replica's). False: one server over all the GPUs (TP = the GPUs).
REPLICAS_RULE = False


def load() -> dict:
    return tomllib.loads(PUBLISHED.read_text())


@lru_cache(maxsize=None)
def device(gpu: str):
    if gpu in FIXTURE_DEVICES:
        return load_profile(FIXTURE_DEVICES[gpu])
    return profiles()[gpu]


def _engine_fit(engine: str):
    from planner.engines.registry import engine as get

    return get(engine).fit


@dataclass
class Case:
    """One published run as the model sees it."""

    run: dict
    metric: str                    # e2e | qps | tpot | ttft | output_tps
    published: float               # in the model's unit (s, req/s, s, s, tokens/s)
    concurrency: int
    parts: tuple                   # serving_parts(): (Costs, coef, Workload, max concurrency, GPUs)
    replicas: int = 1              # servers of the deployment sharing the load (model cards' "H100x2")

    @property
    def id(self) -> str:
        return self.run["id"]

    @property
    def group(self) -> tuple[str, str]:
        p = device(self.run["gpu"])
        return self.run["engine"], throughput.gpu_class(p.id, p.has_fp8)


def _v(run: dict, *names: str) -> float | None:
    for n in names:
        if run.get(n) is not None:
            return float(run[n])
    return None


def cases(data: dict | None = None) -> list[Case]:
    """Every run of the published file the model can predict (vLLM/SGLang, a known model, format and GPU),
    one Case per published figure."""
    data = data or load()
    out = []
    # the model cards' single-stream TP size per (model, format, GPU): their multi-stream rows name only the
    # GPUs ("A6000x4"); read as replicas of the single-stream deployment (REPLICAS_RULE)
    ss_tp = {(r.get("model"), r.get("format"), r.get("gpu")): int(r["tp"]) for r in data.get("run", [])
             if r.get("kind") == "card_single_stream" and r.get("tp")}
    for r in data.get("run", []):
        if r.get("engine") not in ("vllm", "sglang"):
            continue
        gpu = r.get("gpu")
        if gpu not in FIXTURE_DEVICES and gpu not in profiles():
            continue
        why = not_plannable(r)
        if why:
            print(f"skip {r['id']}: {why}", file=sys.stderr)
            continue
        P, G = r.get("prompt_tokens"), r.get("gen_tokens")
        if not P or not G:
            continue
        replicas = 1
        if r.get("kind") == "card_max_throughput" and not r.get("tp") and REPLICAS_RULE:
            tp = ss_tp.get((r.get("model"), r.get("format"), r.get("gpu")))
            if tp and int(r.get("gpus") or 1) % tp == 0:
                replicas = int(r.get("gpus") or 1) // tp
                r = dict(r, tp=tp)
        try:
            parts = row_parts(r)
        except Exception as e:  # noqa: BLE001  a run the planner cannot lay out is reported, not guessed
            print(f"skip {r['id']}: {e}", file=sys.stderr)
            continue
        conc = int(r.get("concurrency") or 1)
        kind = r.get("kind", "serving")
        if kind == "card_single_stream":
            out.append(Case(r, "e2e", float(r["e2e_latency_s"]), 1, parts))
            continue
        if kind == "card_max_throughput":
            out.append(Case(r, "qps", float(r["max_qps"]) / replicas, parts[3], parts, replicas))
            continue
        if r.get("request_rate") is not None and not r.get("concurrency"):
            # every prompt sent at once (rate 0 = infinite) or offered faster than served (the achieved rate
            # below the offered one): the engine runs saturated, its achieved request rate is the maximum;
            # TTFT and TPOT there are those of the queue, not of a concurrency
            rate = float(r["request_rate"])
            achieved = _v(r, "requests_per_s")
            if achieved is not None and (rate == 0 or achieved < 0.9 * rate):
                out.append(Case(r, "qps", achieved, parts[3], parts))
            continue
        tpot = _v(r, "tpot_ms_median", "tpot_ms_mean", "tpot_ms")
        if tpot is not None:
            out.append(Case(r, "tpot", tpot / 1000.0, conc, parts))
        ttft = _v(r, "ttft_ms_median", "ttft_ms_mean", "ttft_ms")
        if ttft is not None:
            out.append(Case(r, "ttft", ttft / 1000.0, conc, parts))
        e2e = _v(r, "e2e_latency_s")
        if e2e is None and _v(r, "e2e_latency_ms") is not None:
            e2e = _v(r, "e2e_latency_ms") / 1000.0
        if e2e is not None and conc == 1:
            out.append(Case(r, "e2e", e2e, 1, parts))
        if r.get("output_tps") is not None and tpot is None:
            out.append(Case(r, "output_tps", float(r["output_tps"]), conc, parts))
    return out


def not_plannable(r: dict) -> str:
    """Why a run's deployment is not one the planner makes (its figures are then not predicted), or ""."""
    ep = r.get("ep") or 1
    if ep > 1 and not (r.get("engine") == "sglang" and ep == int(r.get("tp") or r.get("gpus") or 1)):
        return "expert parallelism other than SGLang's EP = TP is not planned"
    if r.get("mtp"):
        return "MTP speculative decoding is not modelled"
    if (r.get("pp") or 1) > 1:
        return "a pipeline-parallel run of this engine is not planned as published"
    note = (r.get("note") or "").lower()
    if "disaggregat" in note:
        return "prefill-decode disaggregation is not planned"
    if "disable-cuda-graph" in note:
        return "CUDA graphs off (--disable-cuda-graph): the planner's commands keep them"
    return ""


def row_parts(r: dict) -> tuple:
    """serving_parts() of the run's deployment: its model, format, GPU and TP size (the number of GPUs
    where the source gives no TP size), the engine's defaults of its version."""
    entry = resolve_model(r["model"])
    fmt = resolve_format(r["format"])
    prof = device(r["gpu"])
    tp = int(r.get("tp") or r.get("gpus") or 1)
    nodes = int(r.get("nodes") or 1)
    P, G = int(r["prompt_tokens"]), int(r["gen_tokens"])
    ctx = max(4096, P + G)
    opts = EngineOptions(dp_attention=bool(r.get("dp_attention")), ep_moe=(r.get("ep") or 1) > 1,
                         kv_cache_dtype="fp8" if str(r.get("kv_cache_dtype", "")).startswith("fp8") else "auto")
    if r["engine"] == "vllm" and str(r.get("engine_version", "")).startswith("0.7"):
        opts.max_num_seqs = V0_MAX_NUM_SEQS
    req = PlanRequest(model=r["model"], engine=r["engine"], schemes=[r["format"]], ctx=ctx, prompt=P, gen_tokens=G,
                      concurrency=int(r.get("concurrency") or 1), dp_attention=bool(r.get("dp_attention")))
    fit = _engine_fit(r["engine"])
    fitted, _ = fit(entry, fmt, prof, tp // nodes if nodes > 1 else tp, nodes, ctx, opts, sequences=1)
    parts = serving_parts(r["engine"], entry, fmt, fitted, prof, req, opts)
    if parts is None:
        raise ValueError("request longer than the context")
    return parts


# ------------------------------------------------------------------------------------------ linear terms


def _add(a: dict, b: dict, k: float = 1.0) -> dict:
    out = dict(a)
    for n, v in b.items():
        out[n] = out.get(n, 0.0) + k * v
    return out


def linear(case: Case) -> tuple[dict[str, float], float] | None:
    """(terms, known seconds) with published = sum(terms x coef) + known, for the metrics derived from."""
    cost, _, wl, _, _ = case.parts
    P, G, c = wl.prompt, wl.gen, case.concurrency
    st, scm = throughput.step_terms(cost, c, P + G / 2.0)
    pt = throughput.prompt_token_terms(cost, P)
    if case.metric == "e2e":
        pre, pcm = throughput.prefill_terms(cost, P, wl.chunk)
        return _add(pre, st, G - 1), pcm + (G - 1) * scm
    if case.metric == "tpot":
        return _add(st, pt, (c - 1) * P / G), scm
    if case.metric == "ttft" and c == 1:
        pre, pcm = throughput.prefill_terms(cost, P, wl.chunk)
        return pre, pcm
    if case.metric == "qps":
        pre, pcm = throughput.prefill_terms(cost, P, wl.chunk)
        tpot = _add(st, pt, (c - 1) * P / G)
        ttft = _add(pre, st, 0.5 if c > 1 else 0.0)
        e2e = _add(ttft, tpot, G - 1)
        known = pcm + (0.5 if c > 1 else 0.0) * scm + (G - 1) * scm
        # the per-request overhead (first) is host work beside the GPU's: it does not bound the rate the
        # rows of a saturated engine measure, so they do not derive it
        out = {k: v / c for k, v in e2e.items() if not k.startswith("first")}
        return _add(out, throughput.host_terms(cost)), known / c
    return None


def published_linear(case: Case) -> float:
    return 1.0 / case.published if case.metric == "qps" else case.published


def nnls(A: np.ndarray, b: np.ndarray, iters: int = 200) -> np.ndarray:
    """Lawson-Hanson non-negative least squares: min |A x - b| with x >= 0."""
    n = A.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    w = A.T @ (b - A @ x)
    for _ in range(iters):
        if passive.all() or w[~passive].max(initial=-1) <= 1e-12:
            break
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(A[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
        w = A.T @ (b - A @ x)
    return x


TIMES = ("fixed", "seq", "ctx", "layer", "first", "host")
MIN_SHARE = 0.02       # coefficients that are times, not 1 / shares of a peak


def derive(cs: list[Case]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (engine, GPU class): the coefficients minimising the relative errors of its runs."""
    groups: dict[tuple[str, str], list[Case]] = {}
    for c in cs:
        if linear(c) is not None:
            groups.setdefault(c.group, []).append(c)
    out: dict[tuple[str, str], dict[str, float]] = {}
    fallback = throughput.serving_profile().get("fallback_engine", {})
    # groups with an engine of their own first, then those whose shares of peak come from another engine's
    for g in sorted(groups, key=lambda g: g[0] in fallback):
        rows = groups[g]
        lin = [linear(c) for c in rows]
        fixed: dict[str, float] = {}
        base = (fallback.get(g[0]), g[1])
        if base in out:
            # an engine measured only on MoE runs (SGLang here) shares the GPU class's kernels' shares of peak
            # with the engine measured on many models; its own: fixed costs, per-request work, the links
            fixed = {k: v for k, v in out[base].items()
                     if k.split("_")[0] not in TIMES + ("link",) and not k.endswith("_moe")}
            lin = [({k: v for k, v in t.items() if k not in fixed}, kn + sum(v * fixed[k] for k, v in t.items()
                                                                               if k in fixed)) for t, kn in lin]
        # a term no run of the group puts at 2% or more of its time (at coefficient 1) cannot be derived from
        # them: it keeps the dense name's coefficient (a "_moe" one) or its floor
        share = {}
        for (t, _), c in zip(lin, rows):
            for k, v in t.items():
                share[k] = max(share.get(k, 0.0), v / published_linear(c))
        weak = {k for k, v in share.items() if v < MIN_SHARE}
        for k in weak:
            dense = k.removesuffix("_moe")
            fixed[k] = out.get(g, {}).get(dense) or (fixed.get(dense) if dense != k else None) or \
                (0.0 if k.split("_")[0] in TIMES else 1.0)
        lin = [({k: v for k, v in t.items() if k not in weak}, kn + sum(v * fixed[k] for k, v in t.items()
                                                                          if k in weak)) for t, kn in lin]
        names = sorted({k for t, _ in lin for k, v in t.items() if v > 0})
        A = np.array([[t.get(k, 0.0) / published_linear(c) for k in names] for (t, _), c in zip(lin, rows)])
        b = np.array([1.0 - kn / published_linear(c) for (_, kn), c in zip(lin, rows)])
        # a share of peak is at most 1: such a coefficient is 1 + x, x >= 0 (fixed times: x alone)
        floor = np.array([0.0 if k.split("_")[0] in TIMES else 1.0 for k in names])
        b = b - A @ floor
        scale = A.max(axis=0)
        scale[scale == 0] = 1.0
        x = nnls(A / scale, b) / scale + floor
        out[g] = {**fixed, **{k: float(v) for k, v in zip(names, x)}}
    return out


def coef_for(case: Case, derived: dict[tuple[str, str], dict[str, float]] | None) -> dict[str, float]:
    """The coefficients a case is predicted with: the derived ones of its group (with the profile's
    fallbacks for names the group lacks), or the profile's."""
    coef = dict(case.parts[1])
    if derived is not None:
        coef = {**coef, **derived.get(case.group, {})} if case.group in derived else coef
    return coef


def predict(case: Case, coef: dict[str, float]) -> float:
    cost, _, wl, top, world = case.parts
    if case.metric == "qps":
        return throughput.point(cost, coef, wl, max(1, top)).requests_per_s
    p = throughput.point(cost, coef, wl, case.concurrency)
    if case.metric == "e2e":
        return p.ttft_s + (wl.gen - 1) * p.tpot_s
    return {"tpot": p.tpot_s, "ttft": p.ttft_s, "output_tps": p.output_tps}[case.metric]


def leave_one_out(cs: list[Case]) -> dict[str, float]:
    """Each derived-from case predicted with its group's coefficients derived without it (ratio)."""
    out = {}
    for i, c in enumerate(cs):
        rest = [x for j, x in enumerate(cs) if j != i and x.group == c.group]
        d = derive(rest)
        out[f"{c.id}:{c.metric}"] = predict(c, coef_for(c, d)) / c.published
    return out


def rows_digest(cs: list[Case]) -> str:
    """A digest of the figures the derivation used (run ids, metrics, published values)."""
    import hashlib

    h = hashlib.sha256()
    for c in sorted(cs, key=lambda c: (c.id, c.metric)):
        h.update(f"{c.id}|{c.metric}|{c.published!r}\n".encode())
    return h.hexdigest()[:16]


def write_profile(derived: dict[tuple[str, str], dict[str, float]], digest: str) -> None:
    text = PROFILE.read_text()
    head = re.split(r"\n\[coef\.", text, maxsplit=1)[0].rstrip() + "\n"
    head = re.sub(r"\nrows_digest = [^\n]*\n", "\n", head)
    head = re.sub(r"(\nsource = [^\n]*\n)", lambda m: m[1] + f'rows_digest = "{digest}"   # of the published figures '
                  "derived from (bench/serving_fit.py rows_digest)\n", head, count=1)
    blocks = []
    for (eng, cls), coef in sorted(derived.items()):
        lines = [f"\n[coef.{eng}.{cls}]"]
        for k, v in sorted(coef.items()):
            lines.append(f"{k} = {float(f'{v:.4g}')!r}")
        blocks.append("\n".join(lines) + "\n")
    PROFILE.write_text(head + "".join(blocks))


def main(argv: list[str]) -> int:
    cs = cases()
    d = derive(cs)
    for g, coef in sorted(d.items()):
        print(g, {k: round(v, 6) for k, v in coef.items()})
    if "--write" in argv:
        write_profile(d, rows_digest(cs))
        print(f"wrote {PROFILE}")
    loo = leave_one_out([c for c in cs if linear(c) is not None]) if "--loo" in argv else {}
    for c in cs:
        r = predict(c, coef_for(c, d)) / c.published
        print(f"{c.id:55s} {c.metric:10s} {r:6.2f} {loo.get(c.id + ':' + c.metric, float('nan')):6.2f}")
    for m in ("e2e", "tpot", "ttft", "qps", "output_tps"):
        rs = [predict(c, coef_for(c, d)) / c.published for c in cs if c.metric == m]
        if rs:
            e = sorted(abs(x - 1) for x in rs)
            print(f"{m:10s} n={len(rs):4d} min {min(rs):.2f} max {max(rs):.2f} median |err| {e[len(e) // 2]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
