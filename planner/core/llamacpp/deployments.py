"""Deployments of one llama.cpp scheme: GPU-only and hybrid (routed experts in host RAM).

For a mixture-of-experts model planned on GPUs there are two ways to run a scheme, and the
recommendation ranks both (planner.core.accuracy.recommend.rank_deployments):

  gpu     every layer's weights on the devices (--n-cpu-moe 0): the fastest, when it fits;
  hybrid  the routed experts of the first N layers in host RAM (--n-cpu-moe N), N the fewest that make
          the plan fit the devices (planner.core.llamacpp.fit.fewest_cpu_moe, which also checks the host's RAM);
          only when the GPU-only plan does not fit (with room on the GPUs, moving experts to the host
          only slows decoding: their bytes are then read at the host's bandwidth). Where the host's RAM
          is unknown (no --host-ram, planned for another machine) its host part is unchecked
          (host_ram_checked false) and the recommendation does not rank it (Deployment.usable).

Each carries its own memory verdict and predicted speed (planner.core.llamacpp.speed). A dense model, a plan
without GPUs, or one with tensor overrides (-ot), has the one placement its request asks for.
"""

from __future__ import annotations

from dataclasses import replace

from planner.core.llamacpp.fit import fewest_cpu_moe
from planner.core.llamacpp.memory import MemoryOptions, plan_memory
from planner.core.plan import Deployment, MemoryPlan, SchemePlan

GPU, HYBRID = "gpu", "hybrid"


def _entry(placement: str, n: int, mem: MemoryPlan, speed) -> Deployment:
    t = mem.tightest
    return Deployment(placement=placement, n_cpu_moe=n, fits=bool(mem.fits),
                      headroom_bytes=t.headroom_bytes if t is not None else None,
                      device=t.device if t is not None else None, host_bytes=mem.host_bytes, speed=speed,
                      memory=mem, host_ram_checked=mem.host is not None and mem.host.capacity_bytes > 0)


def scheme_deployments(hp, sp: SchemePlan, slots, opts: MemoryOptions, weights, predict) -> list[Deployment]:
    """The GPU-only and (where needed) hybrid deployments of a planned scheme (sp.memory / sp.speed are
    the request's own placement, planned with `opts`). predict(scheme_plan, opts) -> Speed | None."""
    if sp.memory is None or not hp.is_moe or not any(d.layers for d in sp.memory.per_device):
        return []
    if opts.tensor_overrides:
        return []      # -ot names every tensor's place: the plan is that placement, no other is ranked
    own_n = sp.n_cpu_moe if sp.n_cpu_moe is not None else opts.n_cpu_moe
    out: list[Deployment] = []
    if own_n == 0:
        gpu = _entry(GPU, 0, sp.memory, sp.speed)
    else:
        o0 = replace(opts, n_cpu_moe=0)
        m0 = plan_memory(hp, sp.tensors, slots, o0, weights)
        gpu = _entry(GPU, 0, m0, predict(replace(sp, memory=m0), o0))
    out.append(gpu)
    if gpu.fits:
        return out
    if own_n > 0 and sp.memory.fits:
        out.append(_entry(HYBRID, own_n, sp.memory, sp.speed))
        return out
    n = fewest_cpu_moe(hp, sp.tensors, slots, replace(opts, n_cpu_moe=0), weights)
    if n is None:
        n = hp.n_layer                   # every layer's experts on the host: still no fit, shown as such
    oh = replace(opts, n_cpu_moe=n)
    mh = plan_memory(hp, sp.tensors, slots, oh, weights)
    out.append(_entry(HYBRID, n, mh, predict(replace(sp, memory=mh), oh)))
    return out


def as_hybrid(schemes: list[SchemePlan]) -> list[SchemePlan]:
    """When no scheme fits the devices alone, each scheme with a usable hybrid deployment is planned as
    that deployment: its memory, speed and --n-cpu-moe become the hybrid's, so that the tables, the JSON,
    the recommendation and the launch command describe the deployment that would run (the GPU-only
    placement stays in sp.deployments, labelled "gpu"). Returns the schemes changed.

    For a request that leaves the placement open (no --n-cpu-moe, no -ot): the GPU-only placement is
    the plan while anything fits it."""
    if any(sp.memory is not None and sp.memory.fits for sp in schemes):
        return []
    out = []
    for sp in schemes:
        h = next((d for d in sp.deployments if d.placement == HYBRID and d.usable and d.memory is not None), None)
        if h is None:
            continue
        sp.memory, sp.speed, sp.n_cpu_moe = h.memory, h.speed, h.n_cpu_moe
        sp.notes.append(f"planned as its hybrid deployment (--n-cpu-moe {h.n_cpu_moe}): "
                        "no scheme fits the devices alone")
        out.append(sp)
    return out


def drop_slow(schemes: list[SchemePlan], min_tps: float) -> list[str]:
    """--min-tps on deployments: those predicted to decode slower are removed; returns what was dropped."""
    dropped = []
    for sp in schemes:
        keep = []
        for d in sp.deployments:
            if d.speed is not None and d.speed.decode_tps < min_tps:
                dropped.append(f"{sp.id} {d.placement} ({d.speed.decode_tps:.1f} tok/s predicted)")
            else:
                keep.append(d)
        sp.deployments = keep
    return dropped
