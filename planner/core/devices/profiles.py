"""Device profiles (data, read by the core): one TOML per accelerator in profiles/hardware/, or a user's own file.

Schema (every figure cites its source in the file; unverified figures are listed in `unverified`):

    id = "h100"
    name = "NVIDIA H100 SXM 80GB"
    vendor = "nvidia"                 # nvidia | amd | huawei
    backend = "CUDA"                  # llama.cpp buffer prefix: CUDA | ROCm | CANN
    memory_bytes = 85520809984        # what the driver reports as total (nvidia-smi / NVML, npu-smi)
    reserve_bytes = 1409286144        # what one process cannot use: driver-reserved memory + its runtime
                                      # context (CUDA context and library workspaces, or CANN)
    context_bytes = 805306368         # optional: the part of reserve_bytes the serving process allocates
                                      # itself (still counted free by NVML/npu-smi before it starts);
                                      # default: reserve_bytes. Applied to detected free memory.
    bandwidth_gbs = 3350
    bf16_tflops = 989
    fp8_tflops = 1979                 # 0 when the device has no FP8 units
    devices_per_node = 8
    interconnect = "NVLink 4, 900 GB/s"
    match = ["NVIDIA H100 80GB HBM3"]   # NVML / npu-smi names that map to this profile (whole name,
                                        # case-insensitive, a leading "NVIDIA " optional)
    source = "..."
    unverified = ["bf16_tflops"]      # fields whose figure is not verified
    generic = false                   # optional: built from a detected device, not a datasheet
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from planner.core.data_files import load_shipped_and_user, read_toml
from planner.errors import PlannerError, valid_hint

_REQUIRED = ("id", "name", "vendor", "backend", "memory_bytes", "reserve_bytes", "devices_per_node", "source")
_NUMBERS = ("bandwidth_gbs", "bf16_tflops", "fp8_tflops")


@dataclass(frozen=True)
class DeviceProfile:
    id: str
    name: str
    vendor: str
    backend: str
    memory_bytes: int
    reserve_bytes: int
    devices_per_node: int
    source: str
    bandwidth_gbs: float = 0.0
    bf16_tflops: float = 0.0
    fp8_tflops: float = 0.0
    interconnect: str = ""
    match: tuple[str, ...] = ()
    unverified: tuple[str, ...] = ()
    notes: str = ""
    context_bytes: int | None = None
    generic: bool = False
    path: str = ""

    @property
    def usable_bytes(self) -> int:
        """What one process can allocate: total less the runtime reserve."""
        return self.memory_bytes - self.reserve_bytes

    @property
    def process_context_bytes(self) -> int:
        """The serving process's own runtime context (CUDA context + library workspaces, or CANN), which a
        device's currently free memory (NVML / npu-smi) does not yet account for."""
        return self.reserve_bytes if self.context_bytes is None else self.context_bytes

    @property
    def driver_reserved_bytes(self) -> int:
        """Memory the driver/firmware keeps that is never free (the reserve less the process context)."""
        return self.reserve_bytes - self.process_context_bytes

    @property
    def has_fp8(self) -> bool:
        return self.fp8_tflops > 0


def load_profile(path: Path) -> DeviceProfile:
    where = f"hardware profile {path}"
    data = read_toml(path, "hardware profile")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise PlannerError(f"{where}: missing {', '.join(missing)}")
    for k in ("memory_bytes", "reserve_bytes", "devices_per_node"):
        v = data[k]
        if isinstance(v, bool) or not isinstance(v, int) or not (0 if k == "reserve_bytes" else 1) <= v < 1 << 60:
            raise PlannerError(f"{where}: '{k}' must be a positive integer below 2^60, got {v!r}")
    if data["reserve_bytes"] >= data["memory_bytes"]:
        raise PlannerError(f"{where}: reserve_bytes must be smaller than memory_bytes")
    if "context_bytes" in data:
        v = data["context_bytes"]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= data["reserve_bytes"]:
            raise PlannerError(f"{where}: 'context_bytes' must be an integer from 0 to reserve_bytes, got {v!r}")
    for k in _NUMBERS:
        v = data.get(k, 0)
        # nan passes every comparison, so it is refused by name (strict JSON has no NaN, text shows "nan tok/s")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1e9:
            raise PlannerError(f"{where}: '{k}' must be a finite number from 0 to 1e9, got {v!r}")
    for k in ("id", "name", "vendor", "backend", "source"):
        if not isinstance(data[k], str) or not data[k]:
            raise PlannerError(f"{where}: '{k}' must be a non-empty string")
    for k in ("match", "unverified"):
        v = data.get(k, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise PlannerError(f"{where}: '{k}' must be a list of strings")
    known = {f for f in DeviceProfile.__dataclass_fields__} - {"path"}
    kw = {k: v for k, v in data.items() if k in known}
    for k in ("match", "unverified"):
        kw[k] = tuple(kw.get(k, ()))
    for k in _NUMBERS:
        kw[k] = float(kw.get(k, 0))
    kw["generic"] = bool(kw.get("generic", False))
    return DeviceProfile(**kw, path=str(path))


@lru_cache(maxsize=1)
def _profiles() -> tuple[dict[str, DeviceProfile], dict[str, PlannerError]]:
    # a broken user file: skipped, warned
    return load_shipped_and_user("hardware", load_profile, lambda prof: prof.id)


def profiles() -> dict[str, DeviceProfile]:
    return _profiles()[0]


profiles.cache_clear = _profiles.cache_clear  # type: ignore[attr-defined]


def resolve_device(spec: str) -> DeviceProfile:
    """A profile id, or the path of a user's own profile file."""
    profs = profiles()
    if spec in profs:
        return profs[spec]
    if spec.lower() in profs:
        return profs[spec.lower()]
    p = Path(spec)
    if p.suffix == ".toml" and (p.exists() or p.is_symlink()):
        return load_profile(p)
    broken = _profiles()[1]
    if spec in broken or spec.lower() in broken:    # the user's broken profile, asked for by name
        raise broken.get(spec) or broken[spec.lower()]
    raise PlannerError(f"unknown device '{spec}'; {valid_hint(spec, list(profs) + ['auto'])} "
                       "(or a profile .toml file)")
