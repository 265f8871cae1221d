"""deepseek32 (DeepSeek-V3.2-Exp: DeepSeek Sparse Attention) against the real llama.cpp.

- Types: every scheme's per-tensor types and bytes equal llama-quantize's on a tiny generated deepseek32
  (lightning-indexer tensors, the NextN/MTP block llama.cpp keeps, block_count counting it), with and
  without an importance matrix, dry and real.
- KV cache: llama.cpp's two reports (the MLA latent cache and the indexer key cache, trunk layers only)
  equal the plan's at several contexts, cache types and slot counts on real runs of the tiny model.
- Full scale: the `dq-planner header` file of DeepSeek-V3.2-Exp loads in llama-fit-params over four
  loopback RPC devices with an uneven --tensor-split; per-device weights and KV equal llama.cpp's
  estimate. Compute buffers are printed next to the plan's here and asserted in
  tests/test_newgen_dsa_compute.py (the indexer's graph).
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from llamacpp_support import assert_rpc_placement_matches, dq, fit_params_by_device, make_imatrix, require_llama_cpp, run_logged
from planner.core.catalog import Hparams, catalog
from planner.core.ggml.tensor_types import parse_type, row_bytes
from planner.core.llamacpp.memory import padded_ctx
from planner.core.plan import PlanRequest
from planner.core.llamacpp.schemes import ids_for, resolve_scheme
from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
from planner.engines.llamacpp.crosscheck import dry_run_compare
from planner.engines.llamacpp.logs import parse_memory
from planner.engines.llamacpp.quantize import compare_log, read_file_table, run_quantize, verify_file
from planner.gguf.model import model_from_gguf
from planner.gguf.writer import model_from_hparams, write_gguf
from planner.make_plan import make_plan
from test_memory_llamacpp import rpc_servers  # noqa: F401  (the fixture: four loopback rpc-servers)
from tiny_models import tiny_deepseek2_hparams

MiB = 1 << 20


def tiny_deepseek32_hparams(**kw) -> Hparams:
    """The tiny deepseek2 shape as deepseek32: 3 trunk blocks (block 0 dense) + 1 NextN block (MoE), an
    indexer of 4 heads of 128 (the real head size) and top-k 256."""
    hp = replace(tiny_deepseek2_hparams(n_layer=4), arch="deepseek32", n_head_kv=1, n_layer_nextn=1,
                 indexer_n_head=4, indexer_head_size=128, indexer_top_k=256)
    return replace(hp, **kw)


@pytest.fixture(scope="module")
def ds32(tmp_path_factory):
    model = model_from_hparams(tiny_deepseek32_hparams(), id="tiny-deepseek32")
    path = write_gguf(tmp_path_factory.mktemp("ds32") / "tiny-deepseek32.gguf", model)[0]
    return model, path


def test_tensors_and_counts():
    m = resolve_catalog_model(catalog()["deepseek-v3.2-exp"], None)
    hp = m.hparams
    assert (hp.arch, hp.n_layer, hp.n_layer_nextn, hp.n_head_kv) == ("deepseek32", 62, 1, 1)
    names = {t.name for t in m.tensors}
    assert {"blk.60.indexer.attn_q_b.weight", "blk.61.nextn.eh_proj.weight", "blk.61.ffn_down_exps.weight",
            "blk.61.nextn.shared_head_head.weight"} <= names and "blk.62.attn_norm.weight" not in names
    # the converter writes indexer.proj as f32 (and llama-quantize then quantizes it: only glm5-next keeps it)
    assert {t.src_type.name for t in m.tensors if t.name.endswith("indexer.proj.weight")} == {"F32"}
    # DeepSeek-V3.2-Exp's card: 685B parameters with the MTP block; 671B without it (the V3 trunk) plus
    # the indexer's 0.9B
    trunk = sum(t.n_elements for t in m.tensors if not t.name.startswith("blk.61."))
    assert round(m.params / 1e9) == 685 and round(trunk / 1e9) == 672
    # V3.2 and V3.2-Speciale: "the same model structure as DeepSeek-V3.2-Exp" (their model card)
    for mid in ("deepseek-v3.2", "deepseek-v3.2-speciale"):
        assert catalog()[mid].hparams == hp


def test_header_round_trip(ds32):
    model, path = ds32
    back = model_from_gguf(str(path))
    assert back.hparams == model.hparams
    assert [(t.name, t.shape) for t in back.tensors] == [(t.name, t.shape) for t in model.tensors]


@pytest.mark.parametrize("imatrix", [False, True])
def test_every_scheme_dry_run(ds32, tmp_path, imatrix):
    lc = require_llama_cpp("llama-quantize", "llama-imatrix")
    model, path = ds32
    im = make_imatrix(lc, path, tmp_path / "imatrix.gguf") if imatrix else None
    ids = ids_for("deepseek32")
    checks = dry_run_compare(lc, model, path, ids, imatrix=im)
    bad = [f"{c.scheme}: exit {c.returncode} {c.error} {c.refused} {c.mismatches[:3]}" for c in checks if not c.ok]
    assert not bad, "\n".join(bad)
    assert len(checks) == len(ids) > 30


def test_real_quantization(ds32, tmp_path):
    lc = require_llama_cpp("llama-quantize")
    model, src = ds32
    for sid in ("Q4_K_M", "Q3_K_M", "Q8_0", "MXFP4_MOE"):
        s = resolve_scheme(sid)
        plan = size_scheme(model, s)
        out = tmp_path / f"{sid}.gguf"
        res = run_quantize(lc, src, out, s, plan, threads=2)
        assert compare_log(plan, res.log) == [], sid
        assert verify_file(plan, read_file_table(out)) == [], sid
        out.unlink()


_KV = re.compile(r"llama_kv_cache: size =\s+([\d.]+) MiB \(\s*(\d+) cells,\s+(\d+) layers,\s+(\d+)/(\d+) seqs\)")


@pytest.mark.parametrize("ctx,ctype,np_,fa", [(2048, "f16", 1, "on"), (3000, "q8_0", 1, "on"),
                                              (4096, "f16", 2, "off"), (1024, "bf16", 3, "on")])
def test_kv_cache_equals_llama_cpp(ds32, ctx, ctype, np_, fa):
    exe = str(require_llama_cpp("llama-completion").binary("llama-completion"))
    model, path = ds32
    r = run_logged([exe, "-m", str(path), "-c", str(ctx), "-n", "1", "-p", "hi", "-no-cnv", "-lv", "4",
                    "-t", "1", "--no-warmup", "-np", str(np_), "-ctk", ctype, "-ctv", ctype, "-fa", fa,
                    "-ngl", "0"], needs=r"(?s)llama_kv_cache: size =.*llama_kv_cache: size =")
    reports = [m.groups() for m in _KV.finditer(r.stderr)]
    assert len(reports) == 2, reports          # the MLA cache, then the indexer key cache
    hp = model.hparams
    n_ctx, _ = padded_ctx(ctx, np_)
    trunk = hp.n_layer - hp.n_layer_nextn
    t = parse_type(ctype)
    parts = [row_bytes(t, hp.n_lora_kv + hp.n_rot) * n_ctx * trunk, row_bytes(t, hp.indexer_head_size) * n_ctx * trunk]
    for (mib, cells, layers, seqs, _), want in zip(reports, parts):
        assert int(layers) == trunk and int(seqs) == np_ and int(cells) * np_ == n_ctx
        assert f"{want / MiB:.2f}" == mib
    plan = make_plan(PlanRequest(model_file=str(path), device="h100", gpus=1, ngl=0, ctx=ctx, parallel=np_,
                                 cache_type_k=ctype, cache_type_v=ctype, flash_attn=fa))
    mem = plan.schemes[0].memory
    assert mem.kv_cache_bytes == sum(parts)
    rep = parse_memory(r.stderr.splitlines())
    print(f"compute CPU: llama.cpp {rep.compute_mib.get('CPU')} MiB, plan {mem.host.compute_bytes / MiB:.2f} MiB")


def test_full_scale_header_in_llama_fit_params(rpc_servers, tmp_path):  # noqa: F811
    require_llama_cpp("llama-fit-params")
    out = tmp_path / "v32-q4_k_m.gguf"
    r = dq("header", "--model", "deepseek-v3.2-exp", "--scheme", "Q4_K_M", "--output", out)
    assert r.returncode == 0, r.stderr
    split = "3,1,2,1"
    theirs = fit_params_by_device(out, split, rpc_servers)
    plan = make_plan(PlanRequest(model="deepseek-v3.2-exp", device="h100", gpus=1, ngl=None, schemes=["Q4_K_M"],
                                 ctx=32768, tensor_split=[float(x) for x in split.split(",")] + [0.0],
                                 rpc=list(rpc_servers)))
    for i, d in enumerate(assert_rpc_placement_matches(plan.scheme("Q4_K_M").memory, theirs, 4)):
        print(f"RPC{i}: compute llama.cpp {theirs[f'RPC{i}'].compute_mib} MiB, plan {d.compute_bytes / MiB:.0f} MiB")
