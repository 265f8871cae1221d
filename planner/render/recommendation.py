"""The recommendation's sentences, written from its data (planner.core.plan.Recommendation).

planner.core.accuracy.recommend decides (ranks, figures, tie groups, why-not codes); this module only words it.
Every figure printed here is a field of the Recommendation; each memory sentence names the device whose
memory it prints (the tightest device: SchemePlan.tightest_device).

    reasons(rec)       why the pick: its score, its fit, the ranking, the tie that decided it
    alternatives(rec)  every other scheme (and, for --model auto, model) and why it is not the pick
    as_dict(rec)       the interface's {"scheme", "reasons", "alternatives", "model"?} plus the data
"""

from __future__ import annotations

from typing import Any

from planner.core.accuracy import tables as acc
from planner.core.plan import NoFit, Plan, RankedModel, RankedScheme, Recommendation
from planner.units import GiB


def _gib(n: int | None) -> str:
    return f"{(n or 0) / GiB:.1f} GiB"


def _points(x: float) -> str:
    return f"{x:g}"


def _pct(a: float, b: float | None) -> str:
    if not b:
        return ""
    return f" ({(a - b) / b * 100:+.2f}%)".replace("+-", "-")


def hardware_text(rec: Recommendation | NoFit) -> str:
    """'8x NVIDIA H100 SXM5 80GB', '2x NVIDIA H100 SXM5 80GB + 1 RPC device(s)': every device planned."""
    if not rec.hardware:
        return "the devices"
    if not rec.devices:                       # --gpus 0: the RPC devices alone
        return f"{rec.rpc_devices} RPC device(s)"
    return f"{rec.devices}x {rec.hardware}" + (f" + {rec.rpc_devices} RPC device(s)" if rec.rpc_devices else "")


def score_label(task: str, e: RankedScheme) -> str:
    """'weighted', 'Table 8-weighted AIME 2024/MATH 500/GPQA', 'math score', 'code score over ...'."""
    names = "/".join(acc.data().benchmarks[b].name for b in e.benchmarks)
    if task == "general":
        return "weighted" if e.full_task else f"Table 8-weighted {names}"
    return f"{task} score" if e.full_task else f"{task} score over {names}"


def accuracy_text(task: str, e: RankedScheme) -> str:
    """'DQ3_K_M: weighted 85.53 vs 85.82 FP8 (Official API) (-0.34%), arXiv 2505.02390 Table 2'."""
    vs = ""
    if e.role == "baseline":
        vs = " (the table's baseline)"
    elif e.baseline_score is not None:
        vs = f" vs {e.baseline_score:.2f} {e.baseline}{_pct(e.score or 0.0, e.baseline_score)}"
    return f"{e.scheme}: {score_label(task, e)} {e.score:.2f}{vs}, {e.source}"


def fit_text(e: RankedScheme) -> str:
    """'DQ3_K_M fits: 40.3 GiB on the tightest device (CUDA1) of 79.6 GiB, 39.3 GiB free'."""
    if e.device is None:
        return f"{e.scheme}: memory not planned"
    return (f"{e.scheme} fits: {_gib(e.device_total_bytes)} on the tightest device ({e.device}) of "
            f"{_gib(e.device_capacity_bytes)}, {_gib(e.headroom_bytes)} free")


def need_text(e: RankedScheme) -> str:
    """'Q4_K_M needs 66.6 GiB on the tightest device (910B 7) > 64.0 GiB capacity'."""
    if e.device is None:
        return f"{e.scheme}: memory not planned"
    if e.headroom_bytes is not None and e.headroom_bytes < 0:
        return (f"{e.scheme} needs {_gib(e.device_total_bytes)} on the tightest device ({e.device}) > "
                f"{_gib(e.device_capacity_bytes)} capacity")
    if e.host_total_bytes is not None:
        return f"{e.scheme} needs {_gib(e.host_total_bytes)} of host memory > {_gib(e.host_capacity_bytes)}"
    return f"{e.scheme} fits"


def no_fit_note(nf: NoFit) -> str:
    """'no scheme fits 1x NVIDIA GeForce RTX 4090: UD-Q2_K_XL needs 47.0 GiB on the tightest device ...'."""
    if not nf.entries:
        return "no memory was planned (no hardware), so no scheme can be recommended"
    return f"no scheme fits {hardware_text(nf)}: " + "; ".join(need_text(e) for e in nf.entries)


def plan_notes(plan: Plan) -> list[str]:
    """The plan's notes as every renderer shows them: the core's, then why nothing is recommended."""
    return plan.notes + ([no_fit_note(plan.no_fit)] if plan.no_fit is not None else [])


def _value(rec: Recommendation, e: RankedScheme) -> str:
    return f"{e.share_pct:.2f}% of baseline" if rec.basis == "share" else f"{e.score:.2f}"


def _key(rec: Recommendation, e: RankedScheme) -> float:
    v = e.share_pct if rec.basis == "share" else e.score
    return v if v is not None else float("-inf")


def _by_score(rec: Recommendation) -> list[RankedScheme]:
    return sorted(rec.ranked, key=lambda e: -_key(rec, e))


def _basis_text(rec: Recommendation) -> str:
    if rec.basis == "share":
        return "share of each table's own baseline, because no single evaluation measured every fitting scheme"
    label = score_label(rec.task, rec.ranked[0])
    label = label if label.endswith("score") else f"{label} score"
    return f"{label} in one evaluation ({acc.data().suites[rec.suite].name})"


# ----------------------------------------------------------------------------------------- one model

def scheme_reasons(rec: Recommendation) -> list[str]:
    """The reasons for the scheme within its model (the whole answer without --model auto)."""
    win, hw, task = rec.ranked[0], hardware_text(rec), rec.task
    if rec.basis == "unmeasured":
        out = []
        if rec.smallest_measured is not None:
            out.append(f"no scheme with a published {task} score for {rec.model_name} fits {hw}: the smallest, "
                       f"{need_text(rec.smallest_measured)}")
        else:
            out.append(f"no published {task} score exists for {rec.model_name} in any scheme that fits")
        if win.native:
            out.append(f"{win.scheme} keeps the release's own precision ({win.native}, as released; {win.bpw:.2f} "
                       f"bpw): a scheme with more bits per weight holds those released values rounded once more, "
                       f"so it ranks first; no {task} accuracy figure exists for it")
        else:
            out.append(f"{win.scheme} is UNMEASURED: recommended only as the fitting scheme with the most bits per "
                       f"weight ({win.bpw:.2f} bpw); no {task} accuracy figure exists for it")
        out.append(f"{fit_text(win)} on {hw}")
        return out
    order = _by_score(rec)
    out = [accuracy_text(task, win), f"{fit_text(win)} on {hw}",
           f"ranked by {_basis_text(rec)} among {len(order)} measured scheme(s) that fit: "
           + ", ".join(f"{e.scheme} {_value(rec, e)}" for e in order)]
    top = order[0]
    if top is not win:
        out.append(f"{top.scheme} ({_value(rec, top)}) is within {_points(rec.tie_points)} of {win.scheme} "
                   f"({_value(rec, win)}): treated as a tie, decided by headroom "
                   f"({_gib(win.headroom_bytes)} vs {_gib(top.headroom_bytes)}) and size")
    return out


def scheme_alternatives(rec: Recommendation) -> list[str]:
    """Every other scheme of the model and why it is not the pick (from its why_not codes)."""
    hw, task, tie = hardware_text(rec), rec.task, _points(rec.tie_points)
    win = rec.ranked[0]
    out: list[str] = []
    if rec.basis == "unmeasured":
        others = rec.ranked[1:]
        rounded = [e for e in others if "not_native" in e.why_not]
        fewer = [e for e in others if "not_native" not in e.why_not]
        if rounded:
            out.append(f"also fit, no published {task} score, not the release's own precision (they round "
                       f"the released weights again): " + ", ".join(f"{e.scheme} ({e.bpw:.2f} bpw)" for e in rounded))
        if fewer:
            out.append(f"also fit, no published {task} score, fewer bits per weight: "
                       + ", ".join(f"{e.scheme} ({e.bpw:.2f} bpw)" for e in fewer))
    else:
        for e in _by_score(rec):
            if e is win:
                continue
            if "tied_less_headroom" in e.why_not:
                why = (f"within {tie} of {win.scheme} but less headroom "
                       f"({_gib(e.headroom_bytes)} vs {_gib(win.headroom_bytes)})")
            elif "tied_larger" in e.why_not:
                why = f"within {tie} of {win.scheme} with equal headroom but larger"
            else:
                why = (f"fits ({_gib(e.headroom_bytes)} free) but {_value(rec, e)} < {_value(rec, win)}")
            out.append(f"{e.scheme}: {why} ({accuracy_text(task, e)})")
    unmeasured_fit, no_fit_unscored, unplanned = [], [], []
    for e in rec.excluded:
        codes = set(e.why_not)
        if codes == {"does_not_fit"}:
            out.append(f"{need_text(e)} on {hw} ({accuracy_text(task, e)})")
        elif codes == {"no_task_benchmark"}:
            out.append(f"{e.scheme}: fits, but its only measurement ({e.source}) has no {task} benchmark")
        elif codes == {"unmeasured"}:
            unmeasured_fit.append(e.scheme)
        elif "does_not_fit" in codes:
            no_fit_unscored.append(e.scheme)
        elif "not_planned" in codes:
            unplanned.append(e.scheme)
    if unmeasured_fit:
        out.append(f"unmeasured (no published accuracy for {rec.model_name}), fit: {', '.join(unmeasured_fit)}")
    if no_fit_unscored:
        out.append(f"unmeasured, do not fit {hw}: {', '.join(no_fit_unscored)}")
    if unplanned:
        out.append(f"memory not planned: {', '.join(unplanned)}")
    return out


# ----------------------------------------------------------------------------------------- across models

def _cmp(task: str, model: str, e: RankedScheme) -> str:
    return f"{model} {e.scheme} {score_label(task, e)} {e.score:.2f}"


def _suite_name(suite: str | None) -> str:
    return acc.data().suites[suite].name if suite else ""


def accuracy_basis(rec: Recommendation) -> str:
    """The accuracy column's basis: the suite the recommendation ranks by, and the others marked '*'."""
    others = sorted({e.suite for e in rec.ranked + rec.excluded
                     if e.score is not None and e.suite and e.suite != rec.suite})
    text = f"accuracy: {rec.task} score in {_suite_name(rec.suite)}, the recommendation's basis"
    if others:
        text += "; * from " + ", ".join(_suite_name(x) for x in others) + " (another evaluation, not ranked against it)"
    return text


def model_reasons(rec: Recommendation) -> list[str]:
    """The sentence that picks the model (--model auto); empty without one."""
    if not rec.models:
        return []
    hw, task, mid = hardware_text(rec), rec.task, rec.model
    w = rec.models[0]
    if rec.model_basis == "largest_unmeasured":
        return [f"no model with a published {task} score has a measured scheme that fits {hw}; "
                f"{mid} is the largest model with a fitting (unmeasured) scheme"]
    assert w.best is not None
    if rec.model_basis == "anchored":
        assert w.anchor_best is not None
        return [f"{mid} {rec.scheme}: fits {hw} and scores above the best of the other models there: on "
                f"{_suite_name(w.suite)}, {_cmp(task, mid, w.best)} > {_cmp(task, w.anchor, w.anchor_best)}"]
    lead = (f"{mid} {rec.scheme}: the highest {score_label(task, w.best)} score among the models with a "
            f"measured scheme that fits {hw} ({_suite_name(w.suite)}): {mid} {w.best.scheme} {w.best.score:.2f}")
    rivals = [m for m in rec.models[1:] if m.rank is not None and m.anchor is None and m.best is not None]
    if rivals:
        lead += " vs " + ", ".join(f"{m.model} {m.best.scheme} {m.best.score:.2f}" for m in rivals)
    return [lead]


def _model_alternative(rec: Recommendation, m: RankedModel) -> str:
    task, mid, tie = rec.task, rec.model, _points(rec.tie_points)
    codes = set(m.why_not)
    if rec.model_basis == "largest_unmeasured":
        return f"{m.model}: {('only unmeasured ' + m.scheme + ' fits') if m.scheme else 'nothing fits'}"
    if m.rank is not None and m.best is not None:
        if m.anchor is None:
            if "tied_less_headroom" in codes:
                return (f"{m.model} {m.scheme}: {_cmp(task, m.model, m.best)} is within {tie} of {mid}; "
                        f"{mid} has more headroom or a smaller file")
            return f"{m.model} {m.scheme}: {_cmp(task, m.model, m.best)} ranks below {mid} ({_suite_name(m.suite)})"
        assert m.anchor_best is not None
        rel = "above" if m.above_anchor else "below"
        tail = "" if m.anchor == mid else f", which ranks below {mid}"
        return (f"{m.model} {m.scheme}: on {_suite_name(m.suite)}, {_cmp(task, m.model, m.best)} ranks {rel} "
                f"{_cmp(task, m.anchor, m.anchor_best)}{tail}")
    if "not_comparable" in codes and m.best is not None:
        return (f"{m.model} {m.scheme}: not compared with {mid}: {_cmp(task, m.model, m.best)} "
                f"({_suite_name(m.suite)}) shares no evaluation with the ranked models")
    if "only_unmeasured" in codes:
        return f"{m.model}: only schemes without a published {task} score fit ({m.scheme} would be its pick)"
    if "nothing_fits" in codes and m.smallest is not None:
        return f"{m.model}: nothing fits; the smallest, {need_text(m.smallest)}"
    return f"{m.model}: memory not planned"


# ----------------------------------------------------------------------------------------- the whole

def reasons(rec: Recommendation) -> list[str]:
    """Why the pick (and, for --model auto, why the model first)."""
    out = model_reasons(rec) + scheme_reasons(rec)
    if rec.placement == "hybrid":
        d = next((x for x in rec.deployments if x.scheme == rec.scheme and x.placement == "hybrid"), None)
        n = f" of the first {d.n_cpu_moe} layers" if d else ""
        out.append(f"no scheme fits the GPUs alone: ranked as hybrid deployments, the routed experts{n} in host "
                   f"RAM (--n-cpu-moe{' ' + str(d.n_cpu_moe) if d else ''})")
    return out


def deployment_text(d) -> str:
    """One ranked deployment (planner.core.plan.RankedDeployment) as a sentence."""
    where = ("on the GPUs alone" if d.placement == "gpu" else
             f"hybrid, the experts of {d.n_cpu_moe} layers in host RAM ({_gib(d.host_bytes)} of it)")
    score = f"score {d.score:.2f}" if d.score is not None else "no score"
    speed = (f", {d.decode_tps:.1f} tok/s decode, {d.prefill_tps:.1f} tok/s prefill (limited by {d.bound})"
             if d.decode_tps is not None else "")
    room = f", {_gib(d.headroom_bytes)} free on {d.device}" if d.headroom_bytes is not None else ""
    return f"{d.rank}. {d.scheme} {where}: {score}{room}{speed}"


def deployment_lines(rec: Recommendation) -> list[str]:
    """The ranked deployments (GPU-only and hybrid, those that fit), best first."""
    return [deployment_text(d) for d in rec.deployments]


def alternatives(rec: Recommendation) -> list[str]:
    """Without --model auto: the model's other schemes; with it: the other models."""
    if rec.models:
        return [_model_alternative(rec, m) for m in rec.models[1:]]
    return scheme_alternatives(rec)


def as_dict(rec: Recommendation | None) -> dict[str, Any] | None:
    """The JSON document's "recommendation": the interface's scheme, reasons, alternatives (and model),
    then the data they were written from (task, basis, suite, tie_points, ranked, excluded, models)."""
    if rec is None:
        return None
    d: dict[str, Any] = {"scheme": rec.scheme, "reasons": reasons(rec), "alternatives": alternatives(rec)}
    d.update(rec.to_dict())
    return d
