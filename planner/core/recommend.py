"""Recommend the scheme (and, for --model auto, the model) that keeps the most measured accuracy within
the hardware's memory, with reasons a deployment engineer can check against the memory table and the
accuracy tables (profiles/accuracy/).

Rules, in order:

1. Candidates are the schemes that fit: on every device (and the host, when layers are offloaded)
   weights + KV cache + compute buffers + runtime reserve <= capacity (SchemePlan.fits).
2. Candidates with a published score for the task are ranked by it (planner.core.accuracy: Table 8
   weights for `general`, the documented reweightings of tasks.toml otherwise).
   - If one evaluation suite measured every such candidate, their absolute scores in that suite are
     compared (the paper's nine-benchmark evaluation first).
   - Otherwise (e.g. FP8 measured by the paper, W4A16 only on a model card) each score is taken as a
     share of its own table's baseline (100 x score / baseline score) and those shares are compared.
3. Ties: scores within TIE_POINTS (0.1 points, or 0.1 percentage points of the baseline) of the best
   are treated as equal; among them the most headroom on the tightest device wins, then the smaller
   file (fewer bytes to read per token: faster decoding). 0.1 is ten times the tables' printed
   precision and larger than anything their rounding explains (at most 0.01), yet far inside the
   spread of the sampled benchmarks (± 0.2 to ± 7.9 per benchmark), so the paper's own ordering
   stands wherever the paper's figures differ by more than 0.1.
4. A scheme without a published figure is never ranked against measured ones. Only when no measured
   scheme fits is an unmeasured one recommended: the fitting scheme with the most bits per weight
   (then the most headroom), and the reasons say that its accuracy is unmeasured.
5. Nothing fits, or no memory was planned: no recommendation (None); explain_no_fit() says why.

Across models (--model auto, the paper's second question: full, distilled or quantized for given
hardware), models are compared only on absolute scores within one evaluation suite: first the
paper's (R1, V3, V3-0324, R1-Distill-Qwen-32B), then each model measured only elsewhere is placed
against the best-ranked model it shares a suite with. A model nothing connects to the ranking is
listed as not comparable rather than guessed at. If no model has a measured scheme that fits, the
largest model (parameters) with a fitting unmeasured scheme is named, saying so.

pareto_points() gives the accuracy-against-memory points (and the Pareto front) for --plot.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.core import accuracy as acc
from planner.core.plan import DeviceMemory, Plan, Recommendation, SchemePlan

TIE_POINTS = 0.1
GiB = 1 << 30


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


# ----------------------------------------------------------------------------------------- memory text

def _tightest(sp: SchemePlan) -> DeviceMemory | None:
    if sp.memory is None or not sp.memory.per_device:
        return None
    return min(sp.memory.per_device, key=lambda d: d.headroom_bytes)


def _host_over(sp: SchemePlan) -> DeviceMemory | None:
    h = sp.memory.host if sp.memory else None
    return h if h is not None and h.headroom_bytes < 0 else None


def _hw(plan: Plan) -> str:
    h = plan.hardware
    if h is None:
        return "the devices"
    n = h.gpus * max(h.nodes, 1)
    return f"{n}x {h.name or h.device}"


def fit_text(sp: SchemePlan, plan: Plan | None = None) -> str:
    """'DQ3_K_M fits: 58.9 GiB on the tightest device (CUDA3) of 79.6 GiB, 20.7 GiB free'."""
    d = _tightest(sp)
    if d is None:
        return f"{sp.id}: memory not planned"
    return (f"{sp.id} fits: {_gib(d.total_bytes)} on the tightest device ({d.device}) of "
            f"{_gib(d.capacity_bytes)}, {_gib(d.headroom_bytes)} free")


def need_text(sp: SchemePlan) -> str:
    """'Q4_K_M needs 73.9 GiB on the fullest device (910B 3) > 64.0 GiB capacity'."""
    d = _tightest(sp)
    if d is None:
        return f"{sp.id}: memory not planned"
    if d.headroom_bytes < 0:
        return (f"{sp.id} needs {_gib(d.total_bytes)} on the fullest device ({d.device}) > "
                f"{_gib(d.capacity_bytes)} capacity")
    h = _host_over(sp)
    if h is not None:
        return f"{sp.id} needs {_gib(h.total_bytes)} of host memory > {_gib(h.capacity_bytes)}"
    return f"{sp.id} fits"


def explain_no_fit(plan: Plan) -> list[str]:
    """Why nothing fits: the smallest schemes' needs (for plan notes when recommend() returns None)."""
    planned = [s for s in plan.schemes if s.memory is not None]
    if not planned:
        return ["no memory was planned (no hardware), so no scheme can be recommended"]
    smallest = sorted(planned, key=lambda s: s.size_bytes)[:3]
    return [f"no scheme fits {_hw(plan)}: " + "; ".join(need_text(s) for s in smallest)]


# ----------------------------------------------------------------------------------------- scores

@dataclass
class _Scored:
    sp: SchemePlan
    m: acc.Measurement
    score: float                 # task score in the measurement's suite
    base: acc.Measurement
    base_score: float | None

    @property
    def share(self) -> float | None:
        return 100.0 * self.score / self.base_score if self.base_score else None


def _score_label(task: str, m: acc.Measurement) -> str:
    t = acc.get_task(task)
    used = acc.task_benchmarks_used(m, task)
    full = set(used) == set(t.weights)
    if task == "general":
        if full:
            return "weighted"
        names = "/".join(acc.data().benchmarks[b].name for b in used)
        return f"Table 8-weighted {names}"
    return f"{task} score" if full else f"{task} score over {'/'.join(acc.data().benchmarks[b].name for b in used)}"


def _scored(model_id: str, sp: SchemePlan, task: str, suite: str | None = None) -> _Scored | None:
    for m in acc.measurements(model_id, sp.id, rankable=True):
        if suite is not None and m.suite != suite:
            continue
        s = acc.task_score(m, task)
        if s is None:
            continue
        base = acc.baseline_of(m)
        return _Scored(sp=sp, m=m, score=s, base=base, base_score=acc.task_score(base, task))
    return None


def _suites_of(model_id: str, sp: SchemePlan, task: str) -> list[str]:
    return [m.suite for m in acc.measurements(model_id, sp.id, rankable=True) if acc.task_score(m, task) is not None]


def _pct(a: float, b: float | None) -> str:
    if not b:
        return ""
    return f" ({(a - b) / b * 100:+.2f}%)".replace("+-", "-")


def accuracy_text(x: _Scored, task: str) -> str:
    """'DQ3_K_M: weighted 85.53 vs 85.82 FP8 (Official API) (-0.34%), arXiv 2505.02390 Table 2'."""
    label = _score_label(task, x.m)
    vs = ""
    if x.m.role != "baseline" and x.base_score is not None:
        vs = f" vs {x.base_score:.2f} {acc.baseline_label(x.base)}{_pct(x.score, x.base_score)}"
    elif x.m.role == "baseline":
        vs = " (the table's baseline)"
    return f"{x.sp.id}: {label} {x.score:.2f}{vs}, {x.m.source}"


def _rank_key(x: _Scored, by_share: bool) -> float:
    v = x.share if by_share else x.score
    return v if v is not None else float("-inf")


def _pick(cands: list[_Scored], by_share: bool) -> tuple[_Scored, list[_Scored]]:
    """The winner and the tie group it came from (rule 3)."""
    best = max(_rank_key(c, by_share) for c in cands)
    tied = [c for c in cands if _rank_key(c, by_share) >= best - TIE_POINTS - 1e-9]
    tied.sort(key=lambda c: (-(c.sp.headroom_bytes or 0), c.sp.size_bytes))
    return tied[0], tied


def _fmt_val(x: _Scored, by_share: bool) -> str:
    return f"{x.share:.2f}% of baseline" if by_share else f"{x.score:.2f}"


# ----------------------------------------------------------------------------------------- one model

@dataclass
class _Outcome:
    rec: Recommendation | None
    measured: bool                               # the pick has a published score
    winner: _Scored | None = None
    fitting: list[_Scored] | None = None


def _recommend(plan: Plan, task: str) -> _Outcome:
    acc.get_task(task)
    model = plan.model.id
    planned = [s for s in plan.schemes if s.memory is not None]
    if not planned:
        return _Outcome(None, False)
    fits = [s for s in planned if s.fits]
    not_fit = [s for s in planned if not s.fits]
    unplanned = [s for s in plan.schemes if s.memory is None]

    scored_fit: list[_Scored] = []
    unmeasured_fit: list[SchemePlan] = []
    untask_fit: list[tuple[SchemePlan, acc.Measurement]] = []
    for s in fits:
        x = _scored(model, s, task)
        if x is not None:
            scored_fit.append(x)
            continue
        ms = acc.measurements(model, s.id, rankable=True)
        (untask_fit.append((s, ms[0])) if ms else unmeasured_fit.append(s))

    alternatives: list[str] = []
    reasons: list[str] = []

    def tail_alternatives(winner_id: str, *, list_unscored_fit: bool) -> None:
        for s in sorted(not_fit, key=lambda s: -s.size_bytes):
            x = _scored(model, s, task)
            if x is not None:
                alternatives.append(f"{need_text(s)} on {_hw(plan)} ({accuracy_text(x, task)})")
        if list_unscored_fit:
            for s, m in untask_fit:
                if s.id != winner_id:
                    alternatives.append(f"{s.id}: fits, but its only measurement ({m.source}) has no {task} benchmark")
            um_fit = [s.id for s in sorted(unmeasured_fit, key=lambda s: -s.size_bytes) if s.id != winner_id]
            if um_fit:
                alternatives.append(
                    f"unmeasured (no published accuracy for {plan.model.name}), fit: {', '.join(um_fit)}")
        um_nofit = [s.id for s in sorted(not_fit, key=lambda s: -s.size_bytes) if _scored(model, s, task) is None]
        if um_nofit:
            alternatives.append(f"unmeasured, do not fit {_hw(plan)}: {', '.join(um_nofit)}")
        if unplanned:
            alternatives.append(f"memory not planned: {', '.join(s.id for s in unplanned)}")

    if scored_fit:
        common = set(_suites_of(model, scored_fit[0].sp, task))
        for x in scored_fit[1:]:
            common &= set(_suites_of(model, x.sp, task))
        ranked_suites = sorted(common, key=lambda s: acc.data().suites[s].rank)
        by_share = not ranked_suites
        if ranked_suites:
            suite = ranked_suites[0]
            scored_fit = [_scored(model, x.sp, task, suite) for x in scored_fit]  # type: ignore[misc]
            label = _score_label(task, scored_fit[0].m)
            label = label if label.endswith("score") else f"{label} score"
            basis = f"{label} in one evaluation ({acc.data().suites[suite].name})"
        else:
            basis = ("share of each table's own baseline, because no single evaluation measured every "
                     "fitting scheme")
        win, tied = _pick(scored_fit, by_share)
        order = sorted(scored_fit, key=lambda c: -_rank_key(c, by_share))
        reasons.append(accuracy_text(win, task))
        reasons.append(fit_text(win.sp) + f" on {_hw(plan)}")
        reasons.append(f"ranked by {basis} among {len(order)} measured scheme(s) that fit: "
                       + ", ".join(f"{c.sp.id} {_fmt_val(c, by_share)}" for c in order))
        top = order[0]
        if top is not win:
            reasons.append(
                f"{top.sp.id} ({_fmt_val(top, by_share)}) is within {TIE_POINTS} of {win.sp.id} "
                f"({_fmt_val(win, by_share)}): treated as a tie, decided by headroom "
                f"({_gib(win.sp.headroom_bytes or 0)} vs {_gib(top.sp.headroom_bytes or 0)}) and size")
        for c in order:
            if c is win:
                continue
            if c in tied:
                why = (f"within {TIE_POINTS} of {win.sp.id} but less headroom "
                       f"({_gib(c.sp.headroom_bytes or 0)} vs {_gib(win.sp.headroom_bytes or 0)})"
                       if (c.sp.headroom_bytes or 0) < (win.sp.headroom_bytes or 0) else
                       f"within {TIE_POINTS} of {win.sp.id} with equal headroom but larger")
                alternatives.append(f"{c.sp.id}: {why} ({accuracy_text(c, task)})")
            else:
                alternatives.append(
                    f"{c.sp.id}: fits ({_gib(c.sp.headroom_bytes or 0)} free) but {_fmt_val(c, by_share)} < "
                    f"{_fmt_val(win, by_share)} ({accuracy_text(c, task)})")
        tail_alternatives(win.sp.id, list_unscored_fit=True)
        return _Outcome(Recommendation(scheme=win.sp.id, reasons=reasons, alternatives=alternatives),
                        True, win, scored_fit)

    fallback = [s for s, _ in untask_fit] + unmeasured_fit
    if not fallback:
        return _Outcome(None, False)
    pick = sorted(fallback, key=lambda s: (-s.bpw, -(s.headroom_bytes or 0), s.size_bytes))[0]
    measured_nofit = [s for s in not_fit if _scored(model, s, task) is not None]
    if measured_nofit:
        smallest = min(measured_nofit, key=lambda s: s.size_bytes)
        reasons.append(f"no scheme with a published {task} score for {plan.model.name} fits {_hw(plan)}: "
                       f"the smallest, {need_text(smallest)}")
    else:
        reasons.append(f"no published {task} score exists for {plan.model.name} in any scheme that fits")
    reasons.append(f"{pick.id} is UNMEASURED: recommended only as the fitting scheme with the most bits per "
                   f"weight ({pick.bpw:.2f} bpw); no {task} accuracy figure exists for it")
    reasons.append(fit_text(pick) + f" on {_hw(plan)}")
    others = sorted((s for s in fallback if s is not pick), key=lambda s: -s.bpw)
    if others:
        alternatives.append(f"also fit, no published {task} score, fewer bits per weight: "
                            + ", ".join(f"{s.id} ({s.bpw:.2f} bpw)" for s in others))
    tail_alternatives(pick.id, list_unscored_fit=False)
    return _Outcome(Recommendation(scheme=pick.id, reasons=reasons, alternatives=alternatives), False)


def recommend(plan: Plan, task: str = "general") -> Recommendation | None:
    """The scheme of `plan` to deploy for `task` (general|math|code|chinese), or None when no scheme
    fits or no memory was planned. Raises PlannerError for an unknown task."""
    return _recommend(plan, task).rec


# ----------------------------------------------------------------------------------------- across models

@dataclass
class _ModelEntry:
    plan: Plan
    outcome: _Outcome
    best_in: dict[str, _Scored]                   # suite -> best fitting measured scheme there


def _best_in_suite(plan: Plan, task: str) -> dict[str, _Scored]:
    out: dict[str, _Scored] = {}
    fits = [s for s in plan.schemes if s.memory is not None and s.fits]
    for suite in acc.data().suites.values():
        if suite.rank <= 0:
            continue
        xs = [x for s in fits if (x := _scored(plan.model.id, s, task, suite.id)) is not None]
        if xs:
            out[suite.id] = _pick(xs, False)[0]
    return out


def _beats(a: _Scored, b: _Scored) -> bool:
    """a ranks above b (same suite): higher by more than TIE_POINTS, or tied with more headroom/smaller."""
    if a.score > b.score + TIE_POINTS:
        return True
    if a.score < b.score - TIE_POINTS:
        return False
    return (-(a.sp.headroom_bytes or 0), a.sp.size_bytes) < (-(b.sp.headroom_bytes or 0), b.sp.size_bytes)


def _cmp_text(x: _Scored, model: str, task: str) -> str:
    return f"{model} {x.sp.id} {_score_label(task, x.m)} {x.score:.2f}"


@dataclass
class _Placement:
    suite: acc.Suite
    x: _Scored                                    # this model's best fitting scheme in the suite
    anchor: _ModelEntry | None = None             # the ranked model it was compared with (later suites)
    above: bool = False


def recommend_across_models(plans: list[Plan], task: str = "general") -> Recommendation | None:
    """Which model and scheme to deploy on the plans' hardware (one plan per candidate model, same
    hardware and context), or None when no scheme of any model fits. Recommendation.model names it."""
    acc.get_task(task)
    entries = [_ModelEntry(p, _recommend(p, task), _best_in_suite(p, task)) for p in plans]
    suites = sorted((s for s in acc.data().suites.values() if s.rank > 0), key=lambda s: s.rank)
    measured = [e for e in entries if e.outcome.measured]
    ranked: list[_ModelEntry] = []
    placed: dict[int, _Placement] = {}
    first: acc.Suite | None = None
    for suite in suites:
        here = [e for e in measured if suite.id in e.best_in and e not in ranked]
        if not here:
            continue
        if first is None:
            # the first suite with any fitting measured scheme orders its models by score
            first = suite
            for e in here:
                pos = 0
                while pos < len(ranked) and _beats(ranked[pos].best_in[suite.id], e.best_in[suite.id]):
                    pos += 1
                ranked.insert(pos, e)
                placed[id(e)] = _Placement(suite, e.best_in[suite.id])
            continue
        # models measured only in a later suite: placed against the best-ranked model measured there too
        for e in sorted(here, key=lambda e: -e.best_in[suite.id].score):
            anchor = next((r for r in ranked if suite.id in r.best_in), None)
            if anchor is None:
                continue
            x = e.best_in[suite.id]
            above = _beats(x, anchor.best_in[suite.id])
            pos = ranked.index(anchor) + (0 if above else 1)
            if not above:
                while (pos < len(ranked) and suite.id in ranked[pos].best_in
                       and _beats(ranked[pos].best_in[suite.id], x)):
                    pos += 1
            ranked.insert(pos, e)
            placed[id(e)] = _Placement(suite, x, anchor, above)
    incomparable = [e for e in measured if e not in ranked]

    if not ranked:
        fallback = [e for e in entries if e.outcome.rec is not None]
        if not fallback:
            return None
        pick = max(fallback, key=lambda e: e.plan.model.params)
        rec = pick.outcome.rec
        assert rec is not None
        reasons = [f"no model with a published {task} score has a measured scheme that fits {_hw(pick.plan)}; "
                   f"{pick.plan.model.id} is the largest model with a fitting (unmeasured) scheme"] + list(rec.reasons)
        alts = [f"{e.plan.model.id}: {('only unmeasured ' + e.outcome.rec.scheme + ' fits') if e.outcome.rec else 'nothing fits'}"
                for e in entries if e is not pick]
        return Recommendation(scheme=rec.scheme, reasons=reasons, alternatives=alts, model=pick.plan.model.id)

    win = ranked[0]
    rec = win.outcome.rec
    assert rec is not None
    mid = win.plan.model.id
    wp = placed[id(win)]
    hw = _hw(win.plan)
    if wp.anchor is None:
        rivals = [e for e in ranked[1:] if placed[id(e)].anchor is None]
        lead = (f"{mid} {rec.scheme}: the highest {_score_label(task, wp.x.m)} score among the models with a "
                f"measured scheme that fits {hw} ({wp.suite.name}): {mid} {wp.x.sp.id} {wp.x.score:.2f}")
        if rivals:
            lead += " vs " + ", ".join(f"{e.plan.model.id} {placed[id(e)].x.sp.id} {placed[id(e)].x.score:.2f}"
                                       for e in rivals)
    else:
        a = wp.anchor.best_in[wp.suite.id]
        lead = (f"{mid} {rec.scheme}: fits {hw} and scores above the best of the other models there: on "
                f"{wp.suite.name}, {_cmp_text(wp.x, mid, task)} > {_cmp_text(a, wp.anchor.plan.model.id, task)}")
    reasons = [lead] + list(rec.reasons)

    alts: list[str] = []
    for e in ranked[1:]:
        pl = placed[id(e)]
        me = e.plan.model.id
        scheme = e.outcome.rec.scheme if e.outcome.rec else pl.x.sp.id
        if pl.anchor is None:
            w = win.best_in.get(pl.suite.id)
            if w is not None and abs(w.score - pl.x.score) <= TIE_POINTS + 1e-9:
                alts.append(f"{me} {scheme}: {_cmp_text(pl.x, me, task)} is within {TIE_POINTS} of {mid}; "
                            f"{mid} has more headroom or a smaller file")
            else:
                alts.append(f"{me} {scheme}: {_cmp_text(pl.x, me, task)} ranks below {mid} ({pl.suite.name})")
        else:
            a = pl.anchor.best_in[pl.suite.id]
            rel = "above" if pl.above else "below"
            tail = "" if pl.anchor is win else f", which ranks below {mid}"
            alts.append(f"{me} {scheme}: on {pl.suite.name}, {_cmp_text(pl.x, me, task)} ranks {rel} "
                        f"{_cmp_text(a, pl.anchor.plan.model.id, task)}{tail}")
    for e in incomparable:
        x = next(iter(e.best_in.values()))
        alts.append(f"{e.plan.model.id} {e.outcome.rec.scheme if e.outcome.rec else x.sp.id}: not compared with "
                    f"{mid}: {_cmp_text(x, e.plan.model.id, task)} ({acc.data().suites[x.m.suite].name}) shares no "
                    f"evaluation with the ranked models")
    for e in entries:
        if e.outcome.measured:
            continue
        if e.outcome.rec is not None:
            alts.append(f"{e.plan.model.id}: only schemes without a published {task} score fit "
                        f"({e.outcome.rec.scheme} would be its pick)")
        else:
            planned = [s for s in e.plan.schemes if s.memory is not None]
            if planned:
                smallest = min(planned, key=lambda s: s.size_bytes)
                alts.append(f"{e.plan.model.id}: nothing fits; the smallest, {need_text(smallest)}")
            else:
                alts.append(f"{e.plan.model.id}: memory not planned")
    return Recommendation(scheme=rec.scheme, reasons=reasons, alternatives=alts, model=mid)


# ----------------------------------------------------------------------------------------- plot data

@dataclass
class ParetoPoint:
    scheme: str
    device_bytes: int            # memory on the fullest device
    score: float                 # task score of the scheme's own measurement
    suite: str
    fits: bool
    on_front: bool = False       # no other point needs no more memory and scores higher


def pareto_points(plan: Plan, task: str = "general") -> list[ParetoPoint]:
    """Measured schemes of a plan as (memory on the fullest device, task score) points, sorted by memory,
    with the Pareto front marked. Scores of different suites are not comparable: the front is taken
    within the suite that measured the most schemes, and points of other suites are never on it."""
    acc.get_task(task)
    pts: list[ParetoPoint] = []
    for s in plan.schemes:
        d = _tightest(s)
        x = _scored(plan.model.id, s, task) if d is not None else None
        if x is None or d is None:
            continue
        pts.append(ParetoPoint(scheme=s.id, device_bytes=d.total_bytes, score=x.score, suite=x.m.suite,
                               fits=bool(s.fits)))
    if not pts:
        return pts
    suites = [p.suite for p in pts]
    main = max(set(suites), key=lambda su: (suites.count(su), -acc.data().suites[su].rank))
    same = [p for p in pts if p.suite == main]
    for p in same:
        p.on_front = not any(q is not p and q.device_bytes <= p.device_bytes and q.score > p.score for q in same)
    return sorted(pts, key=lambda p: p.device_bytes)
