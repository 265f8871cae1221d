"""Search the plan space: the largest context and the fewest devices on which a scheme still fits."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from planner.core.catalog import Hparams
from planner.core.llamacpp.memory import CTX_PAD, LayerWeights, MemoryOptions, Slot, plan_memory
from planner.core.plan import MemoryPlan, TensorPlan


def margin(m: MemoryPlan) -> int:
    """The bytes a plan has to spare: the least headroom of its devices and of the host when its RAM is
    known (negative: it does not fit; >= 0 exactly when MemoryPlan.fits)."""
    t = m.tightest
    least = t.headroom_bytes if t is not None else 0
    if m.host is not None and m.host.capacity_bytes > 0:
        least = min(least, m.host.headroom_bytes)
    return least


def largest_fitting(lo: int, hi: int, spare: Callable[[int], int]) -> int | None:
    """The largest x in [lo, hi] with spare(x) >= 0, for a spare that does not grow with x; None if even
    spare(lo) < 0.

    Exact like a bisection (the answer is checked on both sides: spare(x) >= 0 > spare(x + 1)), in fewer
    plans: memory grows (piecewise) linearly with the context and the layers moved, so the next probe is
    where the line through the bracket's two margins crosses zero, then its neighbour; a probe that does
    not halve the bracket is followed by a bisection step, so it takes at most three probes per halving
    (about 3 in all where the margin is linear near its zero, against 10 for a bisection of 640 steps).
    """
    s_hi = spare(hi)                # first: most plans fit at their largest context (one probe)
    if s_hi >= 0:
        return hi
    if lo == hi:
        return None
    s_lo = spare(lo)
    if s_lo < 0:
        return None
    bisect_next = False
    while hi - lo > 1:          # spare(lo) >= 0 > spare(hi)
        width = hi - lo
        if bisect_next:
            x = (lo + hi) // 2
        else:
            x = lo + (width * s_lo) // (s_lo - s_hi)
            x = min(max(x, lo + 1), hi - 1)
        s = spare(x)
        probe_next = not bisect_next
        if s >= 0:
            lo, s_lo = x, s
            if probe_next and hi - lo > 1:
                s = spare(lo + 1)
                if s >= 0:
                    lo, s_lo = lo + 1, s
                else:
                    hi, s_hi = lo + 1, s
        else:
            hi, s_hi = x, s
            if probe_next and hi - lo > 1:
                s = spare(hi - 1)
                if s < 0:
                    hi, s_hi = hi - 1, s
                else:
                    lo, s_lo = hi - 1, s
        bisect_next = (hi - lo) * 2 > width
    return lo


def max_context(hp: Hparams, tensors: list[TensorPlan], slots: list[Slot], opts: MemoryOptions,
                weights: LayerWeights | None = None) -> int:
    """Largest context (a multiple of 256, at most the training context) that fits; 0 if none does.

    KV and compute grow monotonically with the context, so a search over 256-cell steps is exact.
    """
    lw = weights or LayerWeights.of(hp, tensors)
    hi = max(hp.n_ctx_train, CTX_PAD) // CTX_PAD

    def spare(steps: int) -> int:
        return margin(plan_memory(hp, tensors, slots, replace(opts, ctx=steps * CTX_PAD), lw))

    return (largest_fitting(1, hi, spare) or 0) * CTX_PAD


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
    monotonic in N: a search over 0..n_layer (largest_fitting) finds the smallest N exactly; the host's use only
    grows with N, so if that N overflows the host's RAM every larger one does too.
    """
    lw = weights or LayerWeights.of(hp, tensors)

    def devices_spare(kept_on_devices: int) -> int:
        t = plan_memory(hp, tensors, slots, replace(opts, n_cpu_moe=hp.n_layer - kept_on_devices), lw).tightest
        return t.headroom_bytes if t is not None else 0

    if not hp.is_moe:
        return 0                          # no expert tensors: nothing to keep in host RAM
    # the most layers whose experts stay on the devices, i.e. the fewest moved to the host
    kept = largest_fitting(0, hp.n_layer, devices_spare)
    if kept is None:
        return None
    lo = hp.n_layer - kept
    return lo if plan_memory(hp, tensors, slots, replace(opts, n_cpu_moe=lo), lw).fits else None
