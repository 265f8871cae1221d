"""How a vLLM / SGLang deployment serves requests under concurrency: TTFT, TPOT, throughput, saturation.

One decode STEP of the engine advances every running sequence by one token. Its time at batch b (b
sequences at mean depth d, on one rank of each pipeline stage, stages one after another) is a sum of
terms, each a physical quantity at peak rate times a measured coefficient (profiles/speed/serving.toml):

  step(b, d) = fixed + layer x L                      the engine's fixed cost per step (scheduler, sampler)
                                                      and per layer (kernel launches, small kernels; a MoE
                                                      layer's router, top-k and expert dispatch: layer_moe)
             + seq x b                                its cost per running sequence (per-request CPU work)
             + ctx x b x d                            its cost per running sequence and cached token (the
                                                      engine's per-step host work that grows with a
                                                      sequence's length: block tables, token lists)
             + W(b) / bandwidth x 1/e_w[format]       weights read once per step: every non-routed weight
                                                      of the rank, and of a MoE layer's routed experts only
                                                      the distinct ones the b tokens touch: with k of E
                                                      experts per token, E x (1 - (1 - k/E)^b) of them
             + KV(b, d) / bandwidth x 1/e_kv          the cache of the b sequences at depth d (MLA's latent
                                                      cache read whole on every TP rank unless DP attention)
             + b x F / rate[math path] x 1/e_c[path]  the linear layers' FLOPs at the format's math rate:
                                                      BF16 at the 16-bit rate, FP8 at the FP8 rate where the
                                                      GPU has FP8 units, INT8 W8A8 at twice the 16-bit rate
                                                      (INT8 tensor cores, Ampere and later), W4A16 / AWQ and
                                                      FP8 without FP8 units dequantized to 16 bits
                                                      (Marlin) at the 16-bit rate with their own coefficient
             + b x A(d) / rate16 x 1/e_c16            attention FLOPs over the cache at the 16-bit rate
             + link x n x latency                     per layer two all-reduces of b x n_embd x 2 bytes over
             + linkbw x n x bytes / link bandwidth    the TP group's link (NVLink within a node, PCIe where
                                                      the profile has no NVLink, InfiniBand across nodes:
                                                      link_ib, linkbw_ib), latency and bandwidth each times
                                                      what the collectives achieve; with expert parallelism
                                                      a MoE layer's all-reduce is a dispatch and a combine
                                                      (all-to-all) of the tokens' hidden states to their k
                                                      experts' ranks; hops between pipeline stages at the
                                                      link's figures
The memory and compute terms add (a modelling choice, not a measurement: it keeps every coefficient a
plain linear one, and where the kernels overlap them the derived shares absorb it); the coefficients are
derived from published runs by least squares (bench/serving_fit.py; the derivation and its leave-one-out
errors are in bench/out/serving.md).

Prefill of a P-token prompt runs in chunks (vLLM max_num_batched_tokens, SGLang chunked_prefill_size),
plus `first`, a fixed time per request (admission, tokenizing, the first token's way back): each chunk
is a step of one sequence whose tokens read the weights once (every expert) and compute C x F.
A prompt token's marginal cost when mixed into decode steps (chunked prefill) is its FLOPs alone. Prefill
math has its own coefficients (p16, p8, pdq: large products fill the GPU as decode's small ones do not).

At concurrency c (c requests in flight, each P prompt and G generated tokens, closed loop):
  TPOT(c) = step(c, P + G/2) + (c - 1) x P x p / G      p: a prompt token's marginal time; the other
                                                         requests' prompts are prefilled inside my steps
  TTFT(c) = (prefill(P) + [c > 1] step(c)/2) / (1 - rho)  waiting for the running step, then the prompt;
                                                         rho: the share of time the GPU prefills (queueing)
  e2e(c)  = TTFT(c) + (G - 1) x TPOT(c);  requests/s = 1 / (e2e(c) / c + host);  output tokens/s = G x
  requests/s, where host is the engine's serial host work per request (HTTP, tokenizing, admission): the
  bound of short requests at saturation
The concurrency is bounded by the KV cache the engine allocated (EngineFit.kv_tokens) for P + G tokens
per request (vLLM: whole blocks per sequence; SGLang with DP attention: per DP rank, times the ranks)
and by the engine's max_num_seqs; saturation is the point at that bound (requests/s grows with c up to it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from planner.core.catalog import Hparams
from planner.core.data_files import read_toml
from planner.core.paths import profiles_dir
from planner.core.plan import Saturation, Serving, ServingPoint
from planner.core.serving.hf_checkpoint import _layer_kind, layer_weights, model_weights
from planner.core.serving.memory import Layout, kv_values_per_token_layer, pp_layer_counts, weights_bytes
from planner.errors import PlannerError

# ------------------------------------------------------------------------------------------ the data


@lru_cache(maxsize=1)
def serving_profile() -> dict:
    """profiles/speed/serving.toml."""
    path = profiles_dir() / "speed" / "serving.toml"
    return read_toml(path, "serving profile")


def gpu_class(device_id: str, has_fp8: bool) -> str:
    """The measured GPU class whose coefficients a device uses ([classes] of serving.toml; a device not
    listed: the default class of its kind, FP8 units or not)."""
    d = serving_profile()
    c = d["classes"].get(device_id)
    if c:
        return c
    return d["default_class"]["fp8" if has_fp8 else "no_fp8"]


def coefficients(engine: str, cls: str) -> dict[str, float]:
    """The coefficients of (engine, GPU class): serving.toml [coef.<engine>.<class>], a missing engine
    falling back to [fallback_engine]'s (same class), a missing name to the class's dense one."""
    d = serving_profile()
    coef = d["coef"]
    out: dict[str, float] = {}
    for eng in (d.get("fallback_engine", {}).get(engine), engine):
        if eng and cls in coef.get(eng, {}):
            out.update(coef[eng][cls])
    if not out:
        raise PlannerError(f"no serving coefficients for {engine} on GPU class {cls} (profiles/speed/serving.toml)")
    return out


def coefficient(coef: dict[str, float], name: str) -> float:
    """A term's coefficient; a MoE variant (name + "_moe") falls back to the dense one."""
    if name in coef:
        return coef[name]
    if name.endswith("_moe") and name[:-4] in coef:
        return coef[name[:-4]]
    return 0.0


# ------------------------------------------------------------------------------------------ the model's costs


@dataclass(frozen=True)
class Costs:
    """Per rank of one pipeline stage (all stages alike but the first and last weights): what a step reads
    and computes, at peak rates. Seconds at efficiency 1."""

    stages: tuple[int, ...]            # layers per stage
    dense_bytes: tuple[float, ...]     # per stage: non-routed weight bytes one rank reads per step
    expert_bytes: float                # one routed expert of one MoE layer, on one rank
    moe_layers: tuple[int, ...]        # per stage
    n_expert: int
    k_expert: int
    flops_tok: tuple[float, ...]       # per stage: linear-layer FLOPs of one token on one rank
    attn_flops: tuple[float, ...]      # per stage: attention FLOPs per token per cached token, one rank
    kv_bytes: tuple[float, ...]        # per stage: KV bytes one sequence's token holds on one rank
    kv_seq_share: float                # the share of the running sequences whose cache a rank reads
    n_embd: int
    bandwidth: float                   # bytes/s
    rate16: float                      # FLOP/s
    rate_path: float                   # FLOP/s of the format's math path
    wclass: str                        # w16 | w8 | w4
    path: str                          # c16 | c8 | cdq
    moe: bool
    tp: int
    link_bw: float                     # bytes/s of the TP group's link
    link_lat: float                    # s
    hop_bw: float
    hop_lat: float
    link_ib: bool = False              # the TP group spans nodes (InfiniBand): its own coefficients
    ep: bool = False                   # expert parallelism (EP = TP): a MoE layer's tokens go to the experts'
                                       # ranks and back (all-to-all) instead of its all-reduce
    tp_nodes: int = 1                  # nodes the TP group spans
    nvl_bw: float = 0.0                # bytes/s within a node (the hierarchical all-reduce's first level)


def math_path(method: str, weight_dtype: str, has_fp8: bool) -> str:
    """The format's math path: c16 (16-bit), c8 (FP8 or INT8 tensor cores), cdq (weights dequantized to 16
    bits in the matmul: W4A16, AWQ, FP8 on a GPU without FP8 units)."""
    if method == "none":
        return "c16"
    if method in ("group", "awq"):
        return "cdq"
    if weight_dtype.startswith("f8"):
        return "c8" if has_fp8 else "cdq"
    return "c8"                        # INT8 W8A8


def weight_class(method: str, weight_dtype: str) -> str:
    if method == "none":
        return "w16"
    if method in ("group", "awq"):
        return "w4"
    return "w8"


def _attn_per_cached(hp: Hparams) -> float:
    """Attention FLOPs of one token per cached token and layer (all heads): QK and AV products."""
    if hp.arch == "deepseek2":
        return 2.0 * hp.n_head * (hp.n_lora_kv + hp.n_rot + hp.n_lora_kv)   # absorbed MLA
    return 2.0 * hp.n_head * 2 * hp.n_embd_head


@lru_cache(maxsize=256)
def _layer_parts(hp: Hparams, fmt, model_id: str, layout: Layout, moe: bool) -> tuple[float, float, float]:
    """(non-routed bytes on a rank, routed bytes on a rank, linear FLOPs per token on a rank) of one layer."""
    i = hp.n_layer_dense_lead if moe else 0
    ws = layer_weights(hp, i)
    sel = fmt.selector(hp)
    group = fmt.group_for(model_id)
    routed = [w for w in ws if w.group == "routed"]
    other = [w for w in ws if w.group != "routed"]
    rb = weights_bytes(routed, hp, fmt, sel, group, layout) if routed else 0
    ob = weights_bytes(other, hp, fmt, sel, group, layout)
    share = hp.n_expert_used / hp.n_expert if routed else 0.0
    fl = sum(2.0 * w.n_elements * (share if w.group == "routed" else 1.0)
             for w in ws if w.role in ("linear",)) / layout.tp
    return float(ob), float(rb), fl


def costs(ck, layout: Layout, profile, kv_bytes_per_elem: int, links: dict) -> Costs:
    """The Costs of a checkpoint (planner.core.serving.hf_checkpoint.Checkpoint) in a layout on a device
    profile. links: the link kinds of profiles/speed/llamacpp.toml ([links]: nvlink, pcie, infiniband)."""
    hp = ck.entry.hparams
    fmt = ck.format
    counts = pp_layer_counts(hp.n_layer, layout.pp)
    moe_model = hp.arch == "deepseek2" and hp.is_moe
    dense_b, moe_l, flops, attn, kv = [], [], [], [], []
    start = 0
    routed_per_layer = 0.0
    kv_layer = kv_values_per_token_layer(hp, layout.tp) * kv_bytes_per_elem
    per_cached = _attn_per_cached(hp) / layout.tp
    first, last = model_weights(hp)
    sel = fmt.selector(hp)
    lm = [w for w in last if w.role == "lm_head"] or ([w for w in first] if hp.tied_embeddings else [])
    lm_b = float(weights_bytes(lm, hp, fmt, sel, fmt.group_for(ck.entry.id), Layout(layout.tp))) if lm else 0.0
    lm_f = sum(2.0 * w.n_elements for w in lm) / layout.tp
    for s, n in enumerate(counts):
        b = f = 0.0
        m = 0
        for i in range(start, start + n):
            is_moe = _layer_kind(hp, i)[0]
            ob, rb, fl = _layer_parts(hp, fmt, ck.entry.id, layout, is_moe)
            b += ob
            f += fl
            if is_moe:
                m += 1
                routed_per_layer = rb
        if s == len(counts) - 1:
            b += lm_b
            f += lm_f
        dense_b.append(b)
        flops.append(f)
        moe_l.append(m)
        attn.append(per_cached * n)
        kv.append(kv_layer * n)
        start += n
    share = 1.0 / layout.tp if (layout.dp_attention and hp.arch == "deepseek2") else 1.0
    nvlink = "nvlink" if "nvlink" in (getattr(profile, "interconnect", "") or "").lower() else "pcie"
    tp_link = links[nvlink] if layout.tp <= max(1, _per_node(profile, layout)) else links["infiniband"]
    hop = links["infiniband"] if layout.pp > 1 else links[nvlink]
    has_fp8 = bool(getattr(profile, "has_fp8", False))
    path = math_path(fmt.method, fmt.weight_dtype, has_fp8)
    rate16 = profile.bf16_tflops * 1e12
    rate = {"c16": rate16, "cdq": rate16,
            "c8": (profile.fp8_tflops * 1e12 if fmt.weight_dtype.startswith("f8") else 2.0 * rate16)}[path]
    return Costs(stages=tuple(counts), dense_bytes=tuple(dense_b),
                 expert_bytes=routed_per_layer / hp.n_expert if moe_model and hp.n_expert else 0.0,
                 moe_layers=tuple(moe_l), n_expert=hp.n_expert if moe_model else 0,
                 k_expert=hp.n_expert_used if moe_model else 0, flops_tok=tuple(flops), attn_flops=tuple(attn),
                 kv_bytes=tuple(kv), kv_seq_share=share, n_embd=hp.n_embd, bandwidth=profile.bandwidth_gbs * 1e9,
                 rate16=rate16, rate_path=rate, wclass=weight_class(fmt.method, fmt.weight_dtype), path=path,
                 moe=moe_model, tp=layout.tp, link_bw=tp_link.bandwidth_gbs * 1e9, link_lat=tp_link.latency_us * 1e-6,
                 hop_bw=hop.bandwidth_gbs * 1e9, hop_lat=hop.latency_us * 1e-6,
                 link_ib=tp_link is links["infiniband"],
                 tp_nodes=max(1, -(-layout.tp // max(1, _per_node(profile, layout)))),
                 ep=bool(getattr(layout, "ep", False)) and moe_model,
                 nvl_bw=links[nvlink].bandwidth_gbs * 1e9)


def _per_node(profile, layout: Layout) -> int:
    return int(getattr(profile, "devices_per_node", 8) or 8)


# ------------------------------------------------------------------------------------------ terms


def _sfx(c: Costs) -> str:
    return "_moe" if c.moe else ""


def step_terms(c: Costs, b: float, depth: float, tokens: float | None = None) -> tuple[dict[str, float], float]:
    """The terms of one step (each in seconds at coefficient 1) and the seconds of the pipeline hops
    (physics). b: sequences in the step; tokens: tokens computed (decode: b; a prefill chunk: its tokens,
    whose math is prefill math: the "p" names)."""
    t = b if tokens is None else tokens
    m = "c" if tokens is None else "p"
    x = _sfx(c)
    terms: dict[str, float] = {"fixed" + x: 1.0, "seq" + x: b, "layer" + x: float(sum(c.stages))}
    w = kvs = comp = att = 0.0
    touched = c.n_expert * (1.0 - (1.0 - c.k_expert / c.n_expert) ** t) if c.n_expert else 0.0
    for s in range(len(c.stages)):
        w += c.dense_bytes[s] + c.moe_layers[s] * touched * c.expert_bytes
        kvs += b * c.kv_seq_share * depth * c.kv_bytes[s]
        comp += t * c.flops_tok[s]
        att += t * depth * c.attn_flops[s]
    terms["w" + c.wclass[1:]] = w / c.bandwidth
    terms["kv"] = kvs / c.bandwidth
    terms["ctx" + x] = b * depth
    terms[m + c.path[1:] + _sfx(c)] = comp / c.rate_path
    terms[m + "16"] = terms.get(m + "16", 0.0) + att / c.rate16
    if c.tp > 1:
        size = t * c.n_embd * 2.0
        n_ar = 2 * sum(c.stages)
        if c.ep:
            # a MoE layer's second all-reduce becomes dispatch + combine: each token's hidden state to its
            # k experts' ranks and back, (ep - 1) / ep of them elsewhere (counted as the same link's bytes)
            moe = sum(c.moe_layers)
            n_ar -= moe
            size_a2a = 2.0 * c.k_expert * size * (c.tp - 1) / c.tp / c.tp
            terms["link" + ("_ib" if c.link_ib else "")] = 2 * moe * c.link_lat
            terms["linkbw" + ("_ib" if c.link_ib else "")] = moe * size_a2a / c.link_bw
        if c.link_ib:
            # NCCL's hierarchical all-reduce over nodes: within each node over its NVLink, across nodes each
            # GPU sends its 1/gpn share over its own NIC
            gpn = max(1, c.tp // c.tp_nodes)
            _acc(terms, "link_ib", n_ar * c.link_lat)
            _acc(terms, "linkbw_ib", n_ar * (2.0 * (c.tp_nodes - 1) / c.tp_nodes * size / gpn) / c.link_bw)
            _acc(terms, "linkbw", n_ar * (2.0 * (gpn - 1) / gpn * size) / c.nvl_bw)
        else:
            _acc(terms, "link", n_ar * c.link_lat)
            _acc(terms, "linkbw", n_ar * 2.0 * (c.tp - 1) / c.tp * size / c.link_bw)
    hops = 0.0
    if len(c.stages) > 1:
        hops = (len(c.stages) - 1) * (c.hop_lat + t * c.n_embd * 2.0 / c.hop_bw)
    return terms, hops


def _acc(terms: dict[str, float], k: str, v: float) -> None:
    terms[k] = terms.get(k, 0.0) + v


def prefill_terms(c: Costs, prompt: int, chunk: int) -> tuple[dict[str, float], float]:
    """A P-token prompt alone: chunks of at most `chunk` tokens, each a step of one sequence."""
    total: dict[str, float] = {"first" + _sfx(c): 1.0}    # once per request: its admission, tokenizing,
    comm = 0.0                                            # the first token's return
    done = 0
    chunk = max(1, chunk)
    while done < prompt:
        n = min(chunk, prompt - done)
        terms, cm = step_terms(c, 1, done + n / 2.0, tokens=n)
        terms["kv"] = terms["ctx" + _sfx(c)] = 0.0   # the chunk's attention is counted as FLOPs
        for k, v in terms.items():
            total[k] = total.get(k, 0.0) + v
        comm += cm
        done += n
    return total, comm


def prompt_token_terms(c: Costs, prompt: int) -> dict[str, float]:
    """The marginal cost of one prompt token inside a mixed step (chunked prefill): its FLOPs only."""
    comp = sum(c.flops_tok)
    att = (prompt / 2.0) * sum(c.attn_flops)
    out = {"p" + c.path[1:] + _sfx(c): comp / c.rate_path}
    out["p16"] = out.get("p16", 0.0) + att / c.rate16
    return out


def host_terms(c: Costs) -> dict[str, float]:
    """The serial host time of one request (its coefficient: seconds)."""
    return {"host" + _sfx(c): 1.0}


def seconds(terms: dict[str, float], coef: dict[str, float]) -> float:
    return sum(v * coefficient(coef, k) for k, v in terms.items())


# ------------------------------------------------------------------------------------------ operating points


@dataclass
class Workload:
    prompt: int
    gen: int
    chunk: int                         # prefill chunk (max_num_batched_tokens / chunked_prefill_size)


def point(c: Costs, coef: dict[str, float], wl: Workload, conc: int) -> ServingPoint:
    """The operating point at `conc` requests in flight (the module's docstring)."""
    P, G = wl.prompt, wl.gen
    st, cm = step_terms(c, conc, P + G / 2.0)
    step = seconds(st, coef) + cm
    pt = seconds(prompt_token_terms(c, P), coef)
    pre_t, pre_c = prefill_terms(c, P, wl.chunk)
    prefill = seconds(pre_t, coef) + pre_c
    tpot = step + (conc - 1) * P * pt / max(1, G)
    ttft0 = prefill + (step / 2.0 if conc > 1 else 0.0)
    ttft = ttft0
    for _ in range(3):                          # rho depends on the request rate, which depends on TTFT
        e2e = ttft + (G - 1) * tpot
        rate = conc / e2e if e2e > 0 else 0.0
        rho = min(0.9, (conc - 1) / conc * rate * P * pt) if conc > 1 else 0.0
        ttft = ttft0 / (1.0 - rho)
    e2e = ttft + (G - 1) * tpot
    # the engine's host work per request (HTTP, tokenizing, scheduling a new request) is serial: the rate
    # is at most 1 / host; the harmonic sum keeps that smooth (and linear for the derivation)
    busy = e2e / conc + seconds(host_terms(c), coef)
    rps = 1.0 / busy if busy > 0 else 0.0
    return ServingPoint(concurrency=conc, ttft_s=ttft, tpot_s=tpot, output_tps=rps * G, requests_per_s=rps)


def max_concurrency(kv_tokens: int, prompt: int, gen: int, block: int, dp: int, max_seqs: int | None) -> int:
    """Requests of prompt + gen tokens the allocated KV cache holds at once (whole blocks per sequence),
    per DP rank times the ranks, within the engine's max_num_seqs."""
    per = math.ceil((prompt + gen) / max(1, block)) * max(1, block)
    n = (kv_tokens // per) * max(1, dp)
    if max_seqs:
        n = min(n, max_seqs)
    return max(0, n)


def curve_concurrencies(top: int) -> list[int]:
    out, c = [], 1
    while c < top:
        out.append(c)
        c *= 2
    if top >= 1:
        out.append(top)
    return out


def sla_point(c: Costs, coef: dict[str, float], wl: Workload, top: int, ttft_s: float | None,
              tpot_s: float | None) -> ServingPoint | None:
    """The operating point at the largest concurrency (up to `top`) whose TTFT and TPOT meet the targets
    (None: not even one request meets them). Both grow with the concurrency: a binary search."""
    def ok(n: int) -> bool:
        p = point(c, coef, wl, n)
        return (ttft_s is None or p.ttft_s <= ttft_s) and (tpot_s is None or p.tpot_s <= tpot_s)

    if top < 1 or not ok(1):
        return None
    lo, hi = 1, top
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return point(c, coef, wl, lo)


def serving(c: Costs, coef: dict[str, float], wl: Workload, conc: int, max_conc: int, gpus: int,
            ttft_s: float | None = None, tpot_s: float | None = None) -> Serving:
    """Serving figures at `conc` (beyond max_conc the extra requests wait: figures at max_conc, the wait
    added to TTFT), the saturation point, the curve, and with service-level targets the best point that
    meets them (sla_point)."""
    top = max(1, max_conc)
    at = point(c, coef, wl, min(conc, top))
    ttft, tpot, rps = at.ttft_s, at.tpot_s, at.requests_per_s
    if conc > top:
        # the requests beyond the bound queue: each waits for (conc - top) / rate more before it starts
        ttft += (conc - top) / rps if rps > 0 else float("inf")
    sat = point(c, coef, wl, top)
    curve = [point(c, coef, wl, n) for n in curve_concurrencies(top)]
    terms, _ = step_terms(c, min(conc, top), wl.prompt + wl.gen / 2.0)
    bound = max(terms, key=lambda k: terms[k] * coefficient(coef, k))
    return Serving(concurrency=conc, prompt_tokens=wl.prompt, gen_tokens=wl.gen, ttft_s=ttft, tpot_s=tpot,
                   output_tps=rps * wl.gen, requests_per_s=rps, max_concurrency=max_conc,
                   saturation=Saturation(concurrency=top, requests_per_s=sat.requests_per_s,
                                         output_tps=sat.output_tps),
                   curve=curve, gpus=gpus, bound=BOUND_LABELS.get(bound.removesuffix("_moe"), bound),
                   sla=(sla_point(c, coef, wl, top, ttft_s, tpot_s)
                        if ttft_s is not None or tpot_s is not None else None))


BOUND_LABELS = {"first": "per-request overhead", "host": "serial host work per request", "fixed": "fixed cost per step", "layer": "fixed cost per layer", "seq": "per-request work", "ctx": "per-token host work", "w16": "weight reads",
                "w8": "weight reads", "w4": "weight reads", "kv": "KV cache reads", "c16": "16-bit math",
                "c8": "8-bit math", "cdq": "dequantize-then-16-bit math", "link": "all-reduces"}
