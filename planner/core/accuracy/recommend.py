"""Recommend the scheme (and, for --model auto, the model) that keeps the most measured accuracy within
the hardware's memory. The answer is data (planner.core.plan.Recommendation: ranked entries with their
figures, tie groups and why-not codes); planner.render.recommendation writes the sentences.

Rules, in order:

1. Candidates are the schemes that fit: on every device (and the host, when layers are offloaded)
   weights + KV cache + compute buffers + runtime reserve <= capacity (SchemePlan.fits).
2. Candidates with a published score for the task are ranked by it (planner.core.accuracy.tables: Table 8
   weights for `general`, the documented reweightings of tasks.toml otherwise).
   - If one evaluation suite measured every such candidate, their absolute scores in that suite are
     compared (the paper's nine-benchmark evaluation first): basis "suite".
   - Otherwise (e.g. FP8 measured by the paper, W4A16 only on a model card) each score is taken as a
     share of its own table's baseline (100 x score / baseline score) and those shares are compared:
     basis "share".
3. Ties: one rule, tie_points() (profiles/accuracy/ties.toml: 0.21, one standard error of the
   difference of two of the paper's weighted averages, derived from the printed ± std and the
   number of samples per question; derive_tie_points() recomputes it). Scores (or shares, in
   percentage points) no more than tie_points below the best form its tie group; within a group the
   most headroom on the tightest device wins, then the smaller file (fewer bytes to read per token).
   The next group starts at the best score left, and so on (tie_groups()).
4. A scheme without a published figure is never ranked against measured ones. Only when no measured
   scheme fits is an unmeasured one recommended (basis "unmeasured"): a scheme native to the release
   first (native_schemes: it keeps the precision the checkpoint was released in, so it loses nothing
   against the release; profiles/accuracy/release.toml), then the fitting scheme with the most bits
   per weight (then the most headroom). Bits beyond the release's own precision do not rank a scheme
   higher: they hold the released values rounded once more.
5. Nothing fits, or no memory was planned: no recommendation (None); no_fit() says why, as data.

Across models (--model auto, the paper's second question: full, distilled or quantized for given
hardware), models are compared only on absolute scores within one evaluation suite: first the
paper's (R1, V3, V3-0324, R1-Distill-Qwen-32B), then each model measured only elsewhere is placed
against the best-ranked model it shares a suite with. A model nothing connects to the ranking is
listed as not comparable rather than guessed at. If no model has a measured scheme that fits, the
largest model (parameters) with a fitting unmeasured scheme is named.

pareto_points() gives the accuracy-against-memory points (and the Pareto front) for --plot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

from planner.core.accuracy import tables as acc
from planner.core.accuracy.scores import SuiteScore, scheme_scores
from planner.core.data_files import read_toml
from planner.core.paths import profiles_dir
from planner.core.plan import (NoFit, Plan, RankedDeployment, RankedModel, RankedScheme, Recommendation, SchemePlan,
                                SlaDeployment)
from planner.errors import PlannerError

EPS = 1e-9


# ----------------------------------------------------------------------------------------- the tie rule

@lru_cache(maxsize=1)
def tie_rule() -> dict:
    """profiles/accuracy/ties.toml [tie]: points, basis, source."""
    path = profiles_dir() / "accuracy" / "ties.toml"
    d = read_toml(path, "tie rule").get("tie")
    if not isinstance(d, dict) or not isinstance(d.get("points"), (int, float)) or d["points"] < 0:
        raise PlannerError(f"tie rule {path}: needs [tie] points = a number >= 0")
    return dict(d)


def tie_points() -> float:
    """Two scores no more than this apart are a tie (score points, or percentage points of a share)."""
    return float(tie_rule()["points"])


def __getattr__(name: str):
    if name == "TIE_POINTS":                      # the old constant, now read from ties.toml
        return tie_points()
    raise AttributeError(name)


def tied(a: float, b: float, points: float | None = None) -> bool:
    return abs(a - b) <= (tie_points() if points is None else points) + EPS


def tie_groups(values: list[float], points: float | None = None) -> list[int]:
    """Group number (1 = the best) of each value: a group is every value left no more than `points`
    below the best value left."""
    groups = [0] * len(values)
    left = sorted(range(len(values)), key=lambda i: -values[i])
    g = 0
    while left:
        g += 1
        top = values[left[0]]
        here = [i for i in left if tied(values[i], top, points)]
        for i in here:
            groups[i] = g
        left = [i for i in left if i not in here]
    return groups


def derive_tie_points() -> float:
    """The tie figure from the paper's own spread: for every ranked paper column the standard error of
    its weighted average, sqrt(sum (w_b / sum w)^2 s_b^2 / n_b) with n_b samples per question (8 for
    AIME 2024, 4 for the other sampled benchmarks, section 4.2; single-pass benchmarks print no std);
    then the standard error of the difference of two columns, root mean square: sqrt(2 mean SE^2)."""
    weights = acc.task_weights("general")
    total = sum(weights.values())
    se2: list[float] = []
    for m in acc.data().measurements:
        if m.suite != "paper" or m.role == "reported":
            continue
        v = 0.0
        for b, s in m.stds.items():
            if b in weights:
                n = 8 if b == "aime2024" else 4
                v += (weights[b] / total) ** 2 * s * s / n
        se2.append(v)
    return math.sqrt(2 * sum(se2) / len(se2))


# ----------------------------------------------------------------------------------------- the release

@lru_cache(maxsize=1)
def release_rule() -> dict:
    """profiles/accuracy/release.toml [precision.<name>]: per precision of a release, the schemes of each
    engine native to it."""
    path = profiles_dir() / "accuracy" / "release.toml"
    d = read_toml(path, "release precision rule").get("precision")
    if not isinstance(d, dict) or not all(isinstance(v, dict) for v in d.values()):
        raise PlannerError(f"release precision rule {path}: needs [precision.<name>] tables")
    for name, row in d.items():
        for eng, ids in row.items():
            if eng != "description" and not (isinstance(ids, list) and all(isinstance(x, str) for x in ids)):
                raise PlannerError(f"release precision rule {path}: [precision.{name}] {eng} must be a list of scheme ids")
    return d


def native_schemes(model_id: str, engine: str) -> dict[str, str]:
    """The schemes of `engine` native to the model's release (its profile's release_precision: each
    precision's schemes in profiles/accuracy/release.toml), by upper-case id, each with what it keeps
    (the precisions' descriptions); empty for a model the catalog does not know."""
    from planner.core.catalog import catalog

    entry = catalog().get(model_id)
    if entry is None:
        return {}
    rule = release_rule()
    out: dict[str, list[str]] = {}
    for prec in entry.release_precision:
        if prec not in rule:
            raise PlannerError(f"model {model_id}: release precision '{prec}' is not in profiles/accuracy/release.toml")
        for x in rule[prec].get(engine, []):
            out.setdefault(x.upper(), []).append(str(rule[prec].get("description", prec)))
    return {k: "; ".join(v) for k, v in out.items()}


# ----------------------------------------------------------------------------------------- entries

@dataclass
class _Scored:
    """A scheme plan with the score that speaks for it (its scored view's, planner.core.accuracy.scores)."""

    sp: SchemePlan
    s: SuiteScore

    @property
    def m(self) -> acc.Measurement:
        return self.s.measurement

    @property
    def score(self) -> float:
        return self.s.score

    @property
    def base_score(self) -> float | None:
        return self.s.baseline_score

    @property
    def share(self) -> float | None:
        return self.s.share


def _scored(model_id: str, sp: SchemePlan, task: str, suite: str | None = None) -> _Scored | None:
    s = scheme_scores(*sp.accuracy_key(model_id), task).best(suite)
    return None if s is None else _Scored(sp, s)


def _suites_of(model_id: str, sp: SchemePlan, task: str) -> list[str]:
    return scheme_scores(*sp.accuracy_key(model_id), task).suites


def _measured(model_id: str, sp: SchemePlan, task: str) -> tuple[acc.Measurement, ...]:
    """Every rankable measurement of the scheme, with a task score or not (best suite first)."""
    return scheme_scores(*sp.accuracy_key(model_id), task).measurements


def _entry(sp: SchemePlan, task: str, x: _Scored | None = None, m: acc.Measurement | None = None,
           why_not: list[str] | None = None) -> RankedScheme:
    """A scheme's figures: memory on its tightest device, and its score when x is given (or only the
    measurement's source when m is given)."""
    e = RankedScheme(scheme=sp.id, why_not=list(why_not or []), fits=sp.fits, size_bytes=sp.size_bytes,
                     bpw=sp.bpw)
    d = sp.tightest_device
    if d is not None:
        e.device, e.device_total_bytes = d.device, d.total_bytes
        e.device_capacity_bytes, e.headroom_bytes = d.capacity_bytes, d.headroom_bytes
    h = sp.memory.host if sp.memory is not None else None
    if h is not None and h.capacity_bytes > 0 and h.headroom_bytes < 0:
        e.host_total_bytes, e.host_capacity_bytes = h.total_bytes, h.capacity_bytes
    m = x.m if x is not None else m
    if m is not None:
        e.suite, e.source, e.role = m.suite, m.source, m.role
    if x is not None:
        e.score, e.share_pct = x.score, x.share
        e.benchmarks, e.full_task = list(x.s.benchmarks), x.s.full_task
        e.baseline, e.baseline_score = acc.baseline_label(x.s.baseline), x.base_score
    return e


def _headroom(sp: SchemePlan) -> int:
    return sp.headroom_bytes or 0


WORKLOADS = ("latency", "throughput")


@dataclass(frozen=True)
class DeploymentFacts:
    """What the one ranking rule of deployments (deployment_order) reads of each: the recommendation's
    deployments (rank_deployments) and --compare's (planner.engines.compare) alike."""

    fits: bool
    score: float | None            # measured task score, or share of its table's baseline (None: unmeasured)
    host_in_path: bool             # weights in host RAM read for every token (llama.cpp's hybrid, --n-cpu-moe)
    decode_tps: float | None       # predicted decode tokens/s (None: not predicted)
    max_sequences: int | None      # concurrent full-context sequences (vLLM/SGLang; None: not known)
    weight_bytes: int


def deployment_order(facts: list[DeploymentFacts], workload: str = "latency") -> list[tuple[int, int]]:
    """The one ranking rule of deployments: (index into facts, tie group) in ranking order.

    1. those that fit first;
    2. then the measured score in tie groups (tie_groups: scores no more than tie_points apart are a tie),
       among those that fit and among those that do not; only when every deployment has a score (a
       missing score neither wins nor loses);
    3. then GPU-only before a hybrid deployment (host RAM in the token's path);
    4. with workload "throughput": then more concurrent full-context sequences;
    5. then the faster predicted decode (a deployment without a prediction last);
    6. then the smaller weights.
    The recommendation ranks with workload "latency" (one stream: the decode speed decides)."""
    if workload not in WORKLOADS:
        raise PlannerError(f"unknown workload '{workload}'; valid: {', '.join(WORKLOADS)}")
    all_known = all(f.score is not None for f in facts)
    group = [0] * len(facts)
    for fit in (True, False):
        same = [i for i, f in enumerate(facts) if f.fits == fit]
        if all_known:
            for i, g in zip(same, tie_groups([facts[i].score for i in same])):   # type: ignore[misc]
                group[i] = g

    def key(i: int):
        f = facts[i]
        seqs = -(f.max_sequences or 0) if workload == "throughput" else 0
        return not f.fits, group[i], f.host_in_path, seqs, -(f.decode_tps or 0.0), f.weight_bytes

    return [(i, group[i]) for i in sorted(range(len(facts)), key=key)]


def _rank_key(x: _Scored, by_share: bool) -> float:
    v = x.share if by_share else x.score
    return v if v is not None else float("-inf")


def _order(cands: list[_Scored], by_share: bool) -> list[tuple[_Scored, int]]:
    """Rule 3: the candidates in recommendation order, each with its tie group."""
    groups = tie_groups([_rank_key(c, by_share) for c in cands])
    idx = sorted(range(len(cands)), key=lambda i: (groups[i], -_headroom(cands[i].sp), cands[i].sp.size_bytes))
    return [(cands[i], groups[i]) for i in idx]


# ----------------------------------------------------------------------------------------- one model

@dataclass
class _Outcome:
    rec: Recommendation | None
    measured: bool                               # the pick has a published score


def _hardware(plan: Plan) -> tuple[str | None, int]:
    h = plan.hardware
    if h is None:
        return None, 0
    return h.name or h.device, h.gpus * max(h.nodes, 1)


def _extra_devices(plan: Plan, n: int) -> int:
    """Devices planned besides the GPUs x nodes of the hardware (llama.cpp RPC devices)."""
    planned = max((len(s.memory.per_device) for s in plan.schemes if s.memory is not None), default=0)
    return max(planned - n, 0)


def _recommend(plan: Plan, task: str) -> _Outcome:
    acc.get_task(task)
    model = plan.model.id
    planned = [s for s in plan.schemes if s.memory is not None]
    if not planned:
        return _Outcome(None, False)
    fits = [s for s in planned if s.fits]
    not_fit = sorted((s for s in planned if not s.fits), key=lambda s: -s.size_bytes)
    unplanned = [s for s in plan.schemes if s.memory is None]

    scored_fit: list[_Scored] = []
    unmeasured_fit: list[SchemePlan] = []
    untask_fit: list[tuple[SchemePlan, acc.Measurement]] = []
    for s in fits:
        x = _scored(model, s, task)
        if x is not None:
            scored_fit.append(x)
            continue
        ms = _measured(model, s, task)
        (untask_fit.append((s, ms[0])) if ms else unmeasured_fit.append(s))

    def no_score_code(s: SchemePlan) -> str:
        return "no_task_benchmark" if _measured(model, s, task) else "unmeasured"

    def tail(*, unscored_fit: bool) -> list[RankedScheme]:
        out = []
        for s in not_fit:
            x = _scored(model, s, task)
            if x is not None:
                out.append(_entry(s, task, x, why_not=["does_not_fit"]))
        if unscored_fit:
            out += [_entry(s, task, m=m, why_not=["no_task_benchmark"]) for s, m in untask_fit]
            out += [_entry(s, task, why_not=["unmeasured"])
                    for s in sorted(unmeasured_fit, key=lambda s: -s.size_bytes)]
        out += [_entry(s, task, why_not=[no_score_code(s), "does_not_fit"])
                for s in not_fit if _scored(model, s, task) is None]
        out += [_entry(s, task, why_not=["not_planned"]) for s in unplanned]
        return out

    name, n = _hardware(plan)
    base = dict(task=task, tie_points=tie_points(), model_name=plan.model.name, hardware=name, devices=n,
                rpc_devices=_extra_devices(plan, n))
    if scored_fit:
        common = set(_suites_of(model, scored_fit[0].sp, task))
        for x in scored_fit[1:]:
            common &= set(_suites_of(model, x.sp, task))
        ranked_suites = sorted(common, key=lambda s: acc.data().suites[s].rank)
        by_share = not ranked_suites
        suite = None
        if ranked_suites:
            suite = ranked_suites[0]
            scored_fit = [_scored(model, x.sp, task, suite) for x in scored_fit]  # type: ignore[misc]
        ordered = _order(scored_fit, by_share)
        win = ordered[0][0]
        ranked = []
        for i, (c, g) in enumerate(ordered):
            why: list[str] = []
            if i:
                if g > 1:
                    why = ["lower_score"]
                elif _headroom(c.sp) < _headroom(win.sp):
                    why = ["tied_less_headroom"]
                else:
                    why = ["tied_larger"]
            e = _entry(c.sp, task, c, why_not=why)
            e.rank, e.tie_group = i + 1, g
            ranked.append(e)
        rec = Recommendation(scheme=win.sp.id, basis="share" if by_share else "suite", suite=suite,
                             ranked=ranked, excluded=tail(unscored_fit=True), **base)
        return _Outcome(rec, True)

    fallback = [s for s, _ in untask_fit] + unmeasured_fit
    if not fallback:
        return _Outcome(None, False)
    native = native_schemes(model, plan.engine)
    order = sorted(fallback, key=lambda s: (s.id.upper() not in native, -s.bpw, -_headroom(s), s.size_bytes))
    ranked = []
    for i, s in enumerate(order):
        m = next(iter(_measured(model, s, task)), None)
        is_native = s.id.upper() in native
        if i == 0:
            why: list[str] = []
        elif order[0].id.upper() in native and not is_native:
            why = ["not_native", no_score_code(s)]
        else:
            why = ["fewer_bits", no_score_code(s)]
        e = _entry(s, task, m=m, why_not=why)
        e.rank, e.native = i + 1, native.get(s.id.upper(), "")
        ranked.append(e)
    measured_nofit = [s for s in not_fit if _scored(model, s, task) is not None]
    smallest = None
    if measured_nofit:
        s = min(measured_nofit, key=lambda s: s.size_bytes)
        smallest = _entry(s, task, _scored(model, s, task), why_not=["does_not_fit"])
    rec = Recommendation(scheme=order[0].id, basis="unmeasured", ranked=ranked,
                         excluded=tail(unscored_fit=False), smallest_measured=smallest, **base)
    return _Outcome(rec, False)


def recommend(plan: Plan, task: str = "general") -> Recommendation | None:
    """The scheme of `plan` to deploy for `task` (general|math|code|chinese), or None when no scheme
    fits or no memory was planned. Raises PlannerError for an unknown task.

    With deployments (planner.core.llamacpp.deployments: GPU-only and hybrid per scheme) the recommendation
    carries them ranked (rank_deployments); when no scheme fits the GPUs alone but hybrid deployments
    do, the schemes are ranked as those hybrid plans (placement "hybrid")."""
    rec = _recommend(plan, task).rec
    deps = rank_deployments(plan, task)
    if rec is not None and _planned_hybrid(plan, rec.scheme):
        rec.placement = "hybrid"         # the schemes are planned as their hybrid deployments (as_hybrid)
    if rec is None and any(e.placement == "hybrid" for e in deps):
        view = []
        for sp in plan.schemes:
            h = next((d for d in sp.deployments if d.placement == "hybrid" and d.usable and d.memory is not None), None)
            view.append(replace(sp, memory=h.memory, speed=h.speed, n_cpu_moe=h.n_cpu_moe) if h else sp)
        rec = _recommend(replace(plan, schemes=view), task).rec
        if rec is not None:
            rec.placement = "hybrid"
    if rec is not None:
        rec.deployments = deps
    return rec


def _planned_hybrid(plan: Plan, scheme_id: str) -> bool:
    """The scheme is planned as its hybrid deployment because no scheme fits the devices alone
    (planner.core.llamacpp.deployments.as_hybrid)."""
    sp = next((s for s in plan.schemes if s.id == scheme_id), None)
    if sp is None or not sp.n_cpu_moe:
        return False
    return not any(d.fits for s in plan.schemes for d in s.deployments if d.placement == "gpu")


def rank_deployments(plan: Plan, task: str = "general") -> list[RankedDeployment]:
    """Every deployment (scheme x placement) that fits (a hybrid one: with the host's RAM known, see
    Deployment.usable) and has a measured score for the task, ranked by deployment_order (the score in
    the evaluation suite every candidate scheme shares, else as a share of each table's baseline).
    --min-tps has already removed the deployments predicted slower (planner.core.build_plan)."""
    model = plan.model.id
    cands = []
    for sp in plan.schemes:
        fitting = [d for d in sp.deployments if d.usable]
        if not fitting:
            continue
        x = _scored(model, sp, task)
        if x is not None:
            cands.append((x, fitting))
    if not cands:
        return []
    common = set(_suites_of(model, cands[0][0].sp, task))
    for x, _ in cands[1:]:
        common &= set(_suites_of(model, x.sp, task))
    suites = sorted(common, key=lambda s: acc.data().suites[s].rank)
    by_share = not suites
    if suites:
        cands = [(_scored(model, x.sp, task, suites[0]), f) for x, f in cands]
    rows = [(x, d) for x, f in cands for d in f]
    facts = [DeploymentFacts(True, _rank_key(x, by_share), d.placement != "gpu",
                             d.speed.decode_tps if d.speed is not None else None, None, x.sp.size_bytes)
             for x, d in rows]
    out = []
    for rank, (i, group) in enumerate(deployment_order(facts), 1):
        x, d = rows[i]
        sp_ = d.speed
        out.append(RankedDeployment(rank=rank, scheme=x.sp.id, placement=d.placement, n_cpu_moe=d.n_cpu_moe,
                                    score=x.score, share_pct=x.share, tie_group=group,
                                    headroom_bytes=d.headroom_bytes, device=d.device, host_bytes=d.host_bytes,
                                    decode_tps=sp_.decode_tps if sp_ else None,
                                    prefill_tps=sp_.prefill_tps if sp_ else None,
                                    bound=sp_.bound if sp_ else None))
    return out


def no_fit_entries(plan: Plan, n: int = 3) -> list[RankedScheme]:
    """The smallest planned schemes (at most n), with the figures that show why they do not fit."""
    planned = sorted((s for s in plan.schemes if s.memory is not None), key=lambda s: s.size_bytes)[:n]
    return [_entry(s, "general", why_not=["does_not_fit"]) for s in planned]


def no_fit(plan: Plan) -> NoFit:
    """Why recommend() returns None on planned hardware, as data (planner.render.recommendation.no_fit_note
    words it)."""
    name, n = _hardware(plan)
    return NoFit(no_fit_entries(plan), name, n, _extra_devices(plan, n) if name else 0)


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
            out[suite.id] = _order(xs, False)[0][0]
    return out


def _beats(a: _Scored, b: _Scored) -> bool:
    """a ranks above b (same suite): higher beyond the tie, or tied with more headroom / a smaller file."""
    if not tied(a.score, b.score):
        return a.score > b.score
    return (-_headroom(a.sp), a.sp.size_bytes) < (-_headroom(b.sp), b.sp.size_bytes)


@dataclass
class _Placement:
    suite: acc.Suite
    x: _Scored                                    # this model's best fitting scheme in the suite
    anchor: _ModelEntry | None = None             # the ranked model it was compared with (later suites)
    above: bool = False


def recommend_across_models(plans: list[Plan], task: str = "general") -> Recommendation | None:
    """Which model and scheme to deploy on the plans' hardware (one plan per candidate model, same
    hardware and context), or None when no scheme of any model fits. Recommendation.model names it,
    Recommendation.models ranks the candidates."""
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

    def smallest(e: _ModelEntry) -> RankedScheme | None:
        planned = [s for s in e.plan.schemes if s.memory is not None]
        if not planned:
            return None
        return _entry(min(planned, key=lambda s: s.size_bytes), task, why_not=["does_not_fit"])

    def unranked(e: _ModelEntry, why: list[str]) -> RankedModel:
        m = RankedModel(model=e.plan.model.id, params=e.plan.model.params, why_not=why,
                        scheme=e.outcome.rec.scheme if e.outcome.rec else None)
        if e.outcome.rec is None:
            m.smallest = smallest(e)
        return m

    if not ranked:
        fallback = [e for e in entries if e.outcome.rec is not None]
        if not fallback:
            return None
        pick = max(fallback, key=lambda e: e.plan.model.params)
        models = [RankedModel(model=pick.plan.model.id, params=pick.plan.model.params, rank=1,
                              scheme=pick.outcome.rec.scheme)]  # type: ignore[union-attr]
        for e in entries:
            if e is not pick:
                models.append(unranked(e, ["smaller_model", "only_unmeasured"] if e.outcome.rec else
                                       ["nothing_fits"] if smallest(e) else ["not_planned"]))
        assert pick.outcome.rec is not None
        return replace(pick.outcome.rec, model=pick.plan.model.id, models=models, model_basis="largest_unmeasured")

    win = ranked[0]
    assert win.outcome.rec is not None
    models: list[RankedModel] = []
    for i, e in enumerate(ranked):
        pl = placed[id(e)]
        m = RankedModel(model=e.plan.model.id, params=e.plan.model.params, rank=i + 1,
                        scheme=e.outcome.rec.scheme if e.outcome.rec else pl.x.sp.id, suite=pl.suite.id,
                        best=_entry(pl.x.sp, task, pl.x))
        if pl.anchor is not None:
            m.anchor, m.above_anchor = pl.anchor.plan.model.id, pl.above
            a = pl.anchor.best_in[pl.suite.id]
            m.anchor_best = _entry(a.sp, task, a)
        if i:
            w = win.best_in.get(pl.suite.id)
            m.why_not = (["tied_less_headroom"] if pl.anchor is None and w is not None and tied(w.score, pl.x.score)
                         else ["lower_score"])
        models.append(m)
    for e in incomparable:
        x = next(iter(e.best_in.values()))
        m = unranked(e, ["not_comparable"])
        m.scheme = m.scheme or x.sp.id
        m.suite, m.best = x.m.suite, _entry(x.sp, task, x)
        models.append(m)
    for e in entries:
        if not e.outcome.measured:
            models.append(unranked(e, ["only_unmeasured"] if e.outcome.rec else
                                   ["nothing_fits"] if smallest(e) else ["not_planned"]))
    return replace(win.outcome.rec, model=win.plan.model.id, models=models,
                   model_basis="anchored" if placed[id(win)].anchor is not None else "suite")


# ----------------------------------------------------------------------------------------- plot data

@dataclass
class ParetoPoint:
    scheme: str
    device_bytes: int            # memory on the tightest device (SchemePlan.tightest_device)
    score: float                 # task score of the scheme's own measurement
    suite: str
    fits: bool
    on_front: bool = False       # no other point needs no more memory and scores higher


def pareto_points(plan: Plan, task: str = "general") -> list[ParetoPoint]:
    """Measured schemes of a plan as (memory on the tightest device, task score) points, sorted by memory,
    with the Pareto front marked. Scores of different suites are not comparable: the front is taken
    within the suite that measured the most schemes, and points of other suites are never on it."""
    acc.get_task(task)
    pts: list[ParetoPoint] = []
    for s in plan.schemes:
        d = s.tightest_device
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


# ----------------------------------------------------------------------------------------- service-level targets

def measured_score(model_id: str, sp: SchemePlan, task: str) -> tuple[float | None, float | None, str | None]:
    """(task score, share of its table's baseline in %, suite) of a scheme; Nones where unmeasured."""
    x = _scored(model_id, sp, task)
    return (None, None, None) if x is None else (x.score, x.share, x.m.suite)


def rank_sla(deployments: list[SlaDeployment], suites: list[str | None]) -> tuple[list[SlaDeployment], str]:
    """The one ranking rule of the service-level search (--ttft-ms / --tpot-ms), accuracy and throughput
    together:
    1. only deployments that meet the targets (a concurrency of at least one request whose predicted TTFT
       and TPOT are within them; planner.core.serving.throughput.sla_point) are ranked;
    2. measured accuracy first, in tie groups (tie_groups: scores no more than tie_points apart are a
       tie); the absolute score when every measured deployment was measured in one suite, else the share
       of its own table's baseline; an unmeasured format ranks after every measured one;
    3. within a tie group, more output tokens/s per GPU at the largest concurrency meeting the targets
       (the served load per GPU the operator pays for);
    4. then fewer GPUs, then the lower TTFT.
    Returns the ranked deployments (rank and tie_group set) and the basis ("suite" or "share")."""
    meet = [(d, s) for d, s in zip(deployments, suites) if d.meets]
    measured = [s for d, s in meet if d.score is not None]
    basis = "suite" if measured and len(set(measured)) == 1 else "share"
    vals = [(d.score if basis == "suite" else d.share_pct) for d, _ in meet]
    known = [i for i, v in enumerate(vals) if v is not None]
    groups = tie_groups([vals[i] for i in known])      # type: ignore[misc]
    group = {i: g for i, g in zip(known, groups)}
    unmeasured = (max(groups) + 1) if groups else 1
    order = sorted(range(len(meet)), key=lambda i: (group.get(i, unmeasured), -meet[i][0].output_tps_per_gpu,
                                                    meet[i][0].gpus_used, meet[i][0].point.ttft_s))
    out = []
    for r, i in enumerate(order, start=1):
        d = meet[i][0]
        d.rank, d.tie_group = r, group.get(i)
        out.append(d)
    return out, basis


def nearest_sla(deployments: list[SlaDeployment], ttft_ms: float | None, tpot_ms: float | None) -> SlaDeployment | None:
    """None meets the targets: the deployment that misses them by the smallest factor at one request
    (the larger of its TTFT / target and TPOT / target)."""
    def miss(d: SlaDeployment) -> float:
        p = d.single
        f = 0.0
        if ttft_ms:
            f = max(f, p.ttft_s * 1000.0 / ttft_ms)
        if tpot_ms:
            f = max(f, p.tpot_s * 1000.0 / tpot_ms)
        return f

    cands = [d for d in deployments if d.single is not None]
    return min(cands, key=lambda d: (miss(d), d.gpus_used)) if cands else None
