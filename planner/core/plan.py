"""The Plan: what the core computes and every renderer and engine consumes.

Flow: inputs (flags, TUI choices, detected hardware, GGUF headers) -> PlanRequest -> planner.make_plan()
-> Plan -> JSON / tables / TUI / plots / launch commands. Sizes are integer bytes throughout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from planner.core.devices.host_kernels import HostProbe

SCHEMA_VERSION = 1


@dataclass
class PlanRequest:
    """Everything a plan depends on; defaults are the interface's defaults."""

    model: str = "deepseek-r1"           # catalog id or a Hugging Face folder with config.json
    model_file: str | None = None        # a GGUF (first shard is enough): architecture and actual types
    quant: str | None = None             # with a hf:// or ms:// repository as model_file: the GGUF set's name
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
    kv_unified: bool = False             # llama.cpp --kv-unified: the -np slots share one cache of ctx cells
    ubatch: int = 512
    batch: int = 2048
    ngl: int | None = None               # None: all layers on the GPUs
    n_cpu_moe: int | str = 0             # or "auto": the fewest expert layers in host RAM that make it fit
    tensor_split: list[float] | None = None
    tensor_overrides: list[str] = field(default_factory=list)   # llama.cpp -ot PATTERN=BUFFER, first match wins
    main_gpu: int = 0                    # llama.cpp -mg
    split_mode: str = "layer"            # llama.cpp -sm: layer | none
    op_offload: bool = True              # llama.cpp's op offload (--no-op-offload turns it off)
    task: str = "general"
    imatrix: bool | None = None          # None: assume an imatrix where the scheme needs one
    max_context: bool = False            # also search the largest context that fits
    # vLLM / SGLang options (None: the engine's default)
    gpu_memory_utilization: float | None = None
    mem_fraction_static: float | None = None
    dp_attention: bool = False
    ep_moe: bool = False                 # SGLang expert parallelism (--enable-ep-moe, EP size = TP size)
    head_address: str | None = None      # the first node's address in multi-node launch commands
    checkpoint: str | None = None        # a local checkpoint path instead of the published repository
    max_num_seqs: int | None = None      # vLLM --max-num-seqs / SGLang --max-running-requests
    with_tensors: bool = False
    # speed (planner/core/llamacpp/speed.py): the workload and the host as a device
    prompt: int = 512                    # prefill tokens (also the prompt tokens of each served request)
    depth: int = 0                       # cached tokens before the decoded one
    min_tps: float | None = None         # drop plans predicted to decode slower
    host_ram: float | None = None        # GiB of host RAM (None: detected when planning for this machine)
    host_bandwidth: float | None = None  # GB/s peak of the host's memory (None: probe or profile)
    host_probe: HostProbe | tuple[float, float] | None = None   # measured here (filled by planning),
                                                                # or (GB/s, TFLOPS) as given
    # serving (SchemePlan.serving): requests in flight, tokens each generates, service-level targets
    concurrency: int = 1
    gen_tokens: int = 256
    ttft_ms: float | None = None         # time to first token target (None: no target)
    tpot_ms: float | None = None         # time per output token target (None: no target)


@dataclass(slots=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]               # ggml order: ne0 (row length) first
    type: str                            # ggml_type_name of the planned type
    bytes: int
    src_type: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "type": self.type, "bytes": self.bytes}


class TensorPlans(Sequence):
    """A scheme's TensorPlan rows, made when first read. Planning reads the sums that sizing keeps beside
    them (SchemePlan.weights_by_layer, tensor_groups); the rows are for the tensor tables, `--tensors`,
    the TUI and quantize's checks, so a plan of 35 schemes of R1 does not build 40,000 of them."""

    __slots__ = ("_names", "_shapes", "_types", "_bytes", "_src", "_rows")

    def __init__(self, names: Sequence[str], shapes: Sequence[tuple[int, ...]], types: list[str],
                 sizes: list[int], src_types: list[str]) -> None:
        self._names, self._shapes, self._types, self._bytes, self._src = names, shapes, types, sizes, src_types
        self._rows: list[TensorPlan] | None = None

    def _made(self) -> list[TensorPlan]:
        if self._rows is None:
            self._rows = [TensorPlan(n, s, t, b, st) for n, s, t, b, st in
                          zip(self._names, self._shapes, self._types, self._bytes, self._src)]
        return self._rows

    def __len__(self) -> int:
        return len(self._types)

    @property
    def names(self) -> Sequence[str]:
        """The tensors' names, without making the rows."""
        return self._names

    def __getitem__(self, i):
        if self._rows is None and isinstance(i, int):     # one row: made alone
            return TensorPlan(self._names[i], self._shapes[i], self._types[i], self._bytes[i], self._src[i])
        return self._made()[i]

    def __iter__(self):
        return iter(self._made())

    def __eq__(self, other) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"TensorPlans({len(self)} tensors)"

    def __reduce__(self):
        return TensorPlans, (list(self._names), list(self._shapes), self._types, self._bytes, self._src)


@dataclass(slots=True)
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
        w, k, c, o = self.weights_bytes, self.kv_bytes, self.compute_bytes, self.overhead_bytes
        return {"device": self.device, "weights_bytes": w, "kv_bytes": k, "compute_bytes": c, "overhead_bytes": o,
                "total_bytes": w + k + c + o, "capacity_bytes": self.capacity_bytes, "layers": self.layers}


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

    # A MemoryPlan is complete when built (planner.core.llamacpp.memory and serving_plan fill the devices before
    # they make it): its two verdicts are computed once, as recommendations ask for them many times.
    @cached_property
    def tightest(self) -> DeviceMemory | None:
        """The device with the least headroom (the first of them on a tie): the one that decides whether
        the plan fits and whose free memory every table, sentence and plot reports. The host is not a
        device here (its RAM is checked separately by `fits`)."""
        best, least = None, 0
        for d in self.per_device:          # one pass, no property calls: plans have up to 384 devices
            h = d.capacity_bytes - (d.weights_bytes + d.kv_bytes + d.compute_bytes + d.overhead_bytes)
            if best is None or h < least:
                best, least = d, h
        return best

    @cached_property
    def fits(self) -> bool:
        """Every device within its capacity, and the host too when its RAM is known."""
        host = self.host
        if host is not None and host.capacity_bytes > 0 and host.headroom_bytes < 0:
            return False
        for d in self.per_device:
            if d.weights_bytes + d.kv_bytes + d.compute_bytes + d.overhead_bytes > d.capacity_bytes:
                return False
        return True

    def to_dict(self, per_device: bool = True) -> dict[str, Any]:
        """per_device False: the summary --model auto's candidates carry (every figure but the device
        rows, and the row of the tightest device with the number of devices)."""
        # once per plan: models of one layout share their memory plans (--model auto), and a plan has up
        # to 384 device rows
        doc = self.__dict__.get("_doc")
        if doc is None:
            doc = self.__dict__["_doc"] = self._to_dict()
        if per_device:
            return doc
        out = {k: v for k, v in doc.items() if k != "per_device"}
        t = self.tightest
        out["devices"] = len(self.per_device)
        out["tightest"] = t.to_dict() if t is not None else None
        return out

    def _to_dict(self) -> dict[str, Any]:
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
class ServingPoint:
    """One operating point of a served deployment: `concurrency` requests in flight, each of the plan's
    prompt and generated tokens (PlanRequest.prompt, gen_tokens)."""

    concurrency: int
    ttft_s: float                        # time to first token of a request (queueing and prefill)
    tpot_s: float                        # time per output token after the first
    output_tps: float                    # generated tokens/s of all requests together
    requests_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "ttft_s": _r(self.ttft_s), "tpot_s": _r(self.tpot_s),
                "output_tps": _r(self.output_tps), "requests_per_s": _r(self.requests_per_s)}


@dataclass
class Saturation:
    """The sustainable load for the plan's lengths: the concurrency beyond which the request rate no
    longer grows (KV capacity or compute bound), with its request rate and output tokens/s."""

    concurrency: int
    requests_per_s: float
    output_tps: float

    def to_dict(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "requests_per_s": _r(self.requests_per_s),
                "output_tps": _r(self.output_tps)}


@dataclass
class Serving:
    """How a scheme serves requests (JSON schemes[].serving): the figures at the requested concurrency,
    the KV-bound maximum concurrency for these lengths, the saturation point, and the curve (concurrency
    1, 2, 4, ... up to max_concurrency; in the JSON as "curve") that plots per-user tokens/s (1 / tpot_s)
    against output tokens/s per GPU (output_tps / gpus)."""

    concurrency: int
    prompt_tokens: int
    gen_tokens: int
    ttft_s: float
    tpot_s: float
    output_tps: float
    requests_per_s: float
    max_concurrency: int                 # KV-bound, for these lengths
    saturation: Saturation
    curve: list[ServingPoint] = field(default_factory=list)
    gpus: int = 1                        # GPUs the deployment uses (for figures per GPU)
    bound: str | None = None             # what limits the step at the requested concurrency (a short label)
    sla: ServingPoint | None = None      # with --ttft-ms/--tpot-ms: the largest concurrency meeting both
                                         # (None: no targets, or not even one request meets them)

    @property
    def output_tps_per_gpu(self) -> float:
        return self.output_tps / max(1, self.gpus)

    def to_dict(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "prompt_tokens": self.prompt_tokens,
                "gen_tokens": self.gen_tokens, "ttft_s": _r(self.ttft_s), "tpot_s": _r(self.tpot_s),
                "output_tps": _r(self.output_tps), "requests_per_s": _r(self.requests_per_s),
                "max_concurrency": self.max_concurrency, "saturation": self.saturation.to_dict(),
                "gpus": self.gpus, "bound": self.bound,
                "sla": self.sla.to_dict() if self.sla is not None else None,
                "curve": [p.to_dict() for p in self.curve]}


def _r(x: float) -> float:
    """Serving figures in the JSON: 6 significant digits."""
    return float(f"{x:.6g}")


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
    speed: Any = None                    # planner.core.llamacpp.speed.Speed (None: not predicted)
    # sums of the tensors made with them by sizing (None: summed from `tensors` where needed):
    weights_by_layer: Any = None         # planner.core.llamacpp.memory.LayerWeights
    tensor_groups: Any = None            # planner.core.llamacpp.speed: ((layer, routed expert, type), (bytes, elements, rows, row lengths))
    n_cpu_moe: int | None = None         # --n-cpu-moe auto: the layers this plan keeps in host RAM
    deployments: list[Deployment] = field(default_factory=list)   # GPU-only / hybrid (planner.core.llamacpp.deployments)
    serving: Serving | None = None       # under concurrency (None: not predicted for this engine or plan)
    # a GGUF file whose tensors and types are exactly a catalog scheme's: (catalog model id, scheme id),
    # whose measured accuracy it carries (planner.core.llamacpp.file_schemes)
    measured_as: tuple[str, str] | None = None

    def accuracy_key(self, model_id: str) -> tuple[str, str]:
        """(model, scheme) of the accuracy measurements that speak for this scheme of `model_id`."""
        return self.measured_as or (model_id, self.id)

    @property
    def bpw(self) -> float:
        return 8.0 * self.size_bytes / self.params if self.params else 0.0

    @property
    def fits(self) -> bool | None:
        if self.memory is None:
            return None
        return self.memory.fits

    @property
    def tightest_device(self) -> DeviceMemory | None:
        """MemoryPlan.tightest: the device with the least headroom (None: memory not planned)."""
        return self.memory.tightest if self.memory is not None else None

    @property
    def headroom_bytes(self) -> int | None:
        """Free bytes left on the tightest device (negative: over by that much)."""
        d = self.tightest_device
        return d.headroom_bytes if d is not None else None

    def to_dict(self, with_tensors: bool = False, per_device: bool = True) -> dict[str, Any]:
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
        d["memory"] = self.memory.to_dict(per_device) if self.memory else None
        d["fits"] = self.fits
        d["headroom_bytes"] = self.headroom_bytes
        d["accuracy"] = self.accuracy.to_dict() if self.accuracy else None
        d["notes"] = self.notes
        if self.speed is not None:
            d["speed"] = self.speed.to_dict()
        d["serving"] = self.serving.to_dict() if self.serving is not None else None
        if self.n_cpu_moe is not None:
            d["n_cpu_moe"] = self.n_cpu_moe
        if self.deployments:
            d["deployments"] = [x.to_dict() for x in self.deployments]
        return d


@dataclass
class Deployment:
    """One way to run a scheme (planner.core.llamacpp.deployments): "gpu" (every layer's weights on the devices)
    or "hybrid" (the routed experts of the first n_cpu_moe layers in host RAM, --n-cpu-moe N)."""

    placement: str                       # "gpu" | "hybrid"
    n_cpu_moe: int
    fits: bool
    headroom_bytes: int | None           # on the tightest device (negative: over by that much)
    device: str | None                   # the tightest device
    host_bytes: int = 0                  # host RAM the plan uses (experts, token_embd, host buffers)
    speed: Any = None                    # planner.core.llamacpp.speed.Speed (None: not predicted)
    memory: Any = field(default=None, repr=False, compare=False)   # its MemoryPlan (not in the JSON)
    host_ram_checked: bool = True        # False: host RAM unknown (no --host-ram, not this machine), so
                                         # the host part of the plan was not checked

    @property
    def usable(self) -> bool:
        """Fits, and a hybrid's host part is known to fit too: what the recommendation may rank. A hybrid
        deployment holds most of the model in host RAM, so an unknown host RAM leaves it unverified."""
        return self.fits and (self.placement != "hybrid" or self.host_ram_checked)

    def to_dict(self) -> dict[str, Any]:
        return {"placement": self.placement, "n_cpu_moe": self.n_cpu_moe, "fits": self.fits,
                "host_ram_checked": self.host_ram_checked,
                "headroom_bytes": self.headroom_bytes, "device": self.device, "host_bytes": self.host_bytes,
                "speed": self.speed.to_dict() if self.speed is not None else None}


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


# Why a scheme is not the recommendation (RankedScheme.why_not; renderers turn these into sentences):
WHY_NOT_SCHEME = {
    "tied_less_headroom": "its score ties the pick's (within tie_points) but it leaves less headroom",
    "tied_larger": "its score ties the pick's with equal headroom, but its file is larger",
    "lower_score": "it fits and is measured, but scores below the pick (beyond tie_points)",
    "does_not_fit": "it does not fit the devices (or the host's RAM)",
    "no_task_benchmark": "it is measured, but not on any benchmark of the requested task",
    "unmeasured": "no published accuracy exists for it",
    "fewer_bits": "no measured scheme fits, and it has fewer bits per weight than the pick",
    "not_native": "no measured scheme fits, and the pick keeps the release's own precision, which it does not",
    "not_planned": "its memory was not planned",
}
# Why a model is not the recommendation (RankedModel.why_not, --model auto):
WHY_NOT_MODEL = {
    "lower_score": "its best fitting measured scheme scores below the pick's (one evaluation suite)",
    "tied_less_headroom": "its score ties the pick's; the pick has more headroom or a smaller file",
    "not_comparable": "it shares no evaluation suite with the ranked models",
    "only_unmeasured": "only schemes without a published score for the task fit",
    "nothing_fits": "none of its schemes fits",
    "not_planned": "its memory was not planned",
    "smaller_model": "no model has a measured scheme that fits, and it has fewer parameters than the pick",
}


@dataclass
class RankedScheme:
    """One scheme as the recommendation saw it: its figures, its place and why it is not the pick.

    Memory figures are those of the tightest device (SchemePlan.tightest_device). The score is the
    task score in `suite` (None: no score for the task); `share_pct` is 100 x score / baseline_score.
    """

    scheme: str
    rank: int | None = None              # 1: the recommendation, then in order; None: not ranked
    why_not: list[str] = field(default_factory=list)    # codes of WHY_NOT_SCHEME
    tie_group: int | None = None         # ranked only: 1 = within tie_points of the best, 2 = the next...
    fits: bool | None = None
    size_bytes: int = 0
    bpw: float = 0.0
    device: str | None = None            # the tightest device
    device_total_bytes: int | None = None
    device_capacity_bytes: int | None = None
    headroom_bytes: int | None = None    # on that device (negative: over by that much)
    host_total_bytes: int | None = None  # only when the host's RAM is over its capacity
    host_capacity_bytes: int | None = None
    score: float | None = None
    share_pct: float | None = None
    benchmarks: list[str] = field(default_factory=list)  # the benchmarks that made the score
    full_task: bool = False              # every benchmark of the task is among them
    suite: str | None = None             # evaluation suite of the measurement
    source: str | None = None            # its table ("arXiv 2505.02390 Table 2 (README Table 2)")
    role: str | None = None              # baseline | quantized
    baseline: str | None = None          # the baseline column ("FP8 (Official API)")
    baseline_score: float | None = None  # the baseline's task score in the same table
    native: str = ""                     # the release precision it keeps ("": none; recommend.native_schemes)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, why_not=list(self.why_not), benchmarks=list(self.benchmarks))


@dataclass
class RankedModel:
    """--model auto: one candidate model, where it was placed and against what."""

    model: str
    params: int = 0
    rank: int | None = None              # 1: the recommended model; None: not ranked
    why_not: list[str] = field(default_factory=list)    # codes of WHY_NOT_MODEL
    scheme: str | None = None            # the model's own recommendation (None: nothing fits)
    suite: str | None = None             # the suite it was ranked or placed in
    best: RankedScheme | None = None     # its best fitting measured scheme there (the compared figure)
    anchor: str | None = None            # placed against this ranked model (a later suite)
    anchor_best: RankedScheme | None = None
    above_anchor: bool | None = None
    smallest: RankedScheme | None = None  # nothing fits: its smallest planned scheme

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__, why_not=list(self.why_not))
        for k in ("best", "anchor_best", "smallest"):
            d[k] = d[k].to_dict() if d[k] is not None else None
        return d


@dataclass
class Recommendation:
    """What planner.core.accuracy.recommend decided, as data; planner.render.recommendation writes the sentences.

    basis: "suite" (absolute task scores in one evaluation suite), "share" (each score as a share of
    its own table's baseline) or "unmeasured" (no measured scheme fits: a scheme native to the release
    first, then the fitting scheme with the most bits per weight). `ranked` holds the ranked schemes in order (the pick first), `excluded` the
    others of the plan with their why_not codes. For --model auto, `model` names the model, `models`
    ranks the candidates and the other fields are the chosen model's own recommendation.
    """

    scheme: str
    model: str | None = None
    task: str = "general"
    basis: str = "suite"
    suite: str | None = None
    tie_points: float = 0.0
    ranked: list[RankedScheme] = field(default_factory=list)
    excluded: list[RankedScheme] = field(default_factory=list)
    model_name: str = ""
    hardware: str | None = None          # device name (None: no hardware planned)
    devices: int = 0                     # GPUs x nodes
    rpc_devices: int = 0                 # llama.cpp RPC devices planned besides them
    smallest_measured: RankedScheme | None = None   # basis "unmeasured": the smallest measured scheme
    models: list[RankedModel] = field(default_factory=list)
    model_basis: str | None = None       # --model auto: "suite" | "anchored" | "largest_unmeasured"
    # every fitting (scheme, placement) with a measured score, ranked (planner.core.accuracy.recommend.rank_deployments)
    deployments: list[RankedDeployment] = field(default_factory=list)
    # "hybrid" when no scheme fits the GPUs alone and the schemes were ranked as hybrid deployments
    placement: str | None = None

    @property
    def pick(self) -> RankedScheme | None:
        return self.ranked[0] if self.ranked else None

    def entry(self, scheme_id: str) -> RankedScheme | None:
        return next((e for e in self.ranked + self.excluded if e.scheme == scheme_id), None)

    def to_dict(self) -> dict[str, Any]:
        """The data only; planner.render.json_doc adds the interface's "reasons" and "alternatives"."""
        d: dict[str, Any] = {"scheme": self.scheme}
        if self.model:
            d["model"] = self.model
        d.update({
            "task": self.task,
            "basis": self.basis,
            "suite": self.suite,
            "tie_points": self.tie_points,
            "ranked": [e.to_dict() for e in self.ranked],
            "excluded": [e.to_dict() for e in self.excluded],
        })
        if self.smallest_measured is not None:
            d["smallest_measured"] = self.smallest_measured.to_dict()
        if self.models:
            d["model_basis"] = self.model_basis
            d["models"] = [m.to_dict() for m in self.models]
        if self.deployments:
            d["deployments"] = [x.to_dict() for x in self.deployments]
        if self.placement:
            d["placement"] = self.placement
        return d


@dataclass
class RankedDeployment:
    """A (scheme, placement) that fits, as the deployment ranking saw it: rank 1 first; by measured
    score (tie groups as for schemes), then the GPU-only placement before the hybrid one, then speed."""

    rank: int
    scheme: str
    placement: str                       # "gpu" | "hybrid"
    n_cpu_moe: int
    score: float | None
    share_pct: float | None
    tie_group: int | None
    headroom_bytes: int | None
    device: str | None
    host_bytes: int
    decode_tps: float | None
    prefill_tps: float | None
    bound: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "scheme": self.scheme, "placement": self.placement, "n_cpu_moe": self.n_cpu_moe,
                "score": self.score, "share_pct": self.share_pct, "tie_group": self.tie_group,
                "headroom_bytes": self.headroom_bytes, "device": self.device, "host_bytes": self.host_bytes,
                "decode_tps": None if self.decode_tps is None else round(self.decode_tps, 3),
                "prefill_tps": None if self.prefill_tps is None else round(self.prefill_tps, 3),
                "bound": self.bound}


@dataclass
class SlaDeployment:
    """One deployment the service-level search considered (planner.make_plan.sla_search; ranked by
    planner.core.accuracy.recommend.rank_sla): an engine, a format, the GPUs, and its serving figures."""

    engine: str
    scheme: str
    gpus: int                            # per node, as planned
    nodes: int
    layout: str                          # "TP 8", "TP 4 x PP 2", "TP 8, DP attention 8"
    gpus_used: int                       # the GPUs one server of it uses (figures per GPU divide by these)
    dp_attention: bool = False
    ep: bool = False                     # expert parallelism
    point: ServingPoint | None = None    # the largest concurrency meeting the targets (None: none meets)
    single: ServingPoint | None = None   # one request alone (what it reaches at best)
    max_concurrency: int = 0
    score: float | None = None           # measured accuracy (the ranking's basis: score or share)
    share_pct: float | None = None
    tie_group: int | None = None
    rank: int | None = None

    @property
    def meets(self) -> bool:
        return self.point is not None

    @property
    def output_tps_per_gpu(self) -> float:
        return self.point.output_tps / max(1, self.gpus_used) if self.point is not None else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "engine": self.engine, "scheme": self.scheme, "gpus": self.gpus,
                "nodes": self.nodes, "layout": self.layout, "gpus_used": self.gpus_used,
                "dp_attention": self.dp_attention, "ep": self.ep, "meets": self.meets,
                "output_tps_per_gpu": _r(self.output_tps_per_gpu),
                "point": self.point.to_dict() if self.point else None,
                "single": self.single.to_dict() if self.single else None,
                "max_concurrency": self.max_concurrency, "score": self.score, "share_pct": self.share_pct,
                "tie_group": self.tie_group}


@dataclass
class SlaSearch:
    """--ttft-ms / --tpot-ms: the deployments that meet the targets, ranked (rank_sla), or the nearest one."""

    ttft_ms: float | None
    tpot_ms: float | None
    ranked: list[SlaDeployment]          # those that meet the targets, best first
    nearest: SlaDeployment | None = None  # none meets: the one that misses by the smallest factor
    considered: int = 0                  # deployments planned (fitting ones)
    basis: str = "share"                 # accuracy compared as "suite" scores or "share" of the baseline

    @property
    def pick(self) -> SlaDeployment | None:
        return self.ranked[0] if self.ranked else None

    def to_dict(self) -> dict[str, Any]:
        return {"ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "basis": self.basis,
                "considered": self.considered, "ranked": [d.to_dict() for d in self.ranked],
                "nearest": self.nearest.to_dict() if self.nearest else None}


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
class NoFit:
    """Why nothing is recommended on the planned hardware: the smallest planned schemes (at most 3) with
    the figures that show why they do not fit (none: no memory was planned). A note of the plan, worded by
    planner.render.recommendation (no_fit_note)."""

    entries: list[RankedScheme]
    hardware: str | None                 # device name
    devices: int                         # GPUs x nodes
    rpc_devices: int                     # llama.cpp RPC devices planned besides them


@dataclass
class Plan:
    model: ModelSummary
    engine: str
    hardware: HardwareSummary | None
    context: int
    kv_mode: str | None
    schemes: list[SchemePlan]
    recommendation: Recommendation | None = None
    notes: list[str] = field(default_factory=list)   # renderers add the no-fit note (plan_notes)
    no_fit: NoFit | None = None
    sla: SlaSearch | None = None         # with --ttft-ms / --tpot-ms

    def scheme(self, scheme_id: str) -> SchemePlan:
        for s in self.schemes:
            if s.id == scheme_id:
                return s
        raise KeyError(scheme_id)

    def to_dict(self, with_tensors: bool = False, per_device: bool = True) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model.to_dict(),
            "engine": self.engine,
            "hardware": self.hardware.to_dict() if self.hardware else None,
            "context": self.context,
            "kv_mode": self.kv_mode,
            "schemes": [s.to_dict(with_tensors, per_device) for s in self.schemes],
            "recommendation": self.recommendation.to_dict() if self.recommendation else None,
            "notes": self.notes,
        } | ({"sla": self.sla.to_dict()} if self.sla is not None else {})
