"""NVIDIA GPUs through NVML (nvidia-ml-py, imported as `pynvml`).

NVML is imported and initialised lazily, once per process; every NVML failure (library not found, driver not
loaded, driver/library version mismatch, no permission, a call the driver does not have, a lost GPU) ends up
as a one-line reason in the report, never as a traceback. Per GPU: NVML index (PCI bus order), name, UUID,
PCI bus id, memory total/free/used (and the driver-reserved part where NVML's v2 memory call exists),
compute capability, MIG mode with its MIG devices, active NVLink links; per pair of whole GPUs: NVLink or
PCIe peer-to-peer. `cuda_visible()` applies CUDA_VISIBLE_DEVICES as the CUDA runtime does.

Memory figures are NVML's: `free` already excludes the driver-reserved memory and whatever other processes
hold, but not the CUDA context the serving process will create (see DeviceProfile.process_context_bytes).
"""

from __future__ import annotations

import atexit
import glob
import importlib
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

_STATE: dict[str, Any] = {}          # "module": the initialised pynvml, or "error": why NVML is unusable


def reset() -> None:
    """Forget the NVML state (a later query imports and initialises again)."""
    mod = _STATE.get("module")
    if mod is not None:
        try:
            mod.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down a library that may be half-loaded
            pass
    _STATE.clear()


@dataclass
class MigDevice:
    index: int                       # MIG device index on its parent GPU
    name: str
    uuid: str
    memory_total_bytes: int
    memory_free_bytes: int
    memory_used_bytes: int
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


@dataclass
class NvidiaGpu:
    index: int                       # NVML index (PCI bus order)
    name: str
    uuid: str = ""
    pci_bus_id: str = ""             # "0000:18:00.0" (sysfs form)
    memory_total_bytes: int = 0
    memory_free_bytes: int = 0
    memory_used_bytes: int = 0
    memory_reserved_bytes: int | None = None   # driver-reserved (NVML v2 memory info), None when unknown
    compute_capability: tuple[int, int] | None = None
    mig_enabled: bool = False
    mig_devices: list[MigDevice] = field(default_factory=list)
    nvlink_links: int | None = None  # active NVLink links; None: the GPU has no NVLink
    error: str | None = None         # set when the GPU could not be queried (not planned on)


@dataclass
class GpuLink:
    a: int                           # NVML indices, a < b
    b: int
    kind: str                        # "NVLink" | "PCIe P2P"


@dataclass
class NvmlReport:
    available: bool = False
    error: str | None = None         # why no GPU is listed (library missing, driver not loaded, ...)
    driver_version: str = ""
    cuda_driver_version: str = ""    # "12.7": the newest CUDA the driver supports
    gpus: list[NvidiaGpu] = field(default_factory=list)
    links: list[GpuLink] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _reason(nv: Any, e: BaseException) -> str:
    """One line for an NVML error, by its code (the exception classes are generated per code by pynvml)."""
    value = getattr(e, "value", None)
    known = {
        getattr(nv, "NVML_ERROR_LIBRARY_NOT_FOUND", -1): "NVIDIA driver library (libnvidia-ml.so.1) not found",
        getattr(nv, "NVML_ERROR_DRIVER_NOT_LOADED", -1): "NVIDIA kernel driver not loaded",
        getattr(nv, "NVML_ERROR_LIB_RM_VERSION_MISMATCH", -1):
            "NVML library and NVIDIA kernel driver versions differ (reload the driver or reboot)",
        getattr(nv, "NVML_ERROR_NO_PERMISSION", -1): "no permission to query the NVIDIA driver",
        getattr(nv, "NVML_ERROR_FUNCTION_NOT_FOUND", -1): "call not provided by this NVIDIA driver (too old)",
        getattr(nv, "NVML_ERROR_NOT_SUPPORTED", -1): "not supported",
        getattr(nv, "NVML_ERROR_GPU_IS_LOST", -1): "GPU is lost (fell off the bus)",
        getattr(nv, "NVML_ERROR_UNINITIALIZED", -1): "NVML not initialised",
        getattr(nv, "NVML_ERROR_TIMEOUT", -1): "NVML call timed out",
    }
    if value in known:
        return known[value]
    try:
        text = str(e)
    except Exception:  # noqa: BLE001 - NVMLError.__str__ may itself call into the library
        text = ""
    return f"NVML error {value}: {text}" if value is not None else f"{type(e).__name__}: {text}"


def driver_present() -> bool:
    """Whether an NVIDIA driver can be there at all. On Linux the driver always creates /dev/nvidiactl (also
    inside containers given a GPU) and /proc/driver/nvidia; WSL exposes /dev/dxg. Elsewhere: assume yes."""
    if not sys.platform.startswith("linux"):
        return True
    return (os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/dxg")
            or bool(glob.glob("/dev/nvidia[0-9]*")))


def _module() -> tuple[Any, str | None]:
    """The initialised pynvml module, or (None, reason). Imports and calls nvmlInit once per process.

    Without any trace of an NVIDIA driver the import (about 20 ms) is skipped, unless pynvml is loaded already.
    """
    if "module" in _STATE or "error" in _STATE:
        return _STATE.get("module"), _STATE.get("error")
    if "pynvml" not in sys.modules and not driver_present():
        _STATE["error"] = "no NVIDIA driver (no /dev/nvidiactl, /proc/driver/nvidia or /dev/dxg)"
        return None, _STATE["error"]
    try:
        nv = importlib.import_module("pynvml")
    except ImportError:
        _STATE["error"] = "nvidia-ml-py (pynvml) is not installed"
        return None, _STATE["error"]
    try:
        nv.nvmlInit()
    except nv.NVMLError as e:
        _STATE["error"] = _reason(nv, e)
        return None, _STATE["error"]
    except Exception as e:  # noqa: BLE001 - ctypes/OS failures while loading the library
        _STATE["error"] = f"NVML could not be initialised ({type(e).__name__}: {e})"
        return None, _STATE["error"]
    _STATE["module"] = nv
    atexit.register(reset)
    return nv, None


def _s(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, (bytes, bytearray)) else str(v)


def _sysfs_bus_id(bus_id: str) -> str:
    """NVML "00000000:18:00.0" -> sysfs "0000:18:00.0" (lower case, 4-digit domain)."""
    m = re.fullmatch(r"([0-9A-Fa-f]+):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])", bus_id.strip())
    if not m:
        return bus_id.strip().lower()
    return f"{int(m.group(1), 16):04x}:{m.group(2).lower()}:{m.group(3).lower()}.{m.group(4)}"


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}" if v else ""


def _memory(nv: Any, h: Any) -> tuple[int, int, int, int | None]:
    """(total, free, used, reserved-or-None). NVML v2 reports the driver-reserved part; v1 folds it into used."""
    v2 = getattr(nv, "nvmlMemory_v2", None)
    if v2 is not None:
        try:
            m = nv.nvmlDeviceGetMemoryInfo(h, version=v2)
            return int(m.total), int(m.free), int(m.total) - int(m.free), int(m.reserved)
        except (nv.NVMLError, TypeError, AttributeError):
            pass
    m = nv.nvmlDeviceGetMemoryInfo(h)
    return int(m.total), int(m.free), int(m.used), None


def _nvlink_links(nv: Any, h: Any) -> int | None:
    count, active = 0, 0
    for link in range(int(getattr(nv, "NVML_NVLINK_MAX_LINKS", 18))):
        try:
            state = nv.nvmlDeviceGetNvLinkState(h, link)
        except nv.NVMLError:
            break                            # no NVLink at all (link 0), or past the last link
        count += 1
        active += 1 if int(state) else 0
    return active if count else None


def _mig_devices(nv: Any, h: Any, notes: list[str], index: int) -> list[MigDevice]:
    out: list[MigDevice] = []
    try:
        n = int(nv.nvmlDeviceGetMaxMigDeviceCount(h))
    except nv.NVMLError as e:
        notes.append(f"GPU {index}: MIG devices not listed ({_reason(nv, e)})")
        return out
    for i in range(n):
        try:
            mh = nv.nvmlDeviceGetMigDeviceHandleByIndex(h, i)
        except nv.NVMLError:
            continue                         # NOT_FOUND: no MIG device in this slot
        try:
            total, free, used, _ = _memory(nv, mh)
            dev = MigDevice(index=i, name=_s(nv.nvmlDeviceGetName(mh)), uuid=_s(nv.nvmlDeviceGetUUID(mh)),
                            memory_total_bytes=total, memory_free_bytes=free, memory_used_bytes=used)
        except nv.NVMLError as e:
            notes.append(f"GPU {index}: MIG device {i} could not be read ({_reason(nv, e)})")
            continue
        for attr, fn in (("gpu_instance_id", "nvmlDeviceGetGpuInstanceId"),
                         ("compute_instance_id", "nvmlDeviceGetComputeInstanceId")):
            try:
                setattr(dev, attr, int(getattr(nv, fn)(mh)))
            except (nv.NVMLError, AttributeError):
                pass
        out.append(dev)
    return out


def _gpu(nv: Any, i: int, notes: list[str]) -> tuple[NvidiaGpu, Any]:
    try:
        h = nv.nvmlDeviceGetHandleByIndex(i)
    except nv.NVMLError as e:
        return NvidiaGpu(index=i, name="unknown", error=_reason(nv, e)), None
    try:
        gpu = NvidiaGpu(index=i, name=_s(nv.nvmlDeviceGetName(h)))
        gpu.memory_total_bytes, gpu.memory_free_bytes, gpu.memory_used_bytes, gpu.memory_reserved_bytes = \
            _memory(nv, h)
    except nv.NVMLError as e:
        return NvidiaGpu(index=i, name="unknown", error=_reason(nv, e)), None
    try:
        gpu.uuid = _s(nv.nvmlDeviceGetUUID(h))
    except nv.NVMLError as e:
        notes.append(f"GPU {i}: UUID unavailable ({_reason(nv, e)})")
    try:
        gpu.pci_bus_id = _sysfs_bus_id(_s(nv.nvmlDeviceGetPciInfo(h).busId))
    except nv.NVMLError:
        pass
    try:
        major, minor = nv.nvmlDeviceGetCudaComputeCapability(h)
        gpu.compute_capability = (int(major), int(minor))
    except nv.NVMLError:
        pass
    try:
        current, _pending = nv.nvmlDeviceGetMigMode(h)
        gpu.mig_enabled = int(current) == int(getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1))
    except nv.NVMLError:
        gpu.mig_enabled = False              # NOT_SUPPORTED: a GPU without MIG
    if gpu.mig_enabled:
        gpu.mig_devices = _mig_devices(nv, h, notes, i)
    gpu.nvlink_links = _nvlink_links(nv, h)
    return gpu, h


def _links(nv: Any, gpus: list[NvidiaGpu], handles: list[Any]) -> list[GpuLink]:
    """NVLink or PCIe peer-to-peer between pairs of whole (non-MIG) GPUs, as NVML's P2P status reports."""
    ok = int(getattr(nv, "NVML_P2P_STATUS_OK", 0))
    idx_nvlink = int(getattr(nv, "NVML_P2P_CAPS_INDEX_NVLINK", 2))
    idx_read = getattr(nv, "NVML_P2P_CAPS_INDEX_READ", 0)
    idx_read = int(idx_read[0] if isinstance(idx_read, tuple) else idx_read)   # pynvml spells it "= 0,"
    whole = [(g, h) for g, h in zip(gpus, handles) if h is not None and not g.mig_enabled and g.error is None]
    out = []
    for x in range(len(whole)):
        for y in range(x + 1, len(whole)):
            (ga, ha), (gb, hb) = whole[x], whole[y]
            kind = None
            for idx, name in ((idx_nvlink, "NVLink"), (idx_read, "PCIe P2P")):
                try:
                    if int(nv.nvmlDeviceGetP2PStatus(ha, hb, idx)) == ok:
                        kind = name
                        break
                except nv.NVMLError:
                    continue
            if kind:
                out.append(GpuLink(ga.index, gb.index, kind))
    return out


def query() -> NvmlReport:
    """Everything NVML tells about this machine's NVIDIA GPUs (an empty report with a reason if nothing)."""
    nv, err = _module()
    if nv is None:
        return NvmlReport(available=False, error=err)
    rep = NvmlReport(available=True)
    try:
        try:
            rep.driver_version = _s(nv.nvmlSystemGetDriverVersion())
        except nv.NVMLError as e:
            rep.notes.append(f"NVIDIA driver version unavailable ({_reason(nv, e)})")
        for fn in ("nvmlSystemGetCudaDriverVersion", "nvmlSystemGetCudaDriverVersion_v2"):
            try:
                rep.cuda_driver_version = _cuda_version(int(getattr(nv, fn)()))
                break
            except (nv.NVMLError, AttributeError):
                continue
        try:
            count = int(nv.nvmlDeviceGetCount())
        except nv.NVMLError as e:
            return NvmlReport(available=False, error=f"NVIDIA GPUs could not be counted ({_reason(nv, e)})",
                              driver_version=rep.driver_version, cuda_driver_version=rep.cuda_driver_version)
        handles = []
        for i in range(count):
            gpu, h = _gpu(nv, i, rep.notes)
            rep.gpus.append(gpu)
            handles.append(h)
        rep.links = _links(nv, rep.gpus, handles)
    except nv.NVMLError as e:
        rep.available = bool(rep.gpus)
        rep.error = f"NVML query failed ({_reason(nv, e)})"
    except Exception as e:  # noqa: BLE001 - detection must never take the planner down
        rep.available = bool(rep.gpus)
        rep.error = f"NVML query failed ({type(e).__name__}: {e})"
    if not rep.gpus and rep.error is None:
        rep.available = False
        rep.error = "the NVIDIA driver reports no GPU"
    return rep


# ---- CUDA_VISIBLE_DEVICES -------------------------------------------------------------------------------

@dataclass(frozen=True)
class CudaDevice:
    """One device the CUDA runtime would enumerate, in CUDA's order: a whole GPU or a MIG device."""
    gpu: int                         # NVML index of the (parent) GPU
    mig: int | None = None           # MIG device index on that GPU, None for a whole GPU


def cuda_visible(gpus: list[NvidiaGpu], value: str | None) -> tuple[list[CudaDevice], list[str]]:
    """The devices CUDA would see under CUDA_VISIBLE_DEVICES=value (None: unset), in CUDA's order.

    As the CUDA runtime parses it: a comma-separated list of indices, GPU UUIDs (a unique prefix is enough),
    MIG UUIDs ("MIG-<uuid>", or the older "MIG-GPU-<uuid>/<gi>/<ci>") or "<index>:<gi>/<ci>"; the first entry
    that names no device ends the list (it and everything after it are ignored); an empty value hides every
    GPU. Indices are taken in PCI bus order, which is CUDA's order with CUDA_DEVICE_ORDER=PCI_BUS_ID and, for
    identical GPUs, with the default FASTEST_FIRST too. Unset: every GPU; a GPU in MIG mode contributes its
    MIG devices (planning leaves them out).
    """
    notes: list[str] = []
    if value is None:
        out: list[CudaDevice] = []
        for g in gpus:
            if g.mig_enabled:
                out += [CudaDevice(g.index, m.index) for m in g.mig_devices]
            else:
                out.append(CudaDevice(g.index))
        return out, notes
    if value.strip() == "":
        return [], ["CUDA_VISIBLE_DEVICES is set but empty: CUDA sees no GPU"]
    out = []
    tokens = value.split(",")
    for pos, raw in enumerate(tokens):
        tok = raw.strip()
        dev = _cuda_token(gpus, tok)
        if dev is None or dev in out:
            rest = len(tokens) - pos - 1
            if tok or rest:
                why = "appears twice" if dev is not None else "names no device"
                notes.append(f"CUDA_VISIBLE_DEVICES: '{tok}' {why}; CUDA ignores it"
                             + (f" and the {rest} entr{'y' if rest == 1 else 'ies'} after it" if rest else ""))
            break
        out.append(dev)
    return out, notes


def _cuda_token(gpus: list[NvidiaGpu], tok: str) -> CudaDevice | None:
    if re.fullmatch(r"\d+", tok):
        i = int(tok)
        return CudaDevice(gpus[i].index) if i < len(gpus) else None
    m = re.fullmatch(r"(\d+):(\d+)/(\d+)", tok)
    if m:
        i, gi, ci = (int(x) for x in m.groups())
        return _mig_by_ids(gpus[i], gi, ci) if i < len(gpus) else None
    low = tok.lower()
    m = re.fullmatch(r"mig-(gpu-[0-9a-f-]+)/(\d+)/(\d+)", low)
    if m:
        parents = [g for g in gpus if g.uuid.lower() == m.group(1)]
        return _mig_by_ids(parents[0], int(m.group(2)), int(m.group(3))) if len(parents) == 1 else None
    if low.startswith("mig-"):
        hits = [CudaDevice(g.index, d.index) for g in gpus for d in g.mig_devices
                if d.uuid.lower().startswith(low)]
        return hits[0] if len(hits) == 1 else None
    if low.startswith("gpu-"):
        hits = [CudaDevice(g.index) for g in gpus if g.uuid.lower().startswith(low)]
        return hits[0] if len(hits) == 1 else None
    return None


def _mig_by_ids(g: NvidiaGpu, gi: int, ci: int) -> CudaDevice | None:
    for d in g.mig_devices:
        if d.gpu_instance_id == gi and d.compute_instance_id == ci:
            return CudaDevice(g.index, d.index)
    return None
