"""Score once, then rank: one scored view per (model, scheme, task), made the first time anything asks
and kept with the accuracy data it comes from; the recommendation, the deployments' ranking and the plan's
accuracy figures all read it instead of looking the measurements up again.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.core.accuracy import tables as acc
from planner.core.plan import Accuracy


@dataclass(frozen=True)
class SuiteScore:
    """A scheme's task score in one evaluation suite, with its table's baseline."""

    measurement: acc.Measurement
    score: float                       # task score in the measurement's suite
    baseline: acc.Measurement
    baseline_score: float | None
    benchmarks: list[str]              # the benchmarks that count towards the task score
    full_task: bool                    # every benchmark of the task was measured

    @property
    def share(self) -> float | None:
        """The score as a share of its table's baseline score (100 x score / baseline score)."""
        return 100.0 * self.score / self.baseline_score if self.baseline_score else None


@dataclass(frozen=True)
class SchemeScores:
    """What is measured of one scheme of one model for one task."""

    model: str
    scheme: str
    task: str
    measurements: tuple[acc.Measurement, ...]   # every rankable one, best suite first (with a task score or not)
    scored: tuple[SuiteScore, ...]             # those with a task score, best suite first
    accuracy: Accuracy | None                  # the plan's figure (acc.accuracy_for)
    proxy: acc.Proxy | None                    # a measured model's figure for an unmeasured one, never ranked

    @property
    def suites(self) -> list[str]:
        """The suites with a task score."""
        return [s.measurement.suite for s in self.scored]

    def best(self, suite: str | None = None) -> SuiteScore | None:
        """The score that speaks for the scheme: in the best-ranked suite, or in `suite`."""
        return next((s for s in self.scored if suite is None or s.measurement.suite == suite), None)


def scheme_scores(model_id: str, scheme_id: str, task: str = "general") -> SchemeScores:
    """The scored view of (model, scheme, task), made once per accuracy data (PlannerError for an unknown task)."""
    d = acc.data()
    key = (model_id, scheme_id, task)
    view = d.views.get(key)
    if view is None:
        view = d.views[key] = _make(model_id, scheme_id, task)
    return view


def _make(model_id: str, scheme_id: str, task: str) -> SchemeScores:
    weights = acc.get_task(task).weights
    ms = tuple(acc.measurements(model_id, scheme_id, rankable=True))
    scored = []
    for m in ms:
        s = acc.task_score(m, task)
        if s is None:
            continue
        base = acc.baseline_of(m)
        used = acc.task_benchmarks_used(m, task)
        scored.append(SuiteScore(m, s, base, acc.task_score(base, task), used, set(used) == set(weights)))
    accuracy = acc.accuracy_for(model_id, scheme_id, task)
    proxy = acc.proxy_for(model_id, scheme_id, task) if accuracy is None else None
    return SchemeScores(model_id, scheme_id, task, ms, tuple(scored), accuracy, proxy)
