"""The paper's recipes (DQ3_K_M, UD-Q2_K_XL, Q2_K_L) on deepseek32 (DeepSeek-V3.2).

- Full scale: every tensor V3.2 shares with R1 (the V3 trunk, MLA layout) gets the type it gets in R1
  under the same recipe; the lightning indexer's tensors get exactly what the recipe's base ftype gives
  them (no rule matches them), their norms stay f32; the NextN block's own tensors follow the base ftype.
- Real llama-quantize --dry-run on a tiny generated deepseek32 (q LoRA rank 256, so that indexer.attn_q_b
  takes a K-quant and a rule catching it would show): `dq-planner quantize --dry-run` passes the recipe's
  --tensor-type flags and every tensor's type equals the plan; the indexer tensors' types equal a plain
  llama-quantize run of the base ftype.
- Accuracy: V3.2 has no measurement; the V3 (then R1) measurement of the same scheme is shown as a
  labelled proxy and never ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace

import pytest

from llamacpp_support import dq, require_llama_cpp
from planner.core.accuracy import tables as acc
from planner.core.catalog import catalog
from planner.core.plan import PlanRequest
from planner.core.llamacpp.schemes import ids_for, resolve_scheme
from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
from planner.engines.llamacpp.argv import quantize_argv
from planner.engines.llamacpp.logs import parse_quantize
from planner.gguf.writer import model_from_hparams, write_gguf
from planner.make_plan import make_plan
from test_newgen_deepseek32 import tiny_deepseek32_hparams

RECIPES = ("DQ3_K_M", "UD-Q2_K_XL", "Q2_K_L")
INDEXER = ("indexer.attn_q_b.weight", "indexer.attn_k.weight", "indexer.proj.weight")


@pytest.fixture(scope="module")
def v32():
    return resolve_catalog_model(catalog()["deepseek-v3.2"], None)


@pytest.fixture(scope="module")
def r1():
    return resolve_catalog_model(catalog()["deepseek-r1"], "mla")


def test_recipes_apply_to_deepseek32():
    ids = ids_for("deepseek32")
    assert all(r in ids for r in RECIPES)


@pytest.mark.parametrize("rid", RECIPES)
def test_shared_tensors_as_in_r1_indexer_as_the_base_ftype(v32, r1, rid):
    s = resolve_scheme(rid)
    mine = {t.name: t.type for t in size_scheme(v32, s).tensors}
    theirs = {t.name: t.type for t in size_scheme(r1, s).tensors}
    base = {t.name: t.type for t in size_scheme(v32, resolve_scheme(s.base)).tensors}
    shared = [n for n in theirs if n in mine]
    assert len(shared) == len(theirs)                   # V3.2 holds every R1 tensor, same names
    assert {n: mine[n] for n in shared} == theirs
    idx = [n for n in mine if ".indexer." in n]
    assert len(idx) == 5 * 62
    for n in idx:
        if n.endswith(INDEXER):
            assert mine[n] == base[n], n
        else:                                           # k_norm weight and bias: 1-D, never quantized
            assert mine[n] == "f32", n
    # the NextN block's own tensors: the base ftype's types; its MoE block: the recipe's trunk rules
    for n in ("blk.61.nextn.eh_proj.weight", "blk.61.nextn.embed_tokens.weight",
              "blk.61.nextn.shared_head_head.weight"):
        assert mine[n] == base[n], n
    assert mine["blk.61.ffn_down_exps.weight"] == mine["blk.60.ffn_down_exps.weight"]
    assert mine["blk.61.attn_q_b.weight"] == mine["blk.60.attn_q_b.weight"]


def test_dq3_k_m_size_on_v32(v32, r1):
    """DQ3_K_M on V3.2: R1's file plus the indexer at Q3_K_M's types and the NextN block (a 59th MoE
    block with q3_K down-projections, and its own embedding and head at the base ftype's types)."""
    s = resolve_scheme("DQ3_K_M")
    p = size_scheme(v32, s)
    extra = {t.name: t.bytes for t in p.tensors}
    for t in size_scheme(r1, s).tensors:
        extra.pop(t.name)
    assert sum(extra.values()) + size_scheme(r1, s).size_bytes == p.size_bytes
    assert all(".indexer." in n or n.startswith("blk.61.") for n in extra)
    down = [t for t in p.tensors if t.name.endswith("ffn_down_exps.weight")]
    assert len(down) == 59
    assert sum(1 for t in down if t.type == "q6_K") == 2 and sum(1 for t in down if t.type == "q4_K") == 12
    print(f"DQ3_K_M on deepseek-v3.2: {p.size_bytes} bytes ({p.size_bytes / 2**30:.2f} GiB, {p.bpw:.3f} bpw)")


@pytest.fixture(scope="module")
def tiny32(tmp_path_factory):
    hp = replace(tiny_deepseek32_hparams(), n_lora_q=256)
    model = model_from_hparams(hp, id="tiny-deepseek32-q256")
    path = write_gguf(tmp_path_factory.mktemp("ds32r") / "tiny-deepseek32.gguf", model)[0]
    return model, path


def _dry_run_types(lc, path, scheme) -> dict[str, str]:
    r = subprocess.run(quantize_argv(lc.binary("llama-quantize"), path, None, scheme, dry_run=True),
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-2000:]
    return {t.name: t.type for t in parse_quantize((r.stdout + r.stderr).splitlines()).tensors}


@pytest.mark.parametrize("rid", RECIPES)
def test_llama_quantize_dry_run_equals_the_plan(tiny32, rid):
    lc = require_llama_cpp("llama-quantize")
    model, path = tiny32
    s = resolve_scheme(rid)
    r = dq("quantize", "--input", path, "--scheme", rid, "--dry-run", timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    theirs = _dry_run_types(lc, path, s)
    plan = {t.name: t.type for t in size_scheme(model, s).tensors}
    assert theirs == plan
    # the indexer's tensors: what llama-quantize gives them under the plain base ftype
    base = _dry_run_types(lc, path, resolve_scheme(s.base))
    idx = [n for n in theirs if n.endswith(INDEXER)]
    assert len(idx) == 3 * 4
    assert {n: theirs[n] for n in idx} == {n: base[n] for n in idx}
    # discriminating: the tiny model's attn_q_b rows (q LoRA 256) take the rule's K-quant, the indexer's
    # (same rows) the base ftype's other one
    if rid == "DQ3_K_M":
        assert (theirs["blk.1.attn_q_b.weight"], theirs["blk.1.indexer.attn_q_b.weight"]) == ("q4_K", "q3_K")


def test_accuracy_is_a_labelled_proxy_never_ranked():
    plan = make_plan(PlanRequest(model="deepseek-v3.2", device="h100", gpus=8, schemes=list(RECIPES), ctx=32768))
    v3 = acc.accuracy_for("deepseek-v3", "DQ3_K_M")
    for sp in plan.schemes:
        assert sp.accuracy is None
        px = acc.proxy_for("deepseek-v3.2", sp.id)
        want = "deepseek-r1" if sp.id == "UD-Q2_K_XL" else "deepseek-v3"
        assert px is not None and px.measured_model == want
        assert px.label in sp.notes
    assert acc.proxy_for("deepseek-v3.2", "DQ3_K_M").accuracy == v3
    assert acc.proxy_for("deepseek-r1", "DQ3_K_M") is None           # measured: no proxy
    assert acc.proxy_for("deepseek-v3.2", "IQ1_S") is None           # nobody measured it
    rec = plan.recommendation
    assert rec is not None and rec.basis == "unmeasured" and all(e.score is None for e in rec.ranked)
    assert "deepseek-v3.2" not in acc.models_with_accuracy()


def test_headless_json_v32_dq3_k_m():
    r = dq("--headless", "--model", "deepseek-v3.2", "--scheme", "DQ3_K_M", "--device", "h100", "--gpus", "8",
           "--json", env={**os.environ, "DQ_PLANNER_DETECT": "0"})
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    s = d["schemes"][0]
    v32 = resolve_catalog_model(catalog()["deepseek-v3.2"], None)
    assert s["size_bytes"] == size_scheme(v32, resolve_scheme("DQ3_K_M")).size_bytes
    assert s["fits"] is True and s["accuracy"] is None
    assert len(s["memory"]["per_device"]) == 8


# --------------------------------------------------------------------------------------------- deepseek4

V3_NAMES = ("attn_q_a.weight", "attn_q_b.weight", "ffn_gate_exps.weight", "ffn_up_exps.weight",
            "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight")


@pytest.fixture(scope="module")
def v4():
    return resolve_catalog_model(catalog()["deepseek-v4-flash"], None)


@pytest.mark.parametrize("rid", RECIPES)
def test_deepseek4_rules(v4, r1, rid):
    """V4-Flash: the tensors it shares by name with R1 get R1's types under the recipe (a middle block of
    each), output and token_embd too; everything else gets exactly the base ftype's type."""
    s = resolve_scheme(rid)
    assert "deepseek4" in s.architectures and s.for_arch("deepseek4").rules != s.rules
    mine = {t.name: t.type for t in size_scheme(v4, s).tensors}
    base = {t.name: t.type for t in size_scheme(v4, resolve_scheme(s.base)).tensors}
    theirs = {t.name: t.type for t in size_scheme(r1, s).tensors}
    for n in ("output.weight", "token_embd.weight"):
        assert mine[n] == theirs[n]
    for suffix in V3_NAMES:
        assert mine[f"blk.21.{suffix}"] == theirs[f"blk.33.{suffix}"], suffix
    by_name = {"output.weight", "token_embd.weight"} | {n for n in mine if n.endswith(V3_NAMES)} | {
        n for n in mine if n.endswith("ffn_down_exps.weight")}
    assert all(mine[n] == base[n] for n in mine if n not in by_name)
    down = [mine[f"blk.{i}.ffn_down_exps.weight"] for i in range(v4.hparams.n_layer)]
    if rid == "DQ3_K_M":    # first two MoE blocks q6_K, every fourth of llama.cpp's middle range (5..36) q4_K
        assert [i for i, t in enumerate(down) if t == "q6_K"] == [0, 1]
        assert [i for i, t in enumerate(down) if t == "q4_K"] == list(range(8, 37, 4))
        assert down.count("q3_K") == 33
    elif rid == "UD-Q2_K_XL":
        assert [i for i, t in enumerate(down) if t == "q3_K"] == [0, 1, 2] and down.count("q2_K") == 40
    else:
        assert set(down) == {"q3_K"}


def test_deepseek4_full_scale_llama_quantize_dry_run(v4, tmp_path):
    lc = require_llama_cpp("llama-quantize")
    from planner.engines.llamacpp.crosscheck import dry_run_compare
    from planner.gguf.writer import write_sparse_gguf

    path = write_sparse_gguf(tmp_path / "v4-flash.gguf", v4)
    checks = dry_run_compare(lc, v4, path, list(RECIPES))
    bad = [f"{c.scheme}: exit {c.returncode} {c.error} {c.mismatches[:3]}" for c in checks if not c.ok]
    assert not bad, "\n".join(bad)
    sizes = {c.scheme: c.plan.size_bytes for c in checks}
    print("deepseek-v4-flash:", {k: f"{v / 2**30:.2f} GiB" for k, v in sizes.items()})
    assert sizes["UD-Q2_K_XL"] < sizes["Q2_K_L"] < sizes["DQ3_K_M"]


@pytest.mark.parametrize("rid", RECIPES)
def test_deepseek4_tiny_quantize_dry_run(tmp_path, rid):
    require_llama_cpp("llama-quantize")
    from tiny_models import tiny_deepseek4_hparams

    path = write_gguf(tmp_path / "tiny-deepseek4.gguf", model_from_hparams(tiny_deepseek4_hparams(), id="t4"))[0]
    r = dq("quantize", "--input", path, "--scheme", rid, "--dry-run", timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
