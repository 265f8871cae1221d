"""llama.cpp's own fixed cost per decoded token and layer on this host, measured with llama-bench.

Beyond reading its weights and its cache, a decoded token costs llama.cpp time per layer that no weight
byte accounts for: the token's graph is built, scheduled and allocated anew, and each of its nodes is
dispatched to the CPU backend's threads and waited for. A DeepSeek MoE layer has dozens of nodes (the
router's softmax, top-k and weights, three MUL_MAT_IDs, the shared expert, MLA's projections and norms):
on a host with few cores this is tens of microseconds per layer and token, a tenth of the decode time
of a small model. The figure is measured, not modelled: llama-bench decodes skeleton models (the real
architectures' graphs with 64-wide rows, whose weights are a few KiB per layer) of two layer counts, and
the difference per added layer is the cost of that layer kind (planner.core.devices.host_kernels.LAYER_KINDS):

  - deepseek2 (MLA + MoE, 64 experts of which 4 are used, a shared expert): 2 layers (1 dense, 1 MoE),
    10 layers (1 dense, 9 MoE) and 10 layers (9 dense, 1 MoE): the MoE and the dense layer's cost;
  - qwen2 (GQA, q/k/v biases): 2 and 10 layers: a GQA layer's cost;

and what the 2-layer skeletons cost beyond their layers is the cost per token (the output head of a
512-token vocabulary, sampling-free decode's bookkeeping). The skeletons' own weights (~10 KiB per layer)
are part of the figure: a hundredth of a microsecond at any memory's bandwidth.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from planner.core.catalog import Hparams
from planner.errors import PlannerError
from planner.engines.llamacpp.process import run_captured

SPAN = 8                          # layers added between the short and the long skeleton
GEN_TOKENS = 128                  # tokens decoded per llama-bench repetition


def _mla(n_layer: int, dense: int) -> Hparams:
    return Hparams(arch="deepseek2", n_embd=64, n_vocab=512, n_layer=n_layer, n_head=8, n_head_kv=8, n_ff=64,
                   n_ctx_train=8192, n_lora_q=32, n_lora_kv=32, n_rot=16, n_embd_head_qk_nope=16,
                   n_embd_head_v=16, n_expert=64, n_expert_used=4, n_expert_shared=1, n_ff_exp=32,
                   n_layer_dense_lead=dense, exp_probs_b=True)


def _gqa(n_layer: int) -> Hparams:
    return Hparams(arch="qwen2", n_embd=64, n_vocab=512, n_layer=n_layer, n_head=4, n_head_kv=2, n_ff=64,
                   n_ctx_train=8192, n_embd_head=16, qkv_bias=True)


# name -> (hparams, layout)
SKELETONS = {
    "mla-short": (_mla(2, 1), "mla"),
    "mla-moe": (_mla(2 + SPAN, 1), "mla"),
    "mla-dense": (_mla(2 + SPAN, 1 + SPAN), "mla"),
    "gqa-short": (_gqa(2), None),
    "gqa-long": (_gqa(2 + SPAN), None),
}


# the skeletons each attention class needs (planner.core.llamacpp.speed.attention_class)
CLASS_SKELETONS = {"mla": ("mla-short", "mla-moe", "mla-dense"), "gqa": ("gqa-short", "gqa-long")}


def solve(t: dict[str, float]) -> dict:
    """{"layer_seconds": {kind: s}, "token_seconds": s} from the skeletons' seconds per decoded token, of
    the classes whose skeletons were measured (each figure at least 0: two timings of a noisy host may
    differ the wrong way by a hair); the cost per token: the mean of the classes' estimates."""
    layers: dict[str, float] = {}
    token: list[float] = []
    if all(k in t for k in CLASS_SKELETONS["mla"]):
        moe = layers["mla_moe"] = max(0.0, (t["mla-moe"] - t["mla-short"]) / SPAN)
        dense = layers["mla_dense"] = max(0.0, (t["mla-dense"] - t["mla-short"]) / SPAN)
        token.append(max(0.0, t["mla-short"] - moe - dense))
    if all(k in t for k in CLASS_SKELETONS["gqa"]):
        gqa = layers["gqa_dense"] = max(0.0, (t["gqa-long"] - t["gqa-short"]) / SPAN)
        token.append(max(0.0, t["gqa-short"] - 2 * gqa))
    return {"layer_seconds": layers, "token_seconds": statistics.mean(token) if token else 0.0}


def probe_overhead(llama_bench: Path, threads: int, *, reps: int = 5, timeout: float = 120,
                   classes: list[str] | None = None, say=None) -> dict:
    """Measure the skeletons of the attention classes named (every class by default: CLASS_SKELETONS)
    with llama-bench (`threads` threads, `reps` repetitions of GEN_TOKENS tokens, the median
    repetition) and solve for the cost per layer kind and per token (see solve); say(line): progress.
    The skeleton files live in a private temporary folder, removed after."""
    from planner.gguf.writer import model_from_hparams, write_gguf

    work = Path(tempfile.mkdtemp(prefix="dq-planner-overhead-"))
    try:
        seconds = {}
        names = [n for c in (classes or CLASS_SKELETONS) for n in CLASS_SKELETONS[c]]
        for i, name in enumerate(names, 1):
            hp, layout = SKELETONS[name]
            if say is not None:
                say(f"layer cost probe {i}/{len(names)}: llama-bench on the {name} skeleton")
            f = work / f"{name}.gguf"
            write_gguf(f, model_from_hparams(hp, layout, id=f"skeleton-{name}"))
            argv = [str(llama_bench), "-m", str(f), "-p", "0", "-n", str(GEN_TOKENS), "-t", str(threads),
                    "-r", str(reps), "-o", "json"]
            try:
                r = run_captured(argv, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise PlannerError(f"llama-bench on the {name} skeleton ran past {timeout:.0f} s") from None
            if r.returncode != 0:
                tail = " | ".join(r.stderr.strip().splitlines()[-2:])
                raise PlannerError(f"llama-bench on the {name} skeleton failed ({r.returncode}): {tail}")
            try:
                rec = json.loads(r.stdout)[0]
                samples = rec.get("samples_ts") or [rec["avg_ts"]]
                seconds[name] = 1.0 / statistics.median(float(x) for x in samples)
            except (ValueError, KeyError, IndexError, TypeError, ZeroDivisionError):
                raise PlannerError(f"llama-bench on the {name} skeleton: unreadable output") from None
        return {**solve(seconds), "skeleton_seconds": seconds}
    finally:
        shutil.rmtree(work, ignore_errors=True)
