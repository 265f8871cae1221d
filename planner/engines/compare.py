"""Compare deployments across engines: e.g. 2x8 H100 -> R1 FP8 on vLLM against 1x8 H100 -> DQ3_K_M on
llama.cpp. This is the memory/fit side plus the blog's single-stream vs throughput findings
(profiles/engines/findings.toml); accuracy comes from the plan (SchemePlan.accuracy) when it is known.

Ranking (documented, deliberately simple):
- deployments that fit come first;
- then the better accuracy, in tie groups (planner.core.accuracy.recommend.tie_groups: scores no more than
  tie_points apart, the paper's measurement noise, do not decide alone; only when every candidate's
  accuracy is known: a missing score neither wins nor loses);
- latency (single stream): fewer nodes (pipeline stages and cross-node links add per-token latency),
  then fewer weight bytes per GPU (decoding reads them for every token);
- throughput: more concurrent full-context sequences, then fewer nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from planner.core.data_files import read_toml
from planner.core.devices.profiles import DeviceProfile
from planner.core.paths import profiles_dir
from planner.core.plan import Plan, SchemePlan
from planner.core.accuracy.recommend import tie_groups
from planner.errors import PlannerError

WORKLOADS = ("latency", "throughput")


@lru_cache(maxsize=1)
def findings() -> tuple[str, list[dict]]:
    path = profiles_dir() / "engines" / "findings.toml"
    d = read_toml(path, "findings")
    return d["source"], list(d.get("finding", []))


@dataclass
class Candidate:
    """One deployment: an engine running one scheme/format of a model on gpus x nodes."""

    engine: str                       # an --engine id of planner.engines.registry
    model: str
    scheme: SchemePlan                # with memory filled
    device: str                       # hardware profile id
    gpus: int
    nodes: int = 1
    max_sequences: int | None = None  # concurrent full-context sequences, when known
    has_fp8: bool = True

    @property
    def label(self) -> str:
        return f"{self.nodes}x{self.gpus} {self.device} -> {self.model} {self.scheme.id} on {self.engine}"

    @property
    def accuracy(self) -> float | None:
        a = self.scheme.accuracy
        if a is None:
            return None
        return a.task_score if a.task_score is not None else a.weighted_avg

    @property
    def weights_per_gpu(self) -> int:
        m = self.scheme.memory
        return max((d.weights_bytes for d in m.per_device), default=0) if m else 0


@dataclass
class Ranked:
    candidate: Candidate
    rank: int
    fits: bool
    reasons: list[str] = field(default_factory=list)


def candidate(plan: Plan, device: DeviceProfile) -> Candidate:
    """The one scheme of a plan (made for one deployment) as a Candidate, with its concurrency."""
    sp = plan.schemes[0]
    hw = plan.hardware
    return Candidate(plan.engine, plan.model.id, sp, device.id, hw.gpus if hw else 0, hw.nodes if hw else 1,
                     sp.memory.max_sequences if sp.memory else None, has_fp8=device.has_fp8)


def _reasons(c: Candidate, workload: str) -> list[str]:
    out = []
    sp = c.scheme
    d = sp.tightest_device
    where = f"the tightest GPU ({d.device})" if d is not None else "the tightest GPU"
    if sp.fits:
        out.append(f"fits: {sp.headroom_bytes / 2**30:.1f} GiB free on {where}, "
                   f"{c.weights_per_gpu / 2**30:.1f} GiB of weights per GPU")
    else:
        out.append(f"does not fit: {-(sp.headroom_bytes or 0) / 2**30:.1f} GiB short on {where}")
    if c.max_sequences is not None:
        out.append(f"{c.max_sequences} concurrent full-context sequence(s)")
    if c.nodes > 1:
        out.append(f"spans {c.nodes} nodes: cross-node traffic on every token")
    if c.accuracy is not None:
        out.append(f"accuracy {c.accuracy:.2f}")
    src, fs = findings()
    for f in fs:
        if sp.id not in f.get("formats", []):
            continue
        if f.get("requires_fp8") and not c.has_fp8:
            out.append(f"{sp.id} needs FP8 units, which {c.device} lacks")
            continue
        if f["workload"] in (workload, "any"):
            out.append(f"{f['claim']} ({src})")
    return out


def compare_deployments(cands: list[Candidate], workload: str = "throughput") -> list[Ranked]:
    """Rank deployments for a workload (see the module docstring); the first is the pick."""
    if workload not in WORKLOADS:
        raise PlannerError(f"unknown workload '{workload}'; valid: {', '.join(WORKLOADS)}")

    all_known = all(c.accuracy is not None for c in cands)
    group: dict[int, int] = {}
    for fit in (True, False):
        same = [c for c in cands if bool(c.scheme.fits) == fit]
        groups = tie_groups([c.accuracy for c in same]) if all_known else [0] * len(same)  # type: ignore[misc]
        group.update({id(c): g for c, g in zip(same, groups)})

    def key(c: Candidate):
        acc = group[id(c)]
        fits = not bool(c.scheme.fits)
        if workload == "latency":
            return (fits, acc, c.nodes, c.weights_per_gpu)
        return (fits, acc, -(c.max_sequences or 0), c.nodes)

    ordered = sorted(cands, key=key)
    return [Ranked(c, i + 1, bool(c.scheme.fits), _reasons(c, workload)) for i, c in enumerate(ordered)]


__all__ = ["Candidate", "Ranked", "compare_deployments", "candidate", "findings"]
