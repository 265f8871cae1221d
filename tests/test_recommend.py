"""recommend() and recommend_across_models() on hand-built plans.

Memory per device is set directly (the paper's Table 1 figures at 32K for DeepSeek-R1, rough figures
elsewhere): these tests pin the ranking rules and the reasons, not the memory model.
"""

from __future__ import annotations

import pytest

from planner.core import accuracy as acc
from planner.core.plan import (DeviceMemory, HardwareSummary, MemoryPlan, ModelSummary, Plan, SchemePlan)
from planner.core.recommend import (TIE_POINTS, explain_no_fit, pareto_points, recommend,
                                     recommend_across_models)
from planner.errors import PlannerError

GB = 10**9
GiB = 1 << 30
H100 = 85520809984                      # profiles/hardware/h100.toml
A100 = 85899345920                      # 80 GiB, rounded for the test
NPU_910B = 64 * GiB

PARAMS = {"deepseek-r1": 671_026_419_200, "deepseek-v3": 671_026_419_200, "deepseek-v3-0324": 671_026_419_200,
          "deepseek-r1-distill-qwen-32b": 32_763_876_352, "deepseek-r1-distill-qwen-14b": 14_770_033_664,
          "deepseek-r1-distill-qwen-7b": 7_615_616_512}
# DeepSeek-R1 at 32K, the paper's Table 1: (file GB, memory per GPU GB)
R1_TABLE1 = {"Q4_K_M": (377, 71), "Q3_K_M": (298, 61), "DQ3_K_M": (281, 59), "Q2_K_L": (228, 52),
             "UD-Q2_K_XL": (212, 50)}


def sp(sid: str, size_gb: float, per_gpu_gb: float, n: int, cap: int, params: int, dev: str = "CUDA",
       acc_model: str | None = None) -> SchemePlan:
    devs = [DeviceMemory(device=f"{dev}{i}", weights_bytes=int(per_gpu_gb * GB), capacity_bytes=cap) for i in range(n)]
    # the last device carries the output layer: make it the fullest
    devs[-1].weights_bytes += GB // 2
    s = SchemePlan(id=sid, kind="ftype", size_bytes=int(size_gb * GB), params=params, type_bytes={}, tensors=[],
                   memory=MemoryPlan(kv_cache_bytes=0, compute_bytes=0, host_bytes=0, per_device=devs))
    if acc_model:
        s.accuracy = acc.accuracy_for(acc_model, sid)
    return s


def plan(model: str, schemes: list[SchemePlan], device: str, name: str, n: int, cap: int) -> Plan:
    return Plan(model=ModelSummary(id=model, name=model, architecture="deepseek2", params=PARAMS[model], layout="legacy",
                                   source="catalog"),
                engine="llama.cpp",
                hardware=HardwareSummary(device=device, gpus=n, nodes=1, memory_per_gpu_bytes=cap, source="profile",
                                         name=name),
                context=32768, kv_mode="legacy", schemes=schemes)


def r1_plan(device: str, name: str, cap: int, dev: str, model: str = "deepseek-r1") -> Plan:
    schemes = [sp(k, size, per, 8, cap, PARAMS[model], dev, model) for k, (size, per) in R1_TABLE1.items()]
    # unmeasured schemes of the same plan: must never outrank measured ones
    schemes += [sp("Q8_0", 713, 92, 8, cap, PARAMS[model], dev), sp("Q6_K", 551, 72, 8, cap, PARAMS[model], dev),
                sp("Q2_K", 245, 54, 8, cap, PARAMS[model], dev), sp("BF16", 1342, 170, 8, cap, PARAMS[model], dev)]
    return plan(model, schemes, device, name, 8, cap)


# ------------------------------------------------------------------------------------------ the paper's setup

def test_paper_setup_910b_picks_dq3_k_m_citing_table_2():
    p = r1_plan("910b", "Huawei Ascend 910B", NPU_910B, "910B ")
    r = recommend(p, "general")
    assert r.scheme == "DQ3_K_M"
    assert r.reasons[0] == ("DQ3_K_M: weighted 85.53 vs 85.82 FP8 (Official API) (-0.34%), "
                            "arXiv 2505.02390 Table 2 (README Table 2)")
    assert r.reasons[1] == ("DQ3_K_M fits: 55.4 GiB on the tightest device (910B 7) of 64.0 GiB, 8.6 GiB free "
                            "on 8x Huawei Ascend 910B")
    assert r.reasons[2].startswith("ranked by weighted score in one evaluation (arXiv 2505.02390")
    assert r.reasons[2].endswith("3 measured scheme(s) that fit: DQ3_K_M 85.53, UD-Q2_K_XL 85.02, Q3_K_M 84.28")
    # Q4_K_M lost on memory: 71 GB (+0.5 on the last device) = 66.6 GiB > 64 GiB
    assert ("Q4_K_M needs 66.6 GiB on the fullest device (910B 7) > 64.0 GiB capacity on 8x Huawei Ascend 910B "
            "(Q4_K_M: weighted 85.24 vs 85.82 FP8 (Official API) (-0.68%), arXiv 2505.02390 Table 2 (README Table 2))"
            ) in r.alternatives
    assert any(a.startswith("UD-Q2_K_XL: fits (17.0 GiB free) but 85.02 < 85.53") for a in r.alternatives)
    assert any(a.startswith("Q3_K_M: fits (6.7 GiB free) but 84.28 < 85.53") for a in r.alternatives)
    # Q2_K_L was measured on V3, not R1: for R1 it is unmeasured, like Q2_K
    assert "unmeasured (no published accuracy for deepseek-r1), fit: Q2_K, Q2_K_L" in r.alternatives
    assert "unmeasured, do not fit 8x Huawei Ascend 910B: Q8_0, Q6_K" in r.alternatives
    # BF16 has a figure (the R1 W4A16 card's baseline, AIME/MATH/GPQA only) but does not fit
    assert ("BF16 needs 158.8 GiB on the fullest device (910B 7) > 64.0 GiB capacity on 8x Huawei Ascend 910B "
            "(BF16: Table 8-weighted AIME 2024/MATH 500/GPQA 84.15 (the table's baseline), "
            "RedHatAI/DeepSeek-R1-quantized.w4a16 model card)") in r.alternatives


def test_paper_setup_h100_picks_dq3_k_m_over_q4_k_m():
    p = r1_plan("h100", "NVIDIA H100 SXM 80GB", H100, "CUDA")
    r = recommend(p)
    assert r.scheme in ("Q4_K_M", "DQ3_K_M")
    assert r.scheme == "DQ3_K_M"                 # 85.53 vs 85.24: more than TIE_POINTS apart
    assert r.reasons[0].startswith("DQ3_K_M: weighted 85.53 vs 85.82 FP8 (Official API) (-0.34%), arXiv 2505.02390 Table 2")
    assert r.reasons[2].endswith("4 measured scheme(s) that fit: DQ3_K_M 85.53, Q4_K_M 85.24, UD-Q2_K_XL 85.02, "
                                 "Q3_K_M 84.28")
    q4 = next(a for a in r.alternatives if a.startswith("Q4_K_M"))
    assert q4.startswith("Q4_K_M: fits (13.1 GiB free) but 85.24 < 85.53 (Q4_K_M: weighted 85.24 vs 85.82")
    # Q6_K fits on H100 but has no published figure: listed, never ranked
    assert "unmeasured (no published accuracy for deepseek-r1), fit: Q6_K, Q2_K, Q2_K_L" in r.alternatives


def test_r1_q4_k_m_attached_accuracy_is_the_papers_85_24():
    p = r1_plan("h100", "NVIDIA H100 SXM 80GB", H100, "CUDA")
    a = p.scheme("Q4_K_M").accuracy
    assert a.weighted_avg == 85.24 and a.drop_pct == 0.68 and "Table 2" in a.source
    assert p.scheme("Q6_K").accuracy is None


def test_tie_within_tenth_of_a_point_goes_to_headroom():
    """V3: Q4_K_M 75.79 vs DQ3_K_M 75.73 (0.06 apart) -> a tie, decided by headroom."""
    p = r1_plan("h100", "NVIDIA H100 SXM 80GB", H100, "CUDA", model="deepseek-v3")
    r = recommend(p)
    assert TIE_POINTS == 0.1
    assert r.scheme == "DQ3_K_M"
    assert r.reasons[0].startswith("DQ3_K_M: weighted 75.73 vs 75.45 FP8 (Tencent API) (+0.37%), arXiv 2505.02390 Table 3")
    assert ("Q4_K_M (75.79) is within 0.1 of DQ3_K_M (75.73): treated as a tie, decided by headroom "
            "(24.2 GiB vs 13.1 GiB) and size") in r.reasons
    assert any(a.startswith("Q4_K_M: within 0.1 of DQ3_K_M but less headroom (13.1 GiB vs 24.2 GiB)")
               for a in r.alternatives)
    # Q2_K_L is measured for V3 (68.73) and fits, but ranks last
    assert any(a.startswith("Q2_K_L: fits") and "68.73 < 75.73" in a for a in r.alternatives)


def test_task_reweighting_changes_the_score_used():
    p = r1_plan("h100", "NVIDIA H100 SXM 80GB", H100, "CUDA")
    dq3 = acc.measurement_for("deepseek-r1", "DQ3_K_M")
    q4 = acc.measurement_for("deepseek-r1", "Q4_K_M")
    # math: AIME 2024, MATH 500, GPQA at 4x Table 8 -> Q4_K_M 83.80 and DQ3_K_M 83.79 (0.02 apart: a tie,
    # decided by headroom), where the general weights put them 0.29 apart
    assert acc.task_score(q4, "math") == pytest.approx(779.359 / 9.3)
    assert acc.task_score(dq3, "math") == pytest.approx(779.203 / 9.3)
    r = recommend(p, "math")
    assert r.scheme == "DQ3_K_M"
    assert r.reasons[0] == ("DQ3_K_M: math score 83.79 vs 84.21 FP8 (Official API) (-0.51%), "
                            "arXiv 2505.02390 Table 2 (README Table 2)")
    assert r.reasons[2].startswith("ranked by math score in one evaluation")
    assert r.reasons[2].endswith("Q4_K_M 83.80, DQ3_K_M 83.79, UD-Q2_K_XL 83.48, Q3_K_M 82.13")
    assert "Q4_K_M (83.80) is within 0.1 of DQ3_K_M (83.79): treated as a tie" in r.reasons[3]
    # code: MBPP, MBPP+, LiveCodeBench at 4x -> UD-Q2_K_XL climbs above Q4_K_M
    rc = recommend(p, "code")
    assert rc.reasons[2].endswith("DQ3_K_M 82.29, UD-Q2_K_XL 81.73, Q4_K_M 81.56, Q3_K_M 80.79")
    with pytest.raises(PlannerError, match="unknown --task"):
        recommend(p, "vision")


# ------------------------------------------------------------------------------------------ distill and engines

def distill32_llama_plan(cap: int = A100, n: int = 1) -> Plan:
    m = "deepseek-r1-distill-qwen-32b"
    P = PARAMS[m]
    return plan(m, [sp("BF16", 65.5, 75.5, n, cap, P), sp("Q8_0", 34.8, 45, n, cap, P),
                    sp("Q4_K_M", 19.9, 30, n, cap, P), sp("Q3_K_M", 15.9, 26, n, cap, P),
                    sp("Q6_K", 26.9, 37, n, cap, P)], "a100", "NVIDIA A100 SXM 80GB", n, cap)


def test_distill_one_a100_q4_k_m_ties_bf16_and_wins_on_headroom():
    r = recommend(distill32_llama_plan())
    assert r.scheme == "Q4_K_M"
    assert r.reasons[0] == ("Q4_K_M: weighted 79.97 vs 79.94 BF16 (Local Evaluation) (+0.04%), "
                            "arXiv 2505.02390 Table 5 (README Table 4)")
    assert any(a.startswith("BF16: within 0.1 of Q4_K_M but less headroom") for a in r.alternatives)
    assert any(a.startswith("Q8_0: fits") and "79.71 < 79.97" in a for a in r.alternatives)


def test_vllm_formats_one_suite_compares_absolute_card_scores():
    m = "deepseek-r1-distill-qwen-32b"
    P = PARAMS[m]
    p = plan(m, [sp("BF16", 65.5, 75.5, 1, H100, P), sp("FP8-dynamic", 33, 43, 1, H100, P),
                 sp("W8A8", 33, 43, 1, H100, P), sp("W4A16", 19, 29, 1, H100, P), sp("AWQ", 19, 29, 1, H100, P)],
             "h100", "NVIDIA H100 SXM 80GB", 1, H100)
    r = recommend(p)
    # every fitting scheme is on the RedHatAI cards (BF16 also in the paper): the cards' suite is common.
    # AIME/MATH/GPQA with Table 8 weights: BF16 77.93, W8A8 77.92 (a tie), W4A16 77.64, FP8-dynamic 77.31
    assert r.scheme == "W8A8"
    assert "in one evaluation (RedHatAI (Neural Magic) model cards, reasoning)" in r.reasons[2]
    assert r.reasons[2].endswith("W8A8 77.92, BF16 77.93, W4A16 77.64, FP8-dynamic 77.31") or \
        r.reasons[2].endswith("BF16 77.93, W8A8 77.92, W4A16 77.64, FP8-dynamic 77.31")
    assert r.reasons[0].startswith("W8A8: Table 8-weighted AIME 2024/MATH 500/GPQA 77.92 vs 77.93 BF16 (-0.02%)")
    assert "unmeasured (no published accuracy for deepseek-r1-distill-qwen-32b), fit: AWQ" in r.alternatives
    # code: the cards have no code benchmark, only the paper's BF16 does
    rc = recommend(p, "code")
    assert rc.scheme == "BF16"
    assert ("W4A16: fits, but its only measurement (RedHatAI/DeepSeek-R1-Distill-Qwen-32B-* model cards) has no "
            "code benchmark") in rc.alternatives


def test_mixed_suites_compare_shares_of_each_baseline():
    P = PARAMS["deepseek-r1"]
    p = plan("deepseek-r1", [sp("FP8", 690, 95, 16, 141 * GB, P), sp("W4A16", 370, 55, 16, 141 * GB, P)],
             "h200", "NVIDIA H200", 16, 141 * GB)
    r = recommend(p)
    assert r.scheme == "FP8"
    assert "share of each table's own baseline" in r.reasons[2]
    assert r.reasons[2].endswith("FP8 100.00% of baseline, W4A16 98.93% of baseline")
    assert r.reasons[0] == "FP8: weighted 85.82 (the table's baseline), arXiv 2505.02390 Table 2 (README Table 2)"


def test_unmeasured_only_when_no_measured_scheme_fits():
    P = PARAMS["deepseek-r1"]
    cap = 49 * GB
    p = plan("deepseek-r1", [sp("UD-Q2_K_XL", 212, 50, 8, cap, P), sp("Q2_K", 200, 47, 8, cap, P),
                             sp("IQ1_S", 140, 30, 8, cap, P)], "l40s", "NVIDIA L40S", 8, cap)
    p.schemes[1].size_bytes, p.schemes[2].size_bytes = 200 * GB, 140 * GB
    r = recommend(p)
    assert r.scheme == "Q2_K"
    assert r.reasons[0] == ("no scheme with a published general score for deepseek-r1 fits 8x NVIDIA L40S: the "
                            "smallest, UD-Q2_K_XL needs 47.0 GiB on the fullest device (CUDA7) > 45.6 GiB capacity")
    assert r.reasons[1].startswith("Q2_K is UNMEASURED: recommended only as the fitting scheme with the most bits "
                                   "per weight (2.38 bpw)")
    assert r.alternatives[0] == "also fit, no published general score, fewer bits per weight: IQ1_S (1.67 bpw)"


def test_nothing_fits_is_none_with_an_explanation():
    p = r1_plan("rtx4090", "NVIDIA RTX 4090", 24 * GiB, "CUDA")
    assert recommend(p) is None
    why = explain_no_fit(p)
    assert why[0].startswith("no scheme fits 8x NVIDIA RTX 4090: UD-Q2_K_XL needs 47.0 GiB on the fullest device "
                             "(CUDA7) > 24.0 GiB capacity")
    p.schemes = [SchemePlan(id="Q4_K_M", kind="ftype", size_bytes=1, params=1, type_bytes={}, tensors=[])]
    assert recommend(p) is None
    assert explain_no_fit(p) == ["no memory was planned (no hardware), so no scheme can be recommended"]


def test_pareto_points_mark_the_front():
    p = r1_plan("910b", "Huawei Ascend 910B", NPU_910B, "910B ")
    pts = pareto_points(p)
    assert [(x.scheme, round(x.score, 2), x.fits, x.on_front) for x in pts] == [
        ("UD-Q2_K_XL", 85.02, True, True), ("DQ3_K_M", 85.53, True, True), ("Q3_K_M", 84.28, True, False),
        ("Q4_K_M", 85.24, False, False), ("BF16", 84.15, False, False)]
    assert pts[1].device_bytes == 59 * GB + GB // 2


# ------------------------------------------------------------------------------------------ --model auto

def small_plan(model: str, size_gb: float, per_gb: float, cap: int, name: str, n: int = 1) -> Plan:
    return plan(model, [sp("BF16", size_gb, per_gb, n, cap, PARAMS[model])], "a100", name, n, cap)


def test_auto_one_a100_picks_the_32b_distill_q4_k_m():
    a100 = "NVIDIA A100 SXM 80GB"
    plans = [
        plan("deepseek-r1", [sp(k, s, per * 8, 1, A100, PARAMS["deepseek-r1"]) for k, (s, per) in R1_TABLE1.items()],
             "a100", a100, 1, A100),
        distill32_llama_plan(),
        small_plan("deepseek-r1-distill-qwen-14b", 29.5, 36, A100, a100),
        small_plan("deepseek-r1-distill-qwen-7b", 15.2, 17, A100, a100),
    ]
    r = recommend_across_models(plans)
    assert (r.model, r.scheme) == ("deepseek-r1-distill-qwen-32b", "Q4_K_M")
    assert r.reasons[0] == ("deepseek-r1-distill-qwen-32b Q4_K_M: the highest weighted score among the models with a "
                            "measured scheme that fits 1x NVIDIA A100 SXM 80GB (arXiv 2505.02390 (Zhao et al., "
                            "China Unicom)): deepseek-r1-distill-qwen-32b Q4_K_M 79.97")
    assert r.reasons[1].startswith("Q4_K_M: weighted 79.97 vs 79.94 BF16 (Local Evaluation)")
    # the smaller distills are only on the cards: placed against the 32B's BF16 there
    assert r.alternatives[:2] == [
        "deepseek-r1-distill-qwen-14b BF16: on RedHatAI (Neural Magic) model cards, reasoning, "
        "deepseek-r1-distill-qwen-14b BF16 Table 8-weighted AIME 2024/MATH 500/GPQA 75.28 ranks below "
        "deepseek-r1-distill-qwen-32b BF16 Table 8-weighted AIME 2024/MATH 500/GPQA 77.93",
        "deepseek-r1-distill-qwen-7b BF16: on RedHatAI (Neural Magic) model cards, reasoning, "
        "deepseek-r1-distill-qwen-7b BF16 Table 8-weighted AIME 2024/MATH 500/GPQA 68.94 ranks below "
        "deepseek-r1-distill-qwen-32b BF16 Table 8-weighted AIME 2024/MATH 500/GPQA 77.93"]
    assert r.alternatives[2] == ("deepseek-r1: nothing fits; the smallest, UD-Q2_K_XL needs 373.0 GiB on the "
                                 "fullest device (CUDA0) > 80.0 GiB capacity")
    assert r.to_dict()["model"] == "deepseek-r1-distill-qwen-32b"


def test_auto_eight_910b_picks_r1_dq3_k_m():
    name = "Huawei Ascend 910B"
    plans = [r1_plan("910b", name, NPU_910B, "910B ", m) for m in ("deepseek-r1", "deepseek-v3", "deepseek-v3-0324")]
    plans.append(distill32_llama_plan(NPU_910B, 8))
    plans[-1].hardware = plans[0].hardware
    r = recommend_across_models(plans)
    assert (r.model, r.scheme) == ("deepseek-r1", "DQ3_K_M")
    assert r.reasons[0] == ("deepseek-r1 DQ3_K_M: the highest weighted score among the models with a measured "
                            "scheme that fits 8x Huawei Ascend 910B (arXiv 2505.02390 (Zhao et al., China Unicom)): "
                            "deepseek-r1 DQ3_K_M 85.53 vs deepseek-v3-0324 DQ3_K_M 80.50, "
                            "deepseek-r1-distill-qwen-32b Q4_K_M 79.97, deepseek-v3 DQ3_K_M 75.73")
    assert r.reasons[1].startswith("DQ3_K_M: weighted 85.53 vs 85.82 FP8 (Official API) (-0.34%), arXiv 2505.02390 Table 2")
    assert r.alternatives == [
        "deepseek-v3-0324 DQ3_K_M: deepseek-v3-0324 DQ3_K_M weighted 80.50 ranks below deepseek-r1 "
        "(arXiv 2505.02390 (Zhao et al., China Unicom))",
        "deepseek-r1-distill-qwen-32b Q4_K_M: deepseek-r1-distill-qwen-32b Q4_K_M weighted 79.97 ranks below "
        "deepseek-r1 (arXiv 2505.02390 (Zhao et al., China Unicom))",
        "deepseek-v3 DQ3_K_M: deepseek-v3 DQ3_K_M weighted 75.73 ranks below deepseek-r1 "
        "(arXiv 2505.02390 (Zhao et al., China Unicom))"]


def test_auto_nothing_fits_anywhere_is_none():
    p = r1_plan("rtx4090", "NVIDIA RTX 4090", 24 * GiB, "CUDA")
    assert recommend_across_models([p]) is None


# ------------------------------------------------------------------------------------------ on real plans

def _real(model: str, device: str, **kw) -> Plan:
    from planner.core.plan import PlanRequest
    from planner.planning import make_plan

    return make_plan(PlanRequest(model=model, device=device, **kw))


PAPER_SCHEMES = ["Q4_K_M", "Q3_K_M", "DQ3_K_M", "Q2_K_L", "UD-Q2_K_XL"]


def test_real_plans_paper_setup_910b_and_h100():
    """make_plan's memory model in the paper's setup (legacy KV cache, 32K): 910B -> DQ3_K_M, H100 -> DQ3_K_M."""
    p = _real("deepseek-r1", "910b", kv_mode="legacy", schemes=PAPER_SCHEMES)
    r = recommend(p)
    assert r.scheme == "DQ3_K_M"
    assert r.reasons[0].startswith("DQ3_K_M: weighted 85.53 vs 85.82 FP8 (Official API) (-0.34%), arXiv 2505.02390 Table 2")
    assert any(a.startswith("Q4_K_M needs ") and "> 64.0 GiB capacity" in a and "weighted 85.24" in a
               for a in r.alternatives)
    h = recommend(_real("deepseek-r1", "h100", kv_mode="legacy", schemes=PAPER_SCHEMES))
    assert h.scheme in ("Q4_K_M", "DQ3_K_M")
    assert "Q4_K_M 85.24" in h.reasons[2]             # Q4_K_M fits on H100 and was ranked


def test_real_plans_auto_one_a100():
    plans = [_real(m, "a100", gpus=1) for m in ("deepseek-r1", "deepseek-r1-distill-qwen-32b",
                                                "deepseek-r1-distill-qwen-14b")]
    r = recommend_across_models(plans)
    assert (r.model, r.scheme) == ("deepseek-r1-distill-qwen-32b", "Q4_K_M")
