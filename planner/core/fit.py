"""Search the plan space: the largest context and the fewest devices on which a scheme still fits."""

from __future__ import annotations

from dataclasses import replace

from planner.core.catalog import Hparams
from planner.core.memory import CTX_PAD, LayerWeights, MemoryOptions, Slot, plan_memory
from planner.core.plan import MemoryPlan, TensorPlan


def max_context(hp: Hparams, tensors: list[TensorPlan], slots: list[Slot], opts: MemoryOptions,
                weights: LayerWeights | None = None) -> int:
    """Largest context (a multiple of 256, at most the training context) that fits; 0 if none does.

    KV and compute grow monotonically with the context, so a binary search over 256-cell steps is exact.
    """
    lw = weights or LayerWeights.of(hp, tensors)
    hi = max(hp.n_ctx_train, CTX_PAD) // CTX_PAD
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if plan_memory(hp, tensors, slots, replace(opts, ctx=mid * CTX_PAD), lw).fits:
            lo = mid
        else:
            hi = mid - 1
    return lo * CTX_PAD


def fewest_devices(hp: Hparams, tensors: list[TensorPlan], slots: list[Slot], opts: MemoryOptions,
                   weights: LayerWeights | None = None, full: MemoryPlan | None = None) -> int | None:
    """Fewest of the given devices (taken in order, split evenly by free memory) that hold the plan."""
    if opts.tensor_overrides:
        # -ot names its devices: fewer of them is another run, not this plan with fewer devices
        return len(slots) if plan_memory(hp, tensors, slots, opts, weights).fits else None
    if opts.tensor_split is not None:
        opts = replace(opts, tensor_split=None)
    lw = weights or LayerWeights.of(hp, tensors)
    # lower bound: everything that must sit on the devices has to fit their summed free memory
    if full is None or opts.tensor_split is not None:
        full = plan_memory(hp, tensors, slots, opts, lw)
    need = sum(d.weights_bytes + d.kv_bytes for d in full.per_device)
    start = 1
    free = 0
    for start, s in enumerate(slots, 1):
        free += s.capacity_bytes - s.reserve_bytes
        if free >= need:
            break
    else:
        return None
    for n in range(start, len(slots) + 1):
        if plan_memory(hp, tensors, slots[:n], opts, lw).fits:
            return n
    return None


def fewest_cpu_moe(hp: Hparams, tensors: list[TensorPlan], slots: list[Slot], opts: MemoryOptions,
                   weights: LayerWeights | None = None) -> int | None:
    """--n-cpu-moe auto: the fewest leading layers whose expert tensors stay in host RAM for the plan to
    fit the devices (0: it fits as it is), then checked against the host's RAM when known; None when no
    count fits (not even every layer's experts on the host, or the host's RAM is too small for them).

    Each layer moved takes its experts off a device and adds them to the host, so the devices' fit is
    monotonic in N: a binary search over 0..n_layer finds the smallest N exactly; the host's use only
    grows with N, so if that N overflows the host's RAM every larger one does too.
    """
    lw = weights or LayerWeights.of(hp, tensors)

    def devices_fit(n: int) -> bool:
        m = plan_memory(hp, tensors, slots, replace(opts, n_cpu_moe=n), lw)
        return all(d.headroom_bytes >= 0 for d in m.per_device)

    if not hp.is_moe:
        return 0                          # no expert tensors: nothing to keep in host RAM
    lo, hi = 0, hp.n_layer
    if not devices_fit(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if devices_fit(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo if plan_memory(hp, tensors, slots, replace(opts, n_cpu_moe=lo), lw).fits else None
