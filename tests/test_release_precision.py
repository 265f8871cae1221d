"""The release's own precision (profiles/accuracy/release.toml, each model profile's release_precision):
a scheme that keeps the precision a checkpoint was released in ranks before the schemes that round the
released weights again, whatever their bits per weight; the launch recipe converts as llama.cpp's
converter writes the release; MXFP4_MOE's predicted decode speed follows the bytes a token reads."""

from __future__ import annotations

import pytest

from planner.core.accuracy.recommend import native_schemes, release_rule
from planner.core.catalog import catalog
from planner.core.plan import PlanRequest
from planner.engines.registry import engine
from planner.make_plan import make_plan


def _plan(**kw):
    return make_plan(PlanRequest(**kw))


def test_v4_flash_on_two_h200_recommends_its_fp4_experts_as_released():
    """V4-Flash's routed experts are FP4 in the release: MXFP4_MOE keeps them; Q6_K (more bits per weight)
    holds them rounded again and ranks after it (the fault: Q6_K "for the most bits per weight")."""
    plan = _plan(model="deepseek-v4-flash", device="h200", gpus=2)
    rec = plan.recommendation
    assert rec is not None and rec.scheme == "MXFP4_MOE" and rec.basis == "unmeasured"
    pick = rec.ranked[0]
    assert pick.native and "FP4" in pick.native
    q6 = next(e for e in rec.ranked if e.scheme == "Q6_K")
    assert q6.bpw > pick.bpw and "not_native" in q6.why_not and not q6.native
    # every scheme that fits and keeps nothing as released ranks after it, by bits per weight
    rest = rec.ranked[1:]
    assert all(not e.native for e in rest)
    assert [e.bpw for e in rest] == sorted((e.bpw for e in rest), reverse=True)


@pytest.mark.parametrize("model,eng,native", [
    ("deepseek-v3.1", "vllm", "FP8"),            # an FP8 release, no measured scheme: its FP8 first
    ("deepseek-v2-lite", "vllm", "BF16"),         # a bf16 release
])
def test_one_rule_for_every_release(model, eng, native):
    plan = _plan(model=model, engine=eng, device="h200", gpus=8)
    rec = plan.recommendation
    assert rec is not None and rec.scheme == native and rec.ranked[0].native
    assert all("not_native" in e.why_not for e in rec.ranked[1:])


def test_without_a_native_scheme_the_most_bits_per_weight_lead():
    """R1's release is block FP8, which no GGUF type holds: on llama.cpp nothing is native and an
    unmeasured pick is still the one with the most bits per weight."""
    assert native_schemes("deepseek-r1", "llama.cpp") == {}
    assert set(native_schemes("deepseek-r1", "vllm")) == {"FP8"}
    assert native_schemes("no-such-model", "vllm") == {}


def test_release_precision_data_agrees_with_the_checkpoints():
    """Every catalog model names its release's precisions, each one in the rule; a profile whose config
    carries DeepSeek's quantization_config (quant_method fp8) has an FP8 release and the others none;
    every native scheme is a scheme its engine plans."""
    rule = release_rule()
    for mid, e in catalog().items():
        assert e.release_precision, mid
        assert all(p in rule for p in e.release_precision), mid
        qc = e.config.get("quantization_config")
        if qc is not None:
            assert (qc.get("quant_method") == "fp8") == ("fp8" in e.release_precision), mid
        elif "fp8" not in e.release_precision:
            assert e.config.get("torch_dtype") in ("bfloat16", None), mid
    for prec, row in rule.items():
        for eng, ids in row.items():
            if eng == "description":
                continue
            known = {s.upper() for m in catalog().values() for s in engine(eng).scheme_ids(m)}
            assert {x.upper() for x in ids} <= known, (prec, eng)


def test_launch_recipe_converts_the_release_as_llama_cpp_writes_it():
    """V4-Flash: llama.cpp's converter writes the release's own types whatever --outtype says, so the
    recipe converts without one and quantizes from that file; R1 keeps the bf16 conversion."""
    req = PlanRequest(model="deepseek-v4-flash", device="h200", gpus=2)
    lines = engine("llama.cpp").launch(make_plan(req), req, "MXFP4_MOE").lines
    convert = next(x for x in lines if "convert_hf_to_gguf.py" in x and "--outfile" in x)
    assert "--outtype" not in convert and "DeepSeek-V4-Flash-release.gguf" in convert
    assert any(x.startswith("dq-planner quantize --input DeepSeek-V4-Flash-release.gguf --scheme MXFP4_MOE")
               for x in lines)
    assert not any("BF16.gguf" in x or "--outtype bf16" in x for x in lines)
    req = PlanRequest(model="deepseek-r1", device="h200", gpus=8, schemes=["Q4_K_M"])
    lines = engine("llama.cpp").launch(make_plan(req), req, "Q4_K_M").lines
    assert any("--outtype bf16" in x for x in lines)
    assert any(x.startswith("dq-planner quantize --input DeepSeek-R1-BF16.gguf") for x in lines)


def test_mxfp4_moe_decode_follows_the_bytes_a_token_reads():
    """On 2 x H200, MXFP4_MOE (155 GB) against Q6_K (233 GB): a token reads 6 of 256 routed experts, where
    mxfp4 saves, and every non-expert tensor, which MXFP4_MOE keeps in q8_0 (8.5 bpw) against Q6_K's q6_K:
    the predicted decode time differs by exactly the bytes' difference at the families' decode rate (the
    per-layer cost is the same for both), so the small gain (117.7 vs 116.7 tok/s) is the bytes'."""
    from planner.core.llamacpp.speed import factors

    plan = _plan(model="deepseek-v4-flash", device="h200", gpus=2, schemes=["MXFP4_MOE", "Q6_K"])
    mx, q6 = plan.scheme("MXFP4_MOE").speed, plan.scheme("Q6_K").speed
    b_mx, b_q6 = sum(mx.decode_bytes.values()), sum(q6.decode_bytes.values())
    assert b_mx < b_q6 and mx.decode_tps > q6.decode_tps
    assert plan.scheme("MXFP4_MOE").size_bytes < 0.7 * plan.scheme("Q6_K").size_bytes
    fac = factors()
    assert fac.eff(fac.decode, "CUDA", "legacy") == fac.eff(fac.decode, "CUDA", "k")   # q8_0/mxfp4 vs q6_K
    from planner.core.devices.profiles import resolve_device

    rate = resolve_device("h200").bandwidth_gbs * 1e9 * fac.eff(fac.decode, "CUDA", "k")
    # the decode time differs by the bytes' difference at that rate: no other term differs
    dt = 1 / q6.decode_tps - 1 / mx.decode_tps
    assert dt == pytest.approx((b_q6 - b_mx) / rate, rel=0.02)
