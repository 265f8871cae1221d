"""How fast vLLM and SGLang run a plan: tensor (x pipeline) parallel decode and prefill.

The shared parts (Processor, Link, the efficiency factors of profiles/speed/, Speed) are
planner.core.llamacpp.speed's; its docstring explains the decode and prefill model.

Tensor parallel (vLLM/SGLang, `tp_decode`): each of the tp GPUs of a stage reads 1/tp of the stage's
bytes; each layer then does two all-reduces of n_embd x 2 bytes (ring: 2 (tp-1)/tp of it over the link)
at the link's latency; pipeline stages add up as a layer split does.
"""

from __future__ import annotations

from planner.core.llamacpp.speed import Factors, Link, Processor, Speed, _attn_dims, factors
from planner.core.serving.hf_checkpoint import _layer_kind, layer_weights, model_weights, stored
from planner.core.serving.memory import kv_values_per_token_layer
from planner.errors import PlannerError


def tp_decode(stage_bytes: list[float], stage_layers: list[int], tp: int, gpu: Processor, fac: Factors,
              link: Link, n_embd: int, family: str = "float", stage_link: Link | None = None) -> tuple[float, str]:
    """Decode tokens/s of a tensor- (x pipeline-) parallel plan (vLLM/SGLang): per stage the bytes one
    token reads (active experts only, its KV at the depth) split over tp GPUs, plus two all-reduces
    per layer (ring: 2 (tp-1)/tp of n_embd x 2 bytes over `link`, each at its latency); stages in
    sequence, one hop between consecutive stages. Returns (tokens/s, bound)."""
    if tp < 1:
        raise PlannerError("tensor parallel size must be at least 1")
    eff = fac.eff(fac.decode, gpu.backend, family)
    sec: dict[str, float] = {}
    for i, (b, n) in enumerate(zip(stage_bytes, stage_layers)):
        sec[f"stage {i} {gpu.label}"] = b / tp / (gpu.bandwidth_gbs * 1e9 * eff) + n * fac.layer_seconds(gpu.backend)
        if tp > 1:
            ar = 2 * (tp - 1) / tp * n_embd * 2.0
            sec[f"stage {i} all-reduce"] = 2 * n * link.seconds(ar)
    hop = stage_link or link
    if len(stage_bytes) > 1:
        sec["pipeline hops"] = (len(stage_bytes) - 1) * hop.seconds(n_embd * 2.0)
    t = sum(sec.values())
    return (1.0 / t if t else 0.0), max(sec, key=lambda k: sec[k])


def hf_active_bytes(ck) -> tuple[float, float]:
    """(weight bytes one token reads, weight FLOPs per token) of a Hugging Face checkpoint
    (planner.core.serving.hf_checkpoint.Checkpoint) as vLLM/SGLang run it: the routed experts at
    n_expert_used / n_expert, one row of the embedding, no MTP layers (not loaded without MTP)."""
    hp = ck.entry.hparams
    fmt = ck.format
    sel = fmt.selector(hp)
    active = hp.n_expert_used / hp.n_expert if hp.is_moe else 1.0
    total = [0.0, 0.0]

    def add(ws, times: int = 1) -> None:
        for w in ws:
            share = active if w.group == "routed" else 1.0
            b = sum(t.bytes for t in stored(w, fmt, sel, ck.group_size))
            if w.role == "embed":
                total[0] += b / max(1, w.shape[0]) * times
                continue
            total[0] += b * share * times
            if w.role in ("linear", "lm_head"):
                total[1] += 2.0 * w.n_elements * share * times

    first, last = model_weights(hp)
    add(first + last)
    kinds: dict[tuple[bool, bool], tuple[int, int]] = {}
    for i in range(hp.n_layer):
        k = _layer_kind(hp, i)
        fi, n = kinds.get(k, (i, 0))
        kinds[k] = (fi, n + 1)
    for fi, n in kinds.values():
        add(layer_weights(hp, fi), n)
    return total[0], total[1]


def predict_tp(ck, layout, profile, req, gpus_per_node: int, kv_bytes_per_elem: int = 2) -> Speed | None:
    """Speed of a vLLM/SGLang plan: TP x PP (see the module's docstring); the all-reduce goes over NVLink
    within a node and InfiniBand across nodes (profiles/speed/llamacpp.toml [links])."""
    if profile is None or profile.bandwidth_gbs <= 0:
        return None
    hp = ck.entry.hparams
    fac = factors("hf")
    bytes_tok, flops_tok = hf_active_bytes(ck)
    kv_row = kv_values_per_token_layer(hp, 1) * kv_bytes_per_elem     # the whole row, before any TP split
    tp, pp = layout.tp, layout.pp
    gpu = Processor(profile.backend + "0", profile.backend, profile.bandwidth_gbs, profile.bf16_tflops)
    link = fac.links["nvlink"] if tp <= gpus_per_node else fac.links["infiniband"]
    stage_link = fac.links["infiniband"] if tp * pp > gpus_per_node else fac.links["nvlink"]
    layers = [hp.n_layer // pp + (1 if i < hp.n_layer % pp else 0) for i in range(pp)]
    # MLA's latent cache is replicated on every TP rank (it has no heads to split): each rank reads all of it
    kv_rank = kv_row * (tp if hp.arch == "deepseek2" else 1)
    stage_bytes = [bytes_tok * n / hp.n_layer + kv_rank * n * req.depth for n in layers]
    fam = "float" if ck.format.method == "none" else "legacy"
    decode, bound = tp_decode(stage_bytes, layers, tp, gpu, fac, link, hp.n_embd, fam, stage_link)
    # prefill: FLOPs over the stage's tp GPUs at the dense rate, stages in sequence
    attn = 2.0 * hp.n_head * _attn_dims(hp, "mla" if hp.arch == "deepseek2" else None) * hp.n_layer
    t = 0.0
    u = max(1, min(req.ubatch, req.prompt))
    done = 0
    while done < req.prompt:
        n = min(u, req.prompt - done)
        fl = (flops_tok + attn * (req.depth + done + n / 2.0)) * n
        t += fl / (tp * pp * gpu.tflops * 1e12 * fac.eff(fac.prefill, gpu.backend, fam)) * pp
        t += hp.n_layer * fac.layer_seconds(gpu.backend)
        done += n
    return Speed(prefill_tps=req.prompt / t if t else 0.0, decode_tps=decode, prompt_tokens=req.prompt,
                 depth_tokens=req.depth, bound=bound)
