"""The current generation's catalog models that llama.cpp runs as existing architectures: DeepSeek-V3.1-Terminus
(deepseek2) and DeepSeek-R1-0528-Qwen3-8B (qwen3, new here).

qwen3 is checked against the real llama.cpp: a tiny generated qwen3 loads in llama-completion (the loader
checks every tensor's name and shape against src/models/qwen3.cpp), its KV cache equals llama.cpp's report,
and every scheme's types equal llama-quantize's, dry and real.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from llamacpp_support import require_llama_cpp, run_logged
from planner.core.catalog import Hparams, catalog
from planner.core.plan import PlanRequest
from planner.core.llamacpp.schemes import ids_for, resolve_scheme
from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
from planner.engines.llamacpp.crosscheck import dry_run_compare
from planner.engines.llamacpp.logs import parse_memory, shows_as_mib
from planner.engines.llamacpp.quantize import compare_log, read_file_table, run_quantize, verify_file
from planner.gguf.model import model_from_gguf
from planner.gguf.writer import model_from_hparams, write_gguf
from planner.make_plan import make_plan

MiB = 1 << 20


def tiny_qwen3_hparams(**kw) -> Hparams:
    """A qwen3 (R1-0528-Qwen3-8B shape: GQA 4, q/k norms, head 128 as in the real model), tiny; n_ff 384
    makes ffn_down fall back to 32-element blocks."""
    hp = Hparams(arch="qwen3", n_embd=256, n_vocab=384, n_layer=4, n_head=4, n_head_kv=1, n_ff=384,
                 n_ctx_train=4096, n_embd_head=128, qk_norm=True)
    return replace(hp, **kw)


@pytest.fixture(scope="module")
def qwen3_gguf(tmp_path_factory):
    model = model_from_hparams(tiny_qwen3_hparams(), id="tiny-qwen3")
    path = write_gguf(tmp_path_factory.mktemp("qwen3") / "tiny-qwen3.gguf", model)[0]
    return model, path


def test_catalog_entries():
    cat = catalog()
    t = resolve_catalog_model(cat["deepseek-v3.1-terminus"], "mla")
    v31 = resolve_catalog_model(cat["deepseek-v3.1"], "mla")
    assert t.hparams == v31.hparams and t.params == v31.params
    q = resolve_catalog_model(cat["deepseek-r1-0528-qwen3-8b"], None)
    assert q.hparams.arch == "qwen3" and q.hparams.qk_norm and not q.hparams.qkv_bias
    names = {x.name for x in q.tensors}
    assert {"blk.35.attn_q_norm.weight", "blk.35.attn_k_norm.weight", "output.weight"} <= names
    assert not any(n.endswith(".bias") for n in names)
    # Qwen3-8B's model card: 8.2B parameters, 6.95B of them non-embedding (token_embd and output excluded)
    assert round(q.params / 1e9, 1) == 8.2
    emb = sum(x.n_elements for x in q.tensors if x.name in ("token_embd.weight", "output.weight"))
    assert round((q.params - emb) / 1e9, 2) == 6.95


def test_qwen3_header_round_trip(qwen3_gguf):
    model, path = qwen3_gguf
    back = model_from_gguf(str(path))
    assert back.hparams.arch == "qwen3" and back.hparams.qk_norm
    assert [(t.name, t.shape) for t in back.tensors] == [(t.name, t.shape) for t in model.tensors]


@pytest.mark.parametrize("ctx,ctype,np_,fa", [(2048, "f16", 1, "on"), (3000, "q8_0", 2, "on"), (4096, "f16", 1, "off")])
def test_qwen3_loads_and_kv_equals_llama_cpp(qwen3_gguf, ctx, ctype, np_, fa):
    exe = str(require_llama_cpp("llama-completion").binary("llama-completion"))
    _, path = qwen3_gguf
    r = run_logged([exe, "-m", str(path), "-c", str(ctx), "-n", "1", "-p", "hi", "-no-cnv", "-lv", "4",
                    "-t", "1", "--no-warmup", "-np", str(np_), "-ctk", ctype, "-ctv", ctype, "-fa", fa,
                    "-ngl", "0"], needs=r"llama_kv_cache: size =")
    rep = parse_memory(r.stderr.splitlines())
    plan = make_plan(PlanRequest(model_file=str(path), device="h100", gpus=1, ngl=0, ctx=ctx, parallel=np_,
                                 cache_type_k=ctype, cache_type_v=ctype, flash_attn=fa))
    mem = plan.schemes[0].memory
    assert rep.kv is not None and shows_as_mib(mem.kv_cache_bytes, rep.kv.mib)
    assert rep.kv.seqs == np_
    mapped = rep.model_mib["CPU_Mapped"] * MiB
    assert abs(mapped - mem.host.weights_bytes) <= 0.005 * MiB + 32 * len(plan.schemes[0].tensors)


def test_qwen3_every_scheme_dry_run(qwen3_gguf):
    lc = require_llama_cpp("llama-quantize")
    model, path = qwen3_gguf
    ids = ids_for("qwen3")
    checks = dry_run_compare(lc, model, path, ids)
    bad = [f"{c.scheme}: exit {c.returncode} {c.error} {c.mismatches[:3]}" for c in checks if not c.ok]
    assert not bad, "\n".join(bad)
    assert len(checks) == len(ids) and sum(c.tensors for c in checks if not c.refused) > 0


def test_qwen3_real_quantization(qwen3_gguf, tmp_path):
    lc = require_llama_cpp("llama-quantize")
    model, src = qwen3_gguf
    for sid in ("Q4_K_M", "Q3_K_M", "Q6_K", "MXFP4_MOE"):
        s = resolve_scheme(sid)
        plan = size_scheme(model, s)
        out = tmp_path / f"{sid}.gguf"
        res = run_quantize(lc, src, out, s, plan, threads=2)
        assert compare_log(plan, res.log) == [], sid
        assert verify_file(plan, read_file_table(out)) == [], sid
        # the q/k norms are never quantized
        assert {t.type for t in plan.tensors if t.name.endswith(("q_norm.weight", "k_norm.weight"))} == {"f32"}
        out.unlink()
