"""Predicted tensor types and bytes against the real llama-quantize, tensor by tensor.

For every architecture (deepseek2 in the MLA and legacy layouts, qwen2 untied and tied, llama) and every
standard scheme plus the recipes (on deepseek2), llama-quantize --dry-run prints the type and size it
would give each tensor; the plan must give the same type, and bytes that print as llama.cpp's size.
Dry runs read only the header, so the larger variants (16 and 80 blocks, 8 experts, the full-scale
DeepSeek-R1) are sparse files: the real header, no data. Real runs then check the written files: every
tensor's type in the header and its bytes in the data region equal the plan's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llamacpp_support import make_imatrix, require_llama_cpp
from planner.core.llamacpp.schemes import resolve_scheme, standard_ids
from planner.core.llamacpp.sizing import size_scheme
from planner.engines.llamacpp.crosscheck import dry_run_compare, schemes_for
from planner.engines.llamacpp.quantize import compare_log, read_file_table, run_quantize, verify_file
from planner.gguf.writer import model_from_hparams, write_sparse_gguf
from tiny_models import TINY_KINDS, tiny_deepseek2_hparams, tiny_llama_hparams, tiny_model, tiny_qwen2_hparams

RECIPES = ("DQ3_K_M", "Q2_K_L", "UD-Q2_K_XL")


@pytest.fixture(scope="module")
def lc():
    return require_llama_cpp("llama-quantize", "llama-imatrix")


def scheme_ids(arch: str) -> list[str]:
    ids = schemes_for(arch)
    assert set(standard_ids()) <= set(ids)
    if arch == "deepseek2":
        assert set(RECIPES) <= set(ids)
    return ids


def dry_run_check(lc, model, path: Path, ids: list[str], imatrix: Path | None = None) -> dict[str, int]:
    """Dry-run every scheme (two at a time); returns tensors compared per scheme; fails on any difference."""
    problems = []
    counts = {}
    for c in dry_run_compare(lc, model, path, ids, imatrix=imatrix):
        if c.refused:       # the planner refuses the scheme (no fallback for a row length): so must llama.cpp
            if not c.ok:
                problems.append(f"{c.scheme}: planned as refused ({c.refused}); llama-quantize exit "
                                f"{c.returncode}: {c.error}")
            counts[c.scheme] = 0
            continue
        if c.returncode != 0:
            problems.append(f"{c.scheme}: llama-quantize exit {c.returncode}: {c.error}")
            continue
        assert len(c.log.tensors) == c.tensors == len(model.tensors), c.scheme
        # llama.cpp's total, printed in MiB, is the plan's total
        assert f"{c.plan.size_bytes / 2**20:.2f}" == f"{c.log.quant_mib:.2f}", c.scheme
        problems += [f"{c.scheme}: {m}" for m in c.mismatches]
        counts[c.scheme] = c.tensors
    assert not problems, "\n".join(problems[:40])
    return counts


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_every_scheme_dry_run(lc, tiny_gguf, kind):
    model = tiny_model(kind)
    counts = dry_run_check(lc, model, tiny_gguf(kind), scheme_ids(model.hparams.arch))
    assert len(counts) == len(scheme_ids(model.hparams.arch))


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_every_scheme_dry_run_with_imatrix(lc, tiny_gguf, tmp_path, kind):
    """With an importance matrix the rules differ (IQ3_XXS attn_v, IQ4 and Q4_0/Q5_0 ffn_down)."""
    model = tiny_model(kind)
    imatrix = make_imatrix(lc, tiny_gguf(kind), tmp_path / "imatrix.gguf")
    dry_run_check(lc, model, tiny_gguf(kind), scheme_ids(model.hparams.arch), imatrix=imatrix)


# Variants whose layer counts exercise the per-layer rules (n_layer/8, n_layer/16, use_more_bits, the
# MoE layer taken from the name), the 8-expert rules and llama's 70B rule (80 blocks).
VARIANTS = {
    "deepseek2-mla-16": (lambda: tiny_deepseek2_hparams(n_layer=16, n_layer_dense_lead=3), "mla"),
    "deepseek2-legacy-16": (lambda: tiny_deepseek2_hparams(n_layer=16, n_layer_dense_lead=3), "legacy"),
    "deepseek2-8-experts": (lambda: tiny_deepseek2_hparams(n_layer=9, n_expert=8), "mla"),
    "qwen2-16": (lambda: tiny_qwen2_hparams(n_layer=16), None),
    "llama-16": (lambda: tiny_llama_hparams(n_layer=16), None),
    "llama-80": (lambda: tiny_llama_hparams(n_layer=80), None),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_scheme_dry_run_deeper_models(lc, tmp_path, variant):
    hp_fn, layout = VARIANTS[variant]
    model = model_from_hparams(hp_fn(), layout)
    if variant == "llama-80":
        assert model.hparams.llm_type() == "70B"
    path = write_sparse_gguf(tmp_path / f"{variant}.gguf", model)
    dry_run_check(lc, model, path, scheme_ids(model.hparams.arch))


# At full scale, the schemes whose rules depend on layer counts, expert counts or the imatrix; every
# scheme on every catalog model: python -m planner.engines.llamacpp.crosscheck (about 2 minutes).
FULL_SCALE = {
    "mla": ["Q4_K_M", "Q3_K_M", "Q2_K_S", "IQ3_XS", "IQ2_M", "IQ1_S", *RECIPES],
    "legacy": ["Q4_K_M", "Q3_K_M", *RECIPES],
}


@pytest.mark.parametrize("layout", ["mla", "legacy"])
def test_dry_run_full_scale_deepseek_r1(lc, tmp_path, layout):
    """DeepSeek-R1 itself (61 blocks, 256 experts, real shapes) as a sparse file of the full size."""
    from planner.core.catalog import catalog
    from planner.core.llamacpp.sizing import resolve_catalog_model

    model = resolve_catalog_model(catalog()["deepseek-r1"], layout)
    path = write_sparse_gguf(tmp_path / f"r1-{layout}.gguf", model)
    counts = dry_run_check(lc, model, path, FULL_SCALE[layout])
    assert set(counts.values()) == {len(model.tensors)} and len(model.tensors) > 1000


# Real runs: the written file, tensor by tensor. IQ types are slow to quantize and covered by the dry
# runs; Q2_K_S needs an importance matrix like they do, so its run goes through the --imatrix path.
REAL = {
    "deepseek2-mla": ["Q4_K_M", "Q3_K_M", "Q2_K", "Q6_K", "Q8_0", "Q4_0", *RECIPES],
    "deepseek2-legacy": ["Q4_K_M", "Q5_K_S", "Q3_K_L", *RECIPES],
    "qwen2": ["Q4_K_M", "Q5_K_M", "Q3_K_S", "Q2_K_S", "Q5_1"],
    "qwen2-tied": ["Q4_K_M", "Q6_K", "Q4_1"],
    "llama": ["Q4_K_M", "Q4_K_S", "Q5_0"],
}


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_real_quantization_matches_plan(lc, tiny_gguf, tmp_path, kind):
    model = tiny_model(kind)
    src = tiny_gguf(kind)
    imatrix = None
    for sid in REAL[kind]:
        s = resolve_scheme(sid)
        plan = size_scheme(model, s, imatrix=False)
        if plan.requires_imatrix:
            imatrix = imatrix or make_imatrix(lc, src, tmp_path / "imatrix.gguf")
            plan = size_scheme(model, s, imatrix=True)
        out = tmp_path / f"{sid}.gguf"
        res = run_quantize(lc, src, out, s, plan, imatrix=imatrix if plan.requires_imatrix else None, threads=2)
        assert not res.log.dry_run and len(res.log.tensors) == len(model.tensors)
        assert compare_log(plan, res.log) == [], sid
        table = read_file_table(out)
        assert verify_file(plan, table) == [], sid
        # the file is exactly the header and the planned tensors, each padded to the alignment
        pad = table.alignment
        assert table.file_size == table.data_start + sum(-(-t.bytes // pad) * pad for t in plan.tensors), sid
        out.unlink()
    if kind == "qwen2":
        assert imatrix is not None      # Q2_K_S's q2_K tensors need one: the run above used it
