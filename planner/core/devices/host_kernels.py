"""The host as a measured device, as values: what planner/hardware/host.py's probes found on this machine.

`HostProbe` is the host's bandwidth and FLOPS (a float64 gemv and a float32 matmul) and, where llama.cpp's
own ggml CPU kernels were timed (planner/hardware/kernel_probe.py), `HostKernels`: per weight type its
decode streaming rate, per-row cost, prefill gemm rate and routed-expert (MUL_MAT_ID) rates, per attention
class the decode flash attention's cost per cached token, and llama.cpp's own fixed cost per layer and
token (planner/engines/llamacpp/overhead_probe.py). planner/core/llamacpp/speed.py reads these;
the core never measures: the hardware layer builds them (from_json: the probe's JSON) and hands them in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from planner.errors import PlannerError


@dataclass(frozen=True)
class TypeKernels:
    """One ggml weight type's kernels on the host (see planner/hardware/kernel_probe.py)."""

    decode_bytes_per_s: float            # a token's mat-vec, weight streamed from memory
    prefill_flops: float                 # weight FLOP/s of a ubatch's gemm
    row_seconds: float = 0.0             # the mat-vec's cost per weight row beyond its bytes
    repacked: bool = False               # the weight sat in the CPU_REPACK buffer (as llama.cpp puts it)
    expert_prefill_flops: float | None = None      # a ubatch through routed experts (MUL_MAT_ID)
    expert_decode_bytes_per_s: float | None = None  # one token through its routed experts (MUL_MAT_ID)
    prefill_src_seconds: float = 0.0     # a ubatch product's cost per src1 element beyond its FLOPs


@dataclass(frozen=True)
class AttentionCost:
    """Decode flash attention over the cache on the host, per query head and cached token: a fixed part
    (the online softmax) and a part per K + V dim (planner/hardware/kernel_probe.py ATTENTION_SHAPES)."""

    head_token_seconds: float
    dim_seconds: float

    def seconds(self, n_head: int, dims: int) -> float:
        """Seconds one cached token costs a layer of n_head query heads of dims K + V dims each."""
        return n_head * (self.head_token_seconds + self.dim_seconds * dims)


# the layer kinds whose fixed cost the host's llama.cpp is measured at (planner/engines/llamacpp/
# overhead_probe.py): attention class x FFN kind
LAYER_KINDS = ("mla_dense", "mla_moe", "gqa_dense")


@dataclass(frozen=True)
class HostKernels:
    threads: int
    types: dict[str, TypeKernels] = field(default_factory=dict)
    attention: dict[str, AttentionCost] = field(default_factory=dict)   # class ("mla", "gqa") -> cost
    # llama.cpp's fixed cost per decoded token and layer on this host beyond the weights' bytes (building
    # and scheduling the token's graph, dispatching its nodes), per LAYER_KINDS; and per token
    layer_seconds: dict[str, float] = field(default_factory=dict)
    token_seconds: float = 0.0

    def type(self, name: str) -> TypeKernels | None:
        """The type's kernels; f32 (norms, biases, router) as f16, the nearest measured float type."""
        k = self.types.get(name)
        if k is None and name == "f32":
            return self.types.get("f16")
        return k

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "HostKernels":
        """From the probe's JSON (python -m planner.hardware.kernel_probe, with the llama.cpp overhead
        probe's "layer_seconds" and "token_seconds" where measured)."""
        try:
            experts = data.get("experts") or {}
            expert_decode = data.get("expert_decode") or {}
            types = {}
            for t, v in data["kernels"].items():
                types[t] = TypeKernels(float(v["decode_bytes_per_s"]), float(v["prefill_flops"]),
                                       float(v.get("row_seconds", 0.0)), bool(v.get("repacked", False)),
                                       float(experts[t]) if t in experts else None,
                                       float(expert_decode[t]) if t in expert_decode else None,
                                       float(v.get("prefill_src_seconds", 0.0)))
            for k in types.values():
                if not (k.decode_bytes_per_s > 0 and k.prefill_flops > 0 and k.row_seconds >= 0
                        and k.prefill_src_seconds >= 0):
                    raise ValueError("a rate is not positive")
            attention = {c: AttentionCost(float(a["head_token_seconds"]), float(a["dim_seconds"]))
                         for c, a in (data.get("attention") or {}).items()}
            layers = {k: float(v) for k, v in (data.get("layer_seconds") or {}).items() if k in LAYER_KINDS}
            if any(v < 0 for v in layers.values()) or any(a.head_token_seconds < 0 or a.dim_seconds < 0
                                                          for a in attention.values()):
                raise ValueError("a cost is below 0")
            return cls(int(data["threads"]), types, attention, layers, max(0.0, float(data.get("token_seconds", 0.0))))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PlannerError(f"host kernel probe: bad or missing figure ({e})") from None

    def to_json(self) -> dict[str, Any]:
        return {"threads": self.threads,
                "kernels": {t: {"decode_bytes_per_s": k.decode_bytes_per_s, "prefill_flops": k.prefill_flops,
                                "row_seconds": k.row_seconds, "repacked": k.repacked,
                                "prefill_src_seconds": k.prefill_src_seconds}
                            for t, k in self.types.items()},
                "experts": {t: k.expert_prefill_flops for t, k in self.types.items()
                            if k.expert_prefill_flops is not None},
                "expert_decode": {t: k.expert_decode_bytes_per_s for t, k in self.types.items()
                                  if k.expert_decode_bytes_per_s is not None},
                "attention": {c: {"head_token_seconds": a.head_token_seconds, "dim_seconds": a.dim_seconds}
                              for c, a in self.attention.items()},
                "layer_seconds": dict(self.layer_seconds), "token_seconds": self.token_seconds}


@dataclass(frozen=True)
class HostProbe:
    """The host's measured figures (planner/hardware/host.py probe_host_speed)."""

    bandwidth_gbs: float                 # read bandwidth, a float64 gemv over 512 MiB
    tflops: float                        # float32 matmul
    kernels: HostKernels | None = None   # llama.cpp's ggml CPU kernels, where timed

    @classmethod
    def of(cls, value) -> "HostProbe":
        """A HostProbe as given: itself, or (GB/s, TFLOPS) as a data file writes it."""
        if isinstance(value, HostProbe):
            return value
        try:
            bw, tf = (float(x) for x in value)
        except (TypeError, ValueError):
            raise PlannerError(f"host probe: expected (GB/s, TFLOPS), got {value!r}") from None
        if not (bw > 0 and tf > 0):
            raise PlannerError(f"host probe: GB/s and TFLOPS must be more than 0, got {bw}, {tf}")
        return cls(bw, tf)
