"""A stand-in for the `pynvml` module, serving NVML values captured on real machines (tests/fixtures/nvml/).

Only the module boundary is replaced: planner.hardware.nvml imports `pynvml` and calls the same functions
with the same arguments as on a real machine. Errors are pynvml's own classes (NVMLError(code) builds the
NVMLError_<Name> subclass), constants are pynvml's own.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pynvml as real

FIXTURES = Path(__file__).parent / "fixtures" / "nvml"
MiB = 1 << 20


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


class _Handle:
    def __init__(self, gpu: int, mig: int | None = None):
        self.gpu, self.mig = gpu, mig


def _raise(code: int):
    raise real.NVMLError(code)


def make(data: dict | None, *, init_error: int | None = None, fail: dict[str, int] | None = None,
         calls: list[str] | None = None) -> types.ModuleType:
    """A fake pynvml serving `data`. `init_error`: nvmlInit raises NVMLError(code). `fail`: function name ->
    error code raised on every call. `calls`: receives the names of the functions called."""
    m = types.ModuleType("pynvml")
    for k in dir(real):
        if k.startswith(("NVMLError", "NVML_")) or k in ("nvmlMemory_v2", "nvmlExceptionClass"):
            setattr(m, k, getattr(real, k))
    fail = dict(fail or {})
    devs = (data or {}).get("devices", [])

    def api(fn):
        def wrapper(*a, **kw):
            if calls is not None:
                calls.append(fn.__name__)
            if fn.__name__ in fail:
                _raise(fail[fn.__name__])
            return fn(*a, **kw)
        wrapper.__name__ = fn.__name__
        setattr(m, fn.__name__, wrapper)
        return wrapper

    def dev(h: _Handle) -> dict:
        d = devs[h.gpu]
        return d if h.mig is None else d["mig_devices"][h.mig]

    @api
    def nvmlInit():
        if init_error is not None:
            _raise(init_error)

    @api
    def nvmlShutdown():
        pass

    @api
    def nvmlSystemGetDriverVersion():
        return data["driver_version"]

    @api
    def nvmlSystemGetCudaDriverVersion():
        return data["cuda_driver_version"]

    @api
    def nvmlDeviceGetCount():
        return len(devs)

    @api
    def nvmlDeviceGetHandleByIndex(index):
        if not 0 <= index < len(devs):
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    @api
    def nvmlDeviceGetName(h):
        return dev(h)["name"]

    @api
    def nvmlDeviceGetUUID(h):
        return dev(h)["uuid"]

    @api
    def nvmlDeviceGetPciInfo(h):
        bus = dev(h).get("pci_bus_id")
        if h.mig is not None or bus is None:
            _raise(real.NVML_ERROR_NOT_SUPPORTED)
        return types.SimpleNamespace(busId=bus.encode())          # a c_char array reads as bytes

    @api
    def nvmlDeviceGetMemoryInfo(h, version=None):
        mem = dev(h)["memory_mib"]
        total, free = mem["total"] * MiB, mem["free"] * MiB
        if version:
            if version != real.nvmlMemory_v2 or mem.get("reserved") is None:
                _raise(real.NVML_ERROR_NOT_SUPPORTED)
            return types.SimpleNamespace(version=version, total=total, reserved=mem["reserved"] * MiB,
                                         free=free, used=mem["used"] * MiB)
        return types.SimpleNamespace(total=total, free=free, used=total - free)

    @api
    def nvmlDeviceGetCudaComputeCapability(h):
        return tuple(dev(h)["compute_capability"])

    @api
    def nvmlDeviceGetMigMode(h):
        mode = dev(h).get("mig_mode")
        if mode == "NOT_SUPPORTED" or h.mig is not None:
            _raise(real.NVML_ERROR_NOT_SUPPORTED)
        return list(mode)

    @api
    def nvmlDeviceGetMaxMigDeviceCount(h):
        return dev(h).get("max_mig_devices", 0)

    @api
    def nvmlDeviceGetMigDeviceHandleByIndex(h, index):
        migs = dev(h).get("mig_devices", [])
        if index >= dev(h).get("max_mig_devices", 0):
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        if index >= len(migs):
            _raise(real.NVML_ERROR_NOT_FOUND)
        return _Handle(h.gpu, index)

    @api
    def nvmlDeviceGetGpuInstanceId(h):
        return dev(h)["gpu_instance_id"]

    @api
    def nvmlDeviceGetComputeInstanceId(h):
        return dev(h)["compute_instance_id"]

    @api
    def nvmlDeviceGetNvLinkState(h, link):
        n = dev(h).get("nvlink_links", 0)
        if n == 0:
            _raise(real.NVML_ERROR_NOT_SUPPORTED)
        if link >= n:
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        return real.NVML_FEATURE_ENABLED

    @api
    def nvmlDeviceGetP2PStatus(h1, h2, index):
        p2p = data.get("p2p", {})
        key = "nvlink" if index == real.NVML_P2P_CAPS_INDEX_NVLINK else "read"
        status = p2p.get(key, "NOT_SUPPORTED")
        return getattr(real, f"NVML_P2P_STATUS_{status}")

    return m


def install(monkeypatch, module: types.ModuleType) -> None:
    """Put `module` where `import pynvml` finds it and make planner.hardware.nvml initialise afresh."""
    from planner.hardware import detect, nvml

    monkeypatch.setitem(sys.modules, "pynvml", module)
    nvml._STATE.clear()
    detect.detect_hardware.cache_clear()
    monkeypatch.setattr(nvml, "atexit", types.SimpleNamespace(register=lambda f: None))
