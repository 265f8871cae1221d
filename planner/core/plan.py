"""The Plan: what the core computes and every renderer and engine consumes.

Flow: inputs (flags, TUI choices, detected hardware, GGUF headers) -> PlanRequest -> planner.make_plan()
-> Plan -> JSON / tables / TUI / plots / launch commands. Sizes are integer bytes throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class PlanRequest:
    """Everything a plan depends on; defaults are the interface's defaults."""

    model: str = "deepseek-r1"           # catalog id or a Hugging Face folder with config.json
    model_file: str | None = None        # a GGUF (first shard is enough): architecture and actual types
    schemes: list[str] | None = None     # None: every standard scheme of the engine plus the recipes
    engine: str = "llama.cpp"
    device: str | None = None            # profile id, "auto", or None (detected, else h100)
    device_file: str | None = None       # a user's own hardware profile (TOML)
    gpus: int | None = None              # devices per node; None: the profile's per-node count
    nodes: int = 1
    rpc: list[str] = field(default_factory=list)   # llama.cpp RPC devices HOST:PORT[=MEM]
    ctx: int = 32768
    kv_mode: str | None = None           # mla | mla-kv | legacy; None: mla, or legacy for legacy files
    layout: str | None = None            # mla | legacy; None follows kv_mode
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: str = "auto"             # on | off | auto
    parallel: int = 1
    ubatch: int = 512
    batch: int = 2048
    ngl: int | None = None               # None: all layers on the GPUs
    n_cpu_moe: int = 0
    tensor_split: list[float] | None = None
    task: str = "general"
    imatrix: bool | None = None          # None: assume an imatrix where the scheme needs one
    max_context: bool = False            # also search the largest context that fits
    # vLLM / SGLang options (None: the engine's default)
    gpu_memory_utilization: float | None = None
    mem_fraction_static: float | None = None
    dp_attention: bool = False
    head_address: str | None = None      # the first node's address in multi-node launch commands
    checkpoint: str | None = None        # a local checkpoint path instead of the published repository
    with_tensors: bool = False


@dataclass
class TensorPlan:
    name: str
    shape: tuple[int, ...]               # ggml order: ne0 (row length) first
    type: str                            # ggml_type_name of the planned type
    bytes: int
    src_type: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "type": self.type, "bytes": self.bytes}


@dataclass
class DeviceMemory:
    device: str                          # "CUDA0", "910B 3", "Host", "RPC[127.0.0.1:50052]"
    weights_bytes: int = 0
    kv_bytes: int = 0
    compute_bytes: int = 0
    overhead_bytes: int = 0              # runtime reserve (driver/CUDA or CANN context) + output buffer
    capacity_bytes: int = 0
    layers: list[int] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.overhead_bytes

    @property
    def headroom_bytes(self) -> int:
        return self.capacity_bytes - self.total_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "weights_bytes": self.weights_bytes,
            "kv_bytes": self.kv_bytes,
            "compute_bytes": self.compute_bytes,
            "overhead_bytes": self.overhead_bytes,
            "total_bytes": self.total_bytes,
            "capacity_bytes": self.capacity_bytes,
            "layers": self.layers,
        }


@dataclass
class MemoryPlan:
    kv_cache_bytes: int
    compute_bytes: int
    host_bytes: int                      # weights and buffers kept in host RAM
    per_device: list[DeviceMemory]
    host: DeviceMemory | None = None
    n_ctx: int = 0                       # context after llama.cpp's padding
    notes: list[str] = field(default_factory=list)
    fewest_devices: int | None = None    # fewest of the planned devices that hold it (None: not even all)
    max_context: int | None = None       # largest context that fits (with --max-context)
    max_sequences: int | None = None     # vLLM/SGLang: concurrent sequences of the full context

    @property
    def total_bytes(self) -> int:
        return sum(d.total_bytes for d in self.per_device) + self.host_bytes

    @property
    def fits(self) -> bool:
        """Every device within its capacity, and the host too when its RAM is known."""
        host = self.host
        host_ok = host is None or host.capacity_bytes <= 0 or host.headroom_bytes >= 0
        return host_ok and all(d.headroom_bytes >= 0 for d in self.per_device)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kv_cache_bytes": self.kv_cache_bytes,
            "compute_bytes": self.compute_bytes,
            "host_bytes": self.host_bytes,
            "total_bytes": self.total_bytes,
            "n_ctx": self.n_ctx,
            "fewest_devices": self.fewest_devices,
            "max_context": self.max_context,
            "max_sequences": self.max_sequences,
            "per_device": [d.to_dict() for d in self.per_device],
            "host": self.host.to_dict() if self.host else None,
            "notes": self.notes,
        }


@dataclass
class Accuracy:
    weighted_avg: float | None
    average: float | None
    drop_pct: float | None
    per_benchmark: dict[str, float]
    source: str
    baseline: str | None = None
    task_score: float | None = None      # the score used to rank for the requested --task

    def to_dict(self) -> dict[str, Any]:
        return {
            "weighted_avg": self.weighted_avg,
            "average": self.average,
            "drop_pct": self.drop_pct,
            "per_benchmark": self.per_benchmark,
            "source": self.source,
            "baseline": self.baseline,
            "task_score": self.task_score,
        }


@dataclass
class SchemePlan:
    id: str
    kind: str                            # "ftype" | "recipe" | "file" | engine format
    size_bytes: int
    params: int
    type_bytes: dict[str, int]
    tensors: list[TensorPlan]
    requires_imatrix: bool = False
    memory: MemoryPlan | None = None
    accuracy: Accuracy | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def bpw(self) -> float:
        return 8.0 * self.size_bytes / self.params if self.params else 0.0

    @property
    def fits(self) -> bool | None:
        if self.memory is None:
            return None
        return self.memory.fits

    @property
    def headroom_bytes(self) -> int | None:
        """Free bytes left on the fullest device (negative: over by that much)."""
        if self.memory is None or not self.memory.per_device:
            return None
        return min(d.headroom_bytes for d in self.memory.per_device)

    def to_dict(self, with_tensors: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "size_bytes": self.size_bytes,
            "bpw": round(self.bpw, 4),
            "type_bytes": dict(sorted(self.type_bytes.items())),
            "requires_imatrix": self.requires_imatrix,
        }
        if with_tensors:
            d["tensors"] = [t.to_dict() for t in self.tensors]
        d["memory"] = self.memory.to_dict() if self.memory else None
        d["fits"] = self.fits
        d["headroom_bytes"] = self.headroom_bytes
        d["accuracy"] = self.accuracy.to_dict() if self.accuracy else None
        d["notes"] = self.notes
        return d


@dataclass
class HardwareSummary:
    device: str
    gpus: int
    nodes: int
    memory_per_gpu_bytes: int
    source: str                          # "profile" | "detected"
    name: str = ""
    reserve_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "name": self.name,
            "gpus": self.gpus,
            "nodes": self.nodes,
            "memory_per_gpu_bytes": self.memory_per_gpu_bytes,
            "reserve_bytes": self.reserve_bytes,
            "source": self.source,
            "notes": self.notes,
        }


@dataclass
class Recommendation:
    scheme: str
    reasons: list[str]
    alternatives: list[str]
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"scheme": self.scheme, "reasons": self.reasons, "alternatives": self.alternatives}
        if self.model:
            d["model"] = self.model
        return d


@dataclass
class ModelSummary:
    id: str
    name: str
    architecture: str
    params: int
    layout: str | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "architecture": self.architecture,
            "params": self.params,
            "layout": self.layout,
            "source": self.source,
        }


@dataclass
class Plan:
    model: ModelSummary
    engine: str
    hardware: HardwareSummary | None
    context: int
    kv_mode: str | None
    schemes: list[SchemePlan]
    recommendation: Recommendation | None = None
    notes: list[str] = field(default_factory=list)

    def scheme(self, scheme_id: str) -> SchemePlan:
        for s in self.schemes:
            if s.id == scheme_id:
                return s
        raise KeyError(scheme_id)

    def to_dict(self, with_tensors: bool = False) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model.to_dict(),
            "engine": self.engine,
            "hardware": self.hardware.to_dict() if self.hardware else None,
            "context": self.context,
            "kv_mode": self.kv_mode,
            "schemes": [s.to_dict(with_tensors) for s in self.schemes],
            "recommendation": self.recommendation.to_dict() if self.recommendation else None,
            "notes": self.notes,
        }
