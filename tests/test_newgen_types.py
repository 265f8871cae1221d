"""llama-quantize's newest ftypes (MXFP4_MOE, Q1_0, Q2_0, TQ1_0, TQ2_0) against the real llama-quantize.

Dry runs on the tiny models of every architecture, real runs whose written files are checked tensor by
tensor, and the case llama-quantize refuses: Q1_0's 128-element blocks have no fallback, so a model with a
row length that is not a multiple of 128 stops llama-quantize, and the planner refuses it the same way.
"""

from __future__ import annotations

from collections import Counter

import pytest

from llamacpp_support import require_llama_cpp
from planner.core.ggml.tensor_types import block_size, row_bytes
from planner.core.ggml.gguf_constants import GGMLQuantizationType as T
from planner.core.llamacpp.type_rules import QuantizeRefused
from planner.core.llamacpp.schemes import resolve_scheme, standard_ids
from planner.core.llamacpp.sizing import size_scheme
from planner.engines.llamacpp.crosscheck import dry_run_compare
from planner.engines.llamacpp.quantize import compare_log, read_file_table, run_quantize, verify_file
from planner.gguf.writer import model_from_hparams, write_gguf
from tiny_models import TINY_KINDS, tiny_deepseek2_hparams, tiny_model

NEW = ["MXFP4_MOE", "Q1_0", "Q2_0", "TQ1_0", "TQ2_0"]


@pytest.fixture(scope="module")
def lc():
    return require_llama_cpp("llama-quantize")


def rows128():
    """The tiny deepseek2 with every row a multiple of 128 (q_lora 128, n_ff 384): Q1_0 applies."""
    return model_from_hparams(tiny_deepseek2_hparams(n_lora_q=128, n_ff=384), "mla", id="tiny-rows128")


def test_new_ftypes_are_standard_schemes():
    assert set(NEW) <= set(standard_ids())
    # Q2_0 is a ggml type the gguf package lacks: its 64-element blocks come from ggml's type traits
    assert block_size(T.Q2_0) == 64 and row_bytes(T.Q2_0, 128) == 2 * row_bytes(T.Q2_0, 64)


def test_q1_0_refused_where_a_row_is_not_whole_blocks():
    model = tiny_model("deepseek2-mla")          # n_ff 320: the dense ffn_down rows are 320 long
    with pytest.raises(QuantizeRefused) as e:
        size_scheme(model, resolve_scheme("Q1_0"))
    assert e.value.ncols % 128 != 0 and e.value.type == T.Q1_0
    sp = size_scheme(rows128(), resolve_scheme("Q1_0"))
    assert {t.type for t in sp.tensors if t.name.endswith("exps.weight")} == {"q1_0"}


def test_mxfp4_moe_rule():
    """MoE (3-D) tensors MXFP4, every other quantized tensor Q8_0, norms and the router f32."""
    sp = size_scheme(rows128(), resolve_scheme("MXFP4_MOE"))
    by = {t.name: t.type for t in sp.tensors}
    three_d = {t.name for t in sp.tensors if len(t.shape) == 3}
    assert three_d and {by[n] for n in three_d} == {"mxfp4"}
    assert any(n.endswith("attn_k_b.weight") for n in three_d)   # MLA's 3-D projections count as MoE too
    assert by["output.weight"] == "q8_0" and by["blk.1.ffn_gate_inp.weight"] == "f32"
    assert {ty for n, ty in by.items() if n not in three_d and ty not in ("f32",)} == {"q8_0"}


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_new_ftypes_dry_run(lc, tiny_gguf, kind):
    model = tiny_model(kind)
    checks = dry_run_compare(lc, model, tiny_gguf(kind), NEW)
    bad = [f"{c.scheme}: exit {c.returncode} {c.error} {c.refused} {c.mismatches[:3]}" for c in checks if not c.ok]
    assert not bad, "\n".join(bad)
    refused = {c.scheme for c in checks if c.refused}
    # llama-quantize stops on Q1_0 wherever a row is not whole 128-blocks, and the plan said it would
    has_odd_rows = any(t.shape[0] % 128 for t in model.tensors if len(t.shape) > 1 and t.name.endswith("weight"))
    assert refused == ({"Q1_0"} if has_odd_rows else set())


def test_new_ftypes_real_runs(lc, tmp_path):
    """Real files: each tensor's type and bytes in the header and data region are the plan's."""
    model = rows128()
    src = write_gguf(tmp_path / "src.gguf", model)[0]
    seen = Counter()
    for sid in NEW:
        s = resolve_scheme(sid)
        plan = size_scheme(model, s)
        out = tmp_path / f"{sid}.gguf"
        res = run_quantize(lc, src, out, s, plan, threads=2)
        assert compare_log(plan, res.log) == [], sid
        table = read_file_table(out)         # Q2_0 is type id 42, which the gguf package does not know
        assert verify_file(plan, table) == [], sid
        pad = table.alignment
        assert table.file_size == table.data_start + sum(-(-t.bytes // pad) * pad for t in plan.tensors)
        seen.update(t.type for t in plan.tensors)
        out.unlink()
    assert {"mxfp4", "q1_0", "q2_0", "tq1_0", "tq2_0"} <= set(seen)
