"""recommend() and recommend_across_models() on hand-built plans: ranks, figures, tie groups and why-not
codes (the sentences are planner.render.recommendation's, tested in test_render_recommendation.py).

Memory per device is set directly (the paper's Table 1 figures at 32K for DeepSeek-R1, rough figures
elsewhere): these tests pin the ranking rules, not the memory model.
"""

from __future__ import annotations

import pytest

from planner.core.accuracy import tables as acc
from planner.core.plan import (DeviceMemory, HardwareSummary, MemoryPlan, ModelSummary, Plan, Recommendation,
                               SchemePlan)
from planner.core.accuracy.recommend import (derive_tie_points, no_fit, no_fit_entries, pareto_points, recommend,
                                    recommend_across_models, tie_groups, tie_points, tie_rule, tied)
from planner.errors import PlannerError
from planner.render.recommendation import no_fit_note

from accuracy_figures import printed, weighted

D32 = "deepseek-r1-distill-qwen-32b"
R1_CARD = "card-r1-reasoning"                      # the RedHatAI R1 card's reasoning table
D32_CARD = "card-r1-distill-qwen-32b-reasoning"
GB = 10**9
GiB = 1 << 30


def W(scheme: str, model: str = "deepseek-r1") -> float:
    """The printed (weighted average) score of a scheme, from profiles/accuracy."""
    return printed(model, scheme)


def T(scheme: str, task: str = "general", model: str = "deepseek-r1", table: str | None = None) -> float:
    """The task-weighted score of a scheme from the files' per-benchmark values, to 2 places."""
    return round(weighted(model, scheme, task, table), 2)
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
    # the last device carries the output layer: make it the tightest
    devs[-1].weights_bytes += GB // 2
    s = SchemePlan(id=sid, kind="ftype", size_bytes=int(size_gb * GB), params=params, type_bytes={}, tensors=[],
                   memory=MemoryPlan(kv_cache_bytes=0, compute_bytes=0, host_bytes=0, per_device=devs))
    if acc_model:
        s.accuracy = acc.accuracy_for(acc_model, sid)
    return s


def on_last(per_gpu_gb: float) -> int:
    """Bytes on the tightest (last) device of sp()."""
    return int(per_gpu_gb * GB) + GB // 2


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


def ranking(r: Recommendation) -> list[tuple]:
    """(scheme, rank, tie group, score to 2 places, why_not) of the ranked schemes, in order."""
    return [(e.scheme, e.rank, e.tie_group, None if e.score is None else round(e.score, 2), e.why_not)
            for e in r.ranked]


def excluded(r: Recommendation) -> dict[str, list[str]]:
    return {e.scheme: e.why_not for e in r.excluded}


# ------------------------------------------------------------------------------------------ the tie rule

def test_tie_figure_is_the_papers_sampling_noise():
    """ties.toml's figure is one standard error of the difference of two weighted averages, recomputed
    here from the paper's printed ± std and its samples per question."""
    assert tie_points() == round(derive_tie_points(), 2)
    assert 0.1 < tie_points() < 0.5
    assert "2505.02390" in tie_rule()["source"]


def test_tie_groups_start_at_the_best_score_left():
    t = tie_points()
    assert tie_groups([85.53, 85.24, 85.02, 84.28]) == [1, 2, 3, 4]
    assert tie_groups([75.73, 75.79, 68.73]) == [1, 1, 2]
    # a chain is not one group: each group is measured from its own best
    assert tie_groups([80.0, 80.0 - t, 80.0 - 2 * t]) == [1, 1, 2]
    assert tied(80.0, 80.0 - t) and not tied(80.0, 80.0 - t - 0.01)
    assert tie_groups([]) == []


# ------------------------------------------------------------------------------------------ the paper's setup

def test_paper_setup_910b_picks_dq3_k_m_citing_table_2():
    p = r1_plan("910b", "Huawei Ascend 910B", NPU_910B, "910B ")
    r = recommend(p, "general")
    assert (r.scheme, r.basis, r.suite, r.task) == ("DQ3_K_M", "suite", "paper", "general")
    assert r.tie_points == tie_points()
    assert ranking(r) == [("DQ3_K_M", 1, 1, W("DQ3_K_M"), []), ("UD-Q2_K_XL", 2, 2, W("UD-Q2_K_XL"), ["lower_score"]),
                          ("Q3_K_M", 3, 3, W("Q3_K_M"), ["lower_score"])]
    win = r.pick
    assert (win.baseline, win.baseline_score, win.role) == ("FP8 (Official API)", W("FP8"), "quantized")
    assert win.source == "arXiv 2505.02390 Table 2 (README Table 2)" and win.full_task
    assert (win.device, win.device_total_bytes, win.device_capacity_bytes) == ("910B 7", on_last(59), NPU_910B)
    assert win.headroom_bytes == NPU_910B - on_last(59)
    assert r.entry("UD-Q2_K_XL").headroom_bytes == NPU_910B - on_last(50)
    assert (r.hardware, r.devices) == ("Huawei Ascend 910B", 8)
    # Q4_K_M lost on memory: 71 GB (+0.5 on the last device) = 66.6 GiB > 64 GiB; Q2_K_L was measured on
    # V3, not R1: for R1 it is unmeasured, like Q2_K; BF16 has a figure (the R1 W4A16 card's baseline,
    # AIME/MATH/GPQA only) but does not fit
    assert excluded(r) == {"BF16": ["does_not_fit"], "Q4_K_M": ["does_not_fit"], "Q2_K": ["unmeasured"],
                           "Q2_K_L": ["unmeasured"], "Q8_0": ["unmeasured", "does_not_fit"],
                           "Q6_K": ["unmeasured", "does_not_fit"]}
    q4 = r.entry("Q4_K_M")
    assert (q4.score, q4.device, q4.device_total_bytes, q4.headroom_bytes) == (W("Q4_K_M"), "910B 7", on_last(71),
                                                                               NPU_910B - on_last(71))
    bf16 = r.entry("BF16")
    assert (round(bf16.score, 2), bf16.role, bf16.benchmarks, bf16.full_task, bf16.suite) == (
        T("BF16", table=R1_CARD), "baseline", ["aime2024", "math500", "gpqa"], False, "redhat-reasoning")


def test_paper_setup_h100_picks_dq3_k_m_over_q4_k_m():
    p = r1_plan("h100", "NVIDIA H100 SXM 80GB", H100, "CUDA")
    r = recommend(p)
    # 85.53 vs 85.24: more than tie_points apart, so DQ3_K_M wins on its score
    assert not tied(W("DQ3_K_M"), W("Q4_K_M"))
    assert ranking(r) == [("DQ3_K_M", 1, 1, W("DQ3_K_M"), []), ("Q4_K_M", 2, 2, W("Q4_K_M"), ["lower_score"]),
                          ("UD-Q2_K_XL", 3, 3, W("UD-Q2_K_XL"), ["lower_score"]),
                          ("Q3_K_M", 4, 4, W("Q3_K_M"), ["lower_score"])]
    assert r.entry("Q4_K_M").headroom_bytes == H100 - on_last(71)            # 13.1 GiB
    # Q6_K fits on H100 but has no published figure: listed, never ranked
    assert excluded(r) == {"BF16": ["does_not_fit"], "Q6_K": ["unmeasured"], "Q2_K": ["unmeasured"],
                           "Q2_K_L": ["unmeasured"], "Q8_0": ["unmeasured", "does_not_fit"]}


def test_r1_q4_k_m_attached_accuracy_is_the_papers_85_24():
    p = r1_plan("h100", "NVIDIA H100 SXM 80GB", H100, "CUDA")
    a = p.scheme("Q4_K_M").accuracy
    assert a.weighted_avg == W("Q4_K_M") and a.drop_pct == printed("deepseek-r1", "Q4_K_M", "accuracy_drop")
    assert "Table 2" in a.source
    assert p.scheme("Q6_K").accuracy is None


def test_tie_goes_to_headroom():
    """V3: Q4_K_M 75.79 vs DQ3_K_M 75.73 (0.06 apart) -> one tie group, decided by headroom."""
    p = r1_plan("h100", "NVIDIA H100 SXM 80GB", H100, "CUDA", model="deepseek-v3")
    r = recommend(p)
    v3 = "deepseek-v3"
    assert tied(W("DQ3_K_M", v3), W("Q4_K_M", v3))
    assert ranking(r)[:2] == [("DQ3_K_M", 1, 1, W("DQ3_K_M", v3), []),
                              ("Q4_K_M", 2, 1, W("Q4_K_M", v3), ["tied_less_headroom"])]
    assert (r.pick.baseline, r.pick.baseline_score) == ("FP8 (Tencent API)", W("FP8", v3))
    assert (r.pick.headroom_bytes, r.entry("Q4_K_M").headroom_bytes) == (H100 - on_last(59), H100 - on_last(71))
    # Q2_K_L is measured for V3 (68.73) and fits, but ranks last
    assert ranking(r)[-1] == ("Q2_K_L", 4, 3, W("Q2_K_L", v3), ["lower_score"])
    assert ranking(r)[2] == ("Q3_K_M", 3, 2, W("Q3_K_M", v3), ["lower_score"])


def test_task_reweighting_changes_the_score_used():
    p = r1_plan("h100", "NVIDIA H100 SXM 80GB", H100, "CUDA")
    dq3 = acc.measurement_for("deepseek-r1", "DQ3_K_M")
    q4 = acc.measurement_for("deepseek-r1", "Q4_K_M")
    # math: AIME 2024, MATH 500, GPQA at 4x Table 8 -> Q4_K_M 83.80 and DQ3_K_M 83.79 (a tie, decided by
    # headroom), where the general weights put them 0.29 apart
    assert acc.task_score(q4, "math") == pytest.approx(weighted("deepseek-r1", "Q4_K_M", "math"))
    assert acc.task_score(dq3, "math") == pytest.approx(weighted("deepseek-r1", "DQ3_K_M", "math"))
    r = recommend(p, "math")
    assert (r.task, r.basis) == ("math", "suite")
    assert ranking(r) == [("DQ3_K_M", 1, 1, T("DQ3_K_M", "math"), []),
                          ("Q4_K_M", 2, 1, T("Q4_K_M", "math"), ["tied_less_headroom"]),
                          ("UD-Q2_K_XL", 3, 2, T("UD-Q2_K_XL", "math"), ["lower_score"]),
                          ("Q3_K_M", 4, 3, T("Q3_K_M", "math"), ["lower_score"])]
    assert round(r.pick.baseline_score, 2) == T("FP8", "math") and r.pick.full_task
    # code: MBPP, MBPP+, LiveCodeBench at 4x -> UD-Q2_K_XL (81.73) ties Q4_K_M (81.56) and has more headroom
    rc = recommend(p, "code")
    assert ranking(rc) == [("DQ3_K_M", 1, 1, T("DQ3_K_M", "code"), []),
                           ("UD-Q2_K_XL", 2, 2, T("UD-Q2_K_XL", "code"), ["lower_score"]),
                           ("Q4_K_M", 3, 2, T("Q4_K_M", "code"), ["lower_score"]),
                           ("Q3_K_M", 4, 3, T("Q3_K_M", "code"), ["lower_score"])]
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
    assert ranking(r) == [("Q4_K_M", 1, 1, W("Q4_K_M", D32), []), ("BF16", 2, 1, W("BF16", D32), ["tied_less_headroom"]),
                          ("Q8_0", 3, 2, W("Q8_0", D32), ["lower_score"]), ("Q3_K_M", 4, 3, W("Q3_K_M", D32), ["lower_score"])]
    assert (r.pick.baseline, r.pick.baseline_score) == ("BF16 (Local Evaluation)", W("BF16", D32))
    assert r.pick.source == "arXiv 2505.02390 Table 5 (README Table 4)"
    assert excluded(r) == {"Q6_K": ["unmeasured"]}


def test_vllm_formats_one_suite_compares_absolute_card_scores():
    m = "deepseek-r1-distill-qwen-32b"
    P = PARAMS[m]
    p = plan(m, [sp("BF16", 65.5, 75.5, 1, H100, P), sp("FP8-dynamic", 33, 43, 1, H100, P),
                 sp("W8A8", 33, 43, 1, H100, P), sp("W4A16", 19, 29, 1, H100, P), sp("AWQ", 19, 29, 1, H100, P)],
             "h100", "NVIDIA H100 SXM 80GB", 1, H100)
    r = recommend(p)
    # every fitting scheme is on the RedHatAI cards (BF16 also in the paper): the cards' suite is common.
    # AIME/MATH/GPQA with Table 8 weights: BF16 77.93, W8A8 77.92 (a tie, W8A8 has more headroom),
    # W4A16 77.64, FP8-dynamic 77.31
    assert (r.basis, r.suite) == ("suite", "redhat-reasoning")
    card = {s: T(s, model=D32, table=D32_CARD) for s in ("W8A8", "BF16", "W4A16", "FP8-dynamic")}
    assert ranking(r) == [("W8A8", 1, 1, card["W8A8"], []), ("BF16", 2, 1, card["BF16"], ["tied_less_headroom"]),
                          ("W4A16", 3, 2, card["W4A16"], ["lower_score"]),
                          ("FP8-dynamic", 4, 3, card["FP8-dynamic"], ["lower_score"])]
    assert r.pick.benchmarks == ["aime2024", "math500", "gpqa"] and not r.pick.full_task
    assert round(r.pick.baseline_score, 2) == card["BF16"]
    assert excluded(r) == {"AWQ": ["unmeasured"]}
    # code: the cards have no code benchmark, only the paper's BF16 does
    rc = recommend(p, "code")
    assert [(e.scheme, e.suite) for e in rc.ranked] == [("BF16", "paper")]
    assert excluded(rc) == {"FP8-dynamic": ["no_task_benchmark"], "W8A8": ["no_task_benchmark"],
                            "W4A16": ["no_task_benchmark"], "AWQ": ["unmeasured"]}
    assert rc.entry("W4A16").source == "RedHatAI/DeepSeek-R1-Distill-Qwen-32B-* model cards"


def test_mixed_suites_compare_shares_of_each_baseline():
    P = PARAMS["deepseek-r1"]
    p = plan("deepseek-r1", [sp("FP8", 690, 95, 16, 141 * GB, P), sp("W4A16", 370, 55, 16, 141 * GB, P)],
             "h200", "NVIDIA H200", 16, 141 * GB)
    r = recommend(p)
    assert (r.scheme, r.basis, r.suite) == ("FP8", "share", None)
    assert [(e.scheme, round(e.share_pct, 2), e.suite, e.tie_group) for e in r.ranked] == [
        ("FP8", 100.0, "paper", 1),
        ("W4A16", round(100 * weighted("deepseek-r1", "W4A16", table=R1_CARD) / weighted("deepseek-r1", "BF16", table=R1_CARD), 2),
         "redhat-reasoning", 2)]
    assert (r.pick.role, r.pick.score) == ("baseline", W("FP8"))


def test_unmeasured_only_when_no_measured_scheme_fits():
    P = PARAMS["deepseek-r1"]
    cap = 49 * GB
    p = plan("deepseek-r1", [sp("UD-Q2_K_XL", 212, 50, 8, cap, P), sp("Q2_K", 200, 47, 8, cap, P),
                             sp("IQ1_S", 140, 30, 8, cap, P)], "l40s", "NVIDIA L40S", 8, cap)
    r = recommend(p)
    assert (r.scheme, r.basis) == ("Q2_K", "unmeasured")
    assert [(e.scheme, e.rank, round(e.bpw, 2), e.why_not) for e in r.ranked] == [
        ("Q2_K", 1, 2.38, []), ("IQ1_S", 2, 1.67, ["fewer_bits", "unmeasured"])]
    sm = r.smallest_measured
    assert (sm.scheme, sm.device, sm.device_total_bytes, sm.device_capacity_bytes) == ("UD-Q2_K_XL", "CUDA7",
                                                                                       on_last(50), cap)
    assert round(sm.score, 2) == W("UD-Q2_K_XL")
    assert excluded(r) == {"UD-Q2_K_XL": ["does_not_fit"]}


def test_nothing_fits_is_none_with_an_explanation():
    p = r1_plan("rtx4090", "NVIDIA RTX 4090", 24 * GiB, "CUDA")
    assert recommend(p) is None
    first = no_fit_entries(p)[0]
    assert (first.scheme, first.device, first.device_total_bytes) == ("UD-Q2_K_XL", "CUDA7", on_last(50))
    nf = no_fit(p)
    assert nf.entries[0] == first and (nf.hardware, nf.devices, nf.rpc_devices) == ("NVIDIA RTX 4090", 8, 0)
    why = no_fit_note(nf)
    assert "UD-Q2_K_XL" in why and "(CUDA7)" in why and "47.0 GiB" in why
    p.schemes = [SchemePlan(id="Q4_K_M", kind="ftype", size_bytes=1, params=1, type_bytes={}, tensors=[])]
    assert recommend(p) is None
    assert no_fit_entries(p) == [] and no_fit(p).entries == []


def test_pareto_points_mark_the_front():
    p = r1_plan("910b", "Huawei Ascend 910B", NPU_910B, "910B ")
    pts = pareto_points(p)
    assert [(x.scheme, round(x.score, 2), x.fits, x.on_front) for x in pts] == [
        ("UD-Q2_K_XL", W("UD-Q2_K_XL"), True, True), ("DQ3_K_M", W("DQ3_K_M"), True, True),
        ("Q3_K_M", W("Q3_K_M"), True, False), ("Q4_K_M", W("Q4_K_M"), False, False),
        ("BF16", T("BF16", table=R1_CARD), False, False)]
    assert pts[1].device_bytes == on_last(59)


def test_recommendation_to_dict_is_the_data():
    r = recommend(distill32_llama_plan())
    d = r.to_dict()
    assert (d["scheme"], d["basis"], d["suite"], d["tie_points"]) == ("Q4_K_M", "suite", "paper", tie_points())
    assert [(e["scheme"], e["rank"], e["tie_group"], e["why_not"]) for e in d["ranked"]] == [
        (e.scheme, e.rank, e.tie_group, e.why_not) for e in r.ranked]
    assert d["excluded"][0]["why_not"] == ["unmeasured"] and "reasons" not in d


# ------------------------------------------------------------------------------------------ --model auto

def small_plan(model: str, size_gb: float, per_gb: float, cap: int, name: str, n: int = 1) -> Plan:
    return plan(model, [sp("BF16", size_gb, per_gb, n, cap, PARAMS[model])], "a100", name, n, cap)


def models(r: Recommendation) -> list[tuple]:
    return [(m.model, m.rank, m.scheme, m.suite, None if m.best is None else round(m.best.score, 2), m.anchor,
             m.above_anchor, m.why_not) for m in r.models]


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
    assert (r.model, r.scheme, r.model_basis) == ("deepseek-r1-distill-qwen-32b", "Q4_K_M", "suite")
    # the chosen model's own ranking comes with it
    assert ranking(r)[0] == ("Q4_K_M", 1, 1, W("Q4_K_M", D32), [])
    # the smaller distills are only on the cards: placed against the 32B's BF16 there (77.93)
    assert models(r) == [
        ("deepseek-r1-distill-qwen-32b", 1, "Q4_K_M", "paper", W("Q4_K_M", D32), None, None, []),
        ("deepseek-r1-distill-qwen-14b", 2, "BF16", "redhat-reasoning",
         T("BF16", model="deepseek-r1-distill-qwen-14b", table="card-r1-distill-qwen-14b-reasoning"),
         "deepseek-r1-distill-qwen-32b", False, ["lower_score"]),
        ("deepseek-r1-distill-qwen-7b", 3, "BF16", "redhat-reasoning",
         T("BF16", model="deepseek-r1-distill-qwen-7b", table="card-r1-distill-qwen-7b-reasoning"),
         "deepseek-r1-distill-qwen-32b", False, ["lower_score"]),
        ("deepseek-r1", None, None, None, None, None, None, ["nothing_fits"])]
    assert round(r.models[1].anchor_best.score, 2) == T("BF16", model=D32, table=D32_CARD)
    assert r.models[1].anchor_best.scheme == "BF16"
    smallest = r.models[3].smallest
    assert (smallest.scheme, smallest.device, smallest.device_total_bytes) == ("UD-Q2_K_XL", "CUDA0", on_last(400))
    assert r.to_dict()["model"] == "deepseek-r1-distill-qwen-32b"


def test_auto_eight_910b_picks_r1_dq3_k_m():
    name = "Huawei Ascend 910B"
    plans = [r1_plan("910b", name, NPU_910B, "910B ", m) for m in ("deepseek-r1", "deepseek-v3", "deepseek-v3-0324")]
    plans.append(distill32_llama_plan(NPU_910B, 8))
    plans[-1].hardware = plans[0].hardware
    r = recommend_across_models(plans)
    assert (r.model, r.scheme, r.model_basis) == ("deepseek-r1", "DQ3_K_M", "suite")
    assert models(r) == [
        ("deepseek-r1", 1, "DQ3_K_M", "paper", W("DQ3_K_M"), None, None, []),
        ("deepseek-v3-0324", 2, "DQ3_K_M", "paper", W("DQ3_K_M", "deepseek-v3-0324"), None, None, ["lower_score"]),
        ("deepseek-r1-distill-qwen-32b", 3, "Q4_K_M", "paper", W("Q4_K_M", D32), None, None, ["lower_score"]),
        ("deepseek-v3", 4, "DQ3_K_M", "paper", W("DQ3_K_M", "deepseek-v3"), None, None, ["lower_score"])]
    assert r.pick.score == W("DQ3_K_M") and r.pick.baseline_score == W("FP8")


def test_auto_nothing_fits_anywhere_is_none():
    p = r1_plan("rtx4090", "NVIDIA RTX 4090", 24 * GiB, "CUDA")
    assert recommend_across_models([p]) is None


def test_auto_without_a_measured_fit_names_the_largest_model():
    cap = 49 * GB
    P = PARAMS["deepseek-r1"]
    r1 = plan("deepseek-r1", [sp("UD-Q2_K_XL", 212, 50, 8, cap, P), sp("IQ1_S", 140, 30, 8, cap, P)],
              "l40s", "NVIDIA L40S", 8, cap)
    q7 = plan("deepseek-r1-distill-qwen-7b", [sp("Q6_K", 6, 8, 8, cap, PARAMS["deepseek-r1-distill-qwen-7b"])],
              "l40s", "NVIDIA L40S", 8, cap)
    r = recommend_across_models([q7, r1])
    assert (r.model, r.scheme, r.model_basis, r.basis) == ("deepseek-r1", "IQ1_S", "largest_unmeasured", "unmeasured")
    assert [(m.model, m.rank, m.scheme, m.why_not) for m in r.models] == [
        ("deepseek-r1", 1, "IQ1_S", []),
        ("deepseek-r1-distill-qwen-7b", None, "Q6_K", ["smaller_model", "only_unmeasured"])]


# ------------------------------------------------------------------------------------------ on real plans

def _real(model: str, device: str, **kw) -> Plan:
    from planner.core.plan import PlanRequest
    from planner.make_plan import make_plan

    return make_plan(PlanRequest(model=model, device=device, **kw))


PAPER_SCHEMES = ["Q4_K_M", "Q3_K_M", "DQ3_K_M", "Q2_K_L", "UD-Q2_K_XL"]


def test_real_plans_paper_setup_910b_and_h100():
    """make_plan's memory model in the paper's setup (legacy KV cache, 32K): 910B -> DQ3_K_M, H100 -> DQ3_K_M."""
    p = _real("deepseek-r1", "910b", kv_mode="legacy", schemes=PAPER_SCHEMES)
    r = p.recommendation
    assert r.scheme == "DQ3_K_M" and r.pick.score == W("DQ3_K_M")
    q4 = r.entry("Q4_K_M")
    assert q4.why_not == ["does_not_fit"] and q4.score == W("Q4_K_M") and q4.device_capacity_bytes == 64 * GiB
    assert q4.headroom_bytes == p.scheme("Q4_K_M").headroom_bytes < 0
    assert q4.device == p.scheme("Q4_K_M").tightest_device.device
    h = _real("deepseek-r1", "h100", kv_mode="legacy", schemes=PAPER_SCHEMES).recommendation
    assert h.scheme == "DQ3_K_M"
    assert ("Q4_K_M", W("Q4_K_M")) in [(e.scheme, e.score) for e in h.ranked]     # Q4_K_M fits on H100 and was ranked


def test_real_plans_auto_one_a100():
    plans = [_real(m, "a100", gpus=1) for m in ("deepseek-r1", "deepseek-r1-distill-qwen-32b",
                                                "deepseek-r1-distill-qwen-14b")]
    r = recommend_across_models(plans)
    assert (r.model, r.scheme) == ("deepseek-r1-distill-qwen-32b", "Q4_K_M")
