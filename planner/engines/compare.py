"""Compare deployments across engines: e.g. 2x8 H100 -> R1 FP8 on vLLM against 1x8 H100 -> DQ3_K_M on
llama.cpp. This is the memory/fit side plus the blog's single-stream vs throughput findings
(profiles/engines/findings.toml); accuracy comes from the plan (SchemePlan.accuracy) when it is known.

Ranking: the recommendation's one rule for deployments (planner.core.accuracy.recommend.deployment_order:
fits, measured accuracy in tie groups, GPU-only before host RAM in the token's path, for throughput the
concurrent sequences, the faster predicted decode, the smaller weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from planner.core.accuracy.recommend import WORKLOADS, DeploymentFacts, deployment_order
from planner.core.data_files import read_toml
from planner.core.devices.profiles import DeviceProfile
from planner.core.paths import profiles_dir
from planner.core.plan import Plan, SchemePlan
from planner.errors import PlannerError

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
    host_in_path: bool = False        # routed experts in host RAM (llama.cpp --n-cpu-moe), read for every token

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


def candidate(plan: Plan, device: DeviceProfile, n_cpu_moe: int | str = 0) -> Candidate:
    """The one scheme of a plan (made for one deployment, with the request's --n-cpu-moe) as a Candidate,
    with its concurrency."""
    sp = plan.schemes[0]
    hw = plan.hardware
    layers = sp.n_cpu_moe if sp.n_cpu_moe is not None else (0 if n_cpu_moe == "auto" else n_cpu_moe)
    return Candidate(plan.engine, plan.model.id, sp, device.id, hw.gpus if hw else 0, hw.nodes if hw else 1,
                     sp.memory.max_sequences if sp.memory else None, has_fp8=device.has_fp8,
                     host_in_path=bool(layers) and bool(sp.deployments))


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
            # the plan's own note (planner.core.serving.plan_formats.weight_only_fp8), not the FP8 claim
            out += [n for n in sp.notes if n.startswith("no FP8 units")] or [
                f"no FP8 units on {c.device}: the FP8 compute gains do not apply"]
            continue
        if f["workload"] in (workload, "any"):
            out.append(f"{f['claim']} ({src})")
    return out


def compare_deployments(cands: list[Candidate], workload: str = "throughput") -> list[Ranked]:
    """Rank deployments for a workload (deployment_order); the first is the pick."""
    facts = [DeploymentFacts(bool(c.scheme.fits), c.accuracy, c.host_in_path,
                             c.scheme.speed.decode_tps if c.scheme.speed is not None else None,
                             c.max_sequences, c.scheme.size_bytes) for c in cands]
    order = deployment_order(facts, workload)
    return [Ranked(cands[i], n, bool(cands[i].scheme.fits), _reasons(cands[i], workload))
            for n, (i, _) in enumerate(order, 1)]


__all__ = ["Candidate", "Ranked", "compare_deployments", "candidate", "findings"]
