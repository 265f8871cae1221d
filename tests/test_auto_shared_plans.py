"""--model auto sizes models of the same layout once (R1, V3, V3-0324 and R1-0528 share every tensor):
each candidate's plan must still equal the plan of that model made on its own."""

from __future__ import annotations

from dataclasses import replace

from planner.core.plan import PlanRequest
from planner.make_plan import make_auto_plan, make_plan

REQ = PlanRequest(device="h100", gpus=8, ctx=32768, model="auto")


def _doc(plan) -> dict:
    d = plan.to_dict()
    d.pop("recommendation", None)       # across models the chosen plan carries the cross-model pick
    d["notes"] = [n for n in d.get("notes", []) if not n.startswith("--model auto")]
    return d


def test_every_candidate_equals_its_own_plan():
    _, plans = make_auto_plan(REQ)
    by_id = {p.model.id: p for p in plans}
    same_layout = ["deepseek-r1", "deepseek-v3", "deepseek-v3-0324", "deepseek-r1-0528"]
    assert set(same_layout) <= set(by_id)
    for mid in same_layout + ["deepseek-r1-distill-qwen-32b"]:
        alone = make_plan(replace(REQ, model=mid))
        assert _doc(by_id[mid]) == _doc(alone), mid


def test_shared_figures_keep_each_models_own_accuracy():
    _, plans = make_auto_plan(REQ)
    by_id = {p.model.id: p for p in plans}
    r1, v3 = by_id["deepseek-r1"].scheme("Q4_K_M"), by_id["deepseek-v3"].scheme("Q4_K_M")
    assert r1.size_bytes == v3.size_bytes and r1.memory.per_device[0].total_bytes == v3.memory.per_device[0].total_bytes
    # the paper measured R1 and V3 separately (Table 1 / Table 2): different weighted scores
    assert r1.accuracy.weighted_avg != v3.accuracy.weighted_avg
    # a scheme's notes are its own list in each plan
    r1.notes.append("x")
    assert "x" not in v3.notes


def test_largest_fitting_equals_an_exhaustive_scan():
    import random

    from planner.core.llamacpp.fit import largest_fitting

    rng = random.Random(7)
    for _ in range(3000):
        lo, hi = sorted(rng.sample(range(0, 400), 2))
        # memory against x: non-decreasing, in linear pieces with kinks and flat runs (like the context)
        use, acc = {}, rng.randint(0, 10**6)
        for x in range(lo, hi + 1):
            acc += rng.choice([0, 1, 5, 1000, 1000, 1000])
            use[x] = acc
        capacity = rng.randint(use[lo] - 2000, use[hi] + 2000)
        calls = []

        def spare(x: int) -> int:
            calls.append(x)
            return capacity - use[x]

        want = max((x for x in range(lo, hi + 1) if capacity - use[x] >= 0), default=None)
        assert largest_fitting(lo, hi, spare) == want
        assert len(calls) <= 3 * (hi - lo).bit_length() + 2


def test_auto_offers_the_current_generation_unranked():
    chosen, plans = make_auto_plan(REQ)
    ids = [p.model.id for p in plans]
    new = ["deepseek-v3.1-terminus", "deepseek-v3.2-exp", "deepseek-v3.2", "deepseek-v3.2-speciale",
           "deepseek-v4-flash", "deepseek-r1-0528-qwen3-8b"]
    assert set(new) <= set(ids)
    assert "deepseek-v2" not in ids and "deepseek-v2-lite" not in ids       # auto = false in their profiles
    models = {m.model: m for m in chosen.recommendation.models}
    for mid in new:             # listed, never ranked: no quantized measurement speaks for them
        assert models[mid].rank is None and models[mid].why_not in (["only_unmeasured"], ["nothing_fits"])
    # V3.2's three checkpoints share their tensors: the same figures, each its own model
    by_id = {p.model.id: p for p in plans}
    a, b = by_id["deepseek-v3.2"].scheme("Q4_K_M"), by_id["deepseek-v3.2-speciale"].scheme("Q4_K_M")
    assert a.size_bytes == b.size_bytes and a.memory.per_device[-1].total_bytes == b.memory.per_device[-1].total_bytes


def test_auto_leaves_out_models_an_option_does_not_apply_to():
    chosen, plans = make_auto_plan(replace(REQ, device="910b", kv_mode="legacy"))
    ids = {p.model.id for p in plans}
    assert "deepseek-r1" in ids and "deepseek-v3.2" not in ids and "deepseek-v4-flash" not in ids
    note = next(n for n in chosen.notes if "not planned" in n)
    assert "deepseek-v3.2" in note and "deepseek-v4-flash" in note


def test_auto_candidates_summarise_their_devices():
    from planner.render.json_doc import auto_document

    chosen, plans = make_auto_plan(REQ)
    doc = auto_document(chosen, plans)
    assert len(doc["schemes"][0]["memory"]["per_device"]) == 8          # the chosen model's rows
    for c, p in zip(doc["candidates"], plans):
        for s, sp in zip(c["schemes"], p.schemes):
            m = s["memory"]
            assert "per_device" not in m and m["devices"] == 8
            t = sp.memory.tightest
            assert m["tightest"]["device"] == t.device and m["tightest"]["total_bytes"] == t.total_bytes
            assert s["headroom_bytes"] == t.headroom_bytes and m["total_bytes"] == sp.memory.total_bytes


def test_the_sums_sizing_keeps_equal_the_per_tensor_functions():
    """Placement and speed read the sums sizing makes as it sizes a scheme; summed again from the
    tensor rows by LayerWeights.of and speed.tensor_groups they must be the same."""
    from planner.core.llamacpp.memory import LayerWeights
    from planner.core.llamacpp.speed import tensor_groups

    for mid in ("deepseek-r1", "deepseek-v3.2", "deepseek-v4-flash", "deepseek-r1-distill-qwen-7b"):
        schemes = ["Q4_K_M", "Q2_K", "Q8_0"] + (["DQ3_K_M"] if "distill" not in mid else [])
        plan = make_plan(replace(REQ, model=mid, schemes=schemes))
        hp = __import__("planner.core.catalog", fromlist=["x"]).resolve_model(mid).hparams
        for sp in plan.schemes:
            assert sp.weights_by_layer == LayerWeights.of(hp, list(sp.tensors)), (mid, sp.id)
            assert sorted(sp.tensor_groups) == sorted(tensor_groups(list(sp.tensors), hp.n_layer)), (mid, sp.id)
            assert sum(t.bytes for t in sp.tensors) == sp.size_bytes
