"""What this machine has: NVIDIA GPUs (NVML), Ascend NPUs (npu-smi), the host (psutil), mapped to profiles.

`detect_hardware()` runs once per process (cached; on a machine with no accelerator it costs the pynvml and
psutil imports, tens of milliseconds). `hardware_for_plan()` turns a Detection into what the planner places
layers on: the profile, the devices llama.cpp would use, in its order and with its names ("CUDA0", "CANN0"),
and the memory each can take.

Which devices are planned on: the whole GPUs CUDA would see under CUDA_VISIBLE_DEVICES (MIG devices are
listed but never planned on, nor is a GPU in MIG mode), or else the healthy Ascend chips ACL would see under
ASCEND_RT_VISIBLE_DEVICES. When the planned devices are not exactly the visible ones, the plan pins them
with the environment variable in `DetectedHardware.env`, and device names follow that pinning.

Mapping to a profile: the device name must equal one of a profile's `match` names (case-insensitive, a
leading "NVIDIA " optional) and the reported total memory must be within 2% of the profile's; otherwise a
generic profile is built from the measured memory (an unknown GPU, or a known name with other memory, such
as an H100 NVL or a 32 GB 910B4).

DQ_PLANNER_DETECT=0 turns accelerator detection off (the host is still read), e.g. for reproducible plans.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from planner.core.devices.hardware import LocalDevices
from planner.core.devices.profiles import DeviceProfile, profiles
from planner.hardware import npu_smi, nvml
from planner.hardware.host import HostInfo, host_info

MiB = 1 << 20
GiB = 1 << 30
MEMORY_TOLERANCE = 0.02              # a detected total within 2% of a profile's maps to it
# a generic profile borrows the reserve model of a known device of the same backend
_REFERENCE = {"CUDA": "h100", "CANN": "910b", "ROCm": "mi300x"}


@dataclass
class Accelerator:
    index: int                       # NVML index; Ascend: position in npu-smi's list; MIG: index on its parent
    name: str
    vendor: str                      # "nvidia" | "huawei"
    backend: str                     # llama.cpp backend: "CUDA" | "CANN"
    memory_total_bytes: int
    memory_free_bytes: int
    memory_used_bytes: int
    uuid: str = ""
    pci_bus_id: str = ""
    compute_capability: str | None = None
    memory_reserved_bytes: int | None = None
    label: str | None = None         # llama.cpp's device name when planned on ("CUDA0", "CANN3")
    visible: bool = True             # seen by CUDA / ACL under *_VISIBLE_DEVICES
    planned: bool = False
    why_not_planned: str | None = None
    profile: str | None = None       # matched profile id, or "generic"
    mig: bool = False                # a MIG device of the GPU `parent_index`
    mig_enabled: bool = False        # a whole GPU in MIG mode
    parent_index: int | None = None
    gpu_instance_id: int | None = None   # MIG: GPU and compute instance ids (CUDA_VISIBLE_DEVICES=<gpu>:<gi>/<ci>)
    compute_instance_id: int | None = None
    health: str | None = None        # Ascend: npu-smi's Health
    npu: int | None = None           # Ascend: NPU id and chip id as npu-smi prints them
    chip: int | None = None
    nvlink_links: int | None = None
    numa_node: int | None = None
    error: str | None = None
    profile_obj: DeviceProfile | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "profile_obj"}
        return d


@dataclass
class Detection:
    accelerators: list[Accelerator]
    host: HostInfo
    links: list[dict[str, Any]] = field(default_factory=list)
    nvidia: dict[str, Any] = field(default_factory=dict)
    ascend: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)   # pins the planned devices (empty: nothing to set)
    elapsed_s: float = 0.0

    @property
    def planned(self) -> list[Accelerator]:
        """The devices plans use, in llama.cpp's order (CUDA0, CUDA1, ...)."""
        return sorted((a for a in self.accelerators if a.planned), key=_ordinal)

    @property
    def profile(self) -> str | None:
        p = _primary(self.planned)
        return p.id if p else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "accelerators": [a.to_dict() for a in self.accelerators],
            "host": self.host.to_dict(),
            "profile": self.profile,
            "planned": [a.label for a in self.planned],
            "env": self.env,
            "links": self.links,
            "nvidia": self.nvidia,
            "ascend": self.ascend,
            "notes": self.notes,
        }


@dataclass
class DetectedHardware:
    """What a plan with the detected devices uses (see hardware_for_plan)."""
    profile: DeviceProfile           # the profile of most planned devices (generic if unknown)
    capacities: list[int]            # bytes per device: detected free memory less the runtime context
    labels: list[str]                # llama.cpp's device names, in its order
    names: list[str]
    free_bytes: list[int]            # detected free memory per device (NVML / npu-smi)
    context_bytes: list[int]         # runtime context taken out of each capacity
    profiles: list[DeviceProfile]    # per device (differ on mixed machines)
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def gpus(self) -> int:
        return len(self.labels)

    @property
    def mixed(self) -> bool:
        return len({p.id if not p.generic else p.name for p in self.profiles}) > 1

    def local_devices(self, host_memory_bytes: int = 0) -> LocalDevices:
        """What the core plans with (planner.core.devices.hardware.LocalDevices)."""
        return LocalDevices(profile=self.profile, capacities=list(self.capacities), labels=list(self.labels),
                            notes=list(self.notes), host_memory_bytes=host_memory_bytes)


def _ordinal(a: Accelerator) -> int:
    return int(re.sub(r"\D", "", a.label or "") or 0)


# ---- profile mapping -------------------------------------------------------------------------------------

def _norm(name: str) -> str:
    n = " ".join(name.lower().split())
    return n[7:] if n.startswith("nvidia ") else n


def match_profile(name: str, memory_total_bytes: int, backend: str, vendor: str,
                  reserved_bytes: int | None = None) -> tuple[DeviceProfile, str | None]:
    """The profile for a detected device: by name, then memory; else a generic one from the measured memory."""
    key = _norm(name)
    cands = [p for p in profiles().values() if not p.generic and any(_norm(m) == key for m in p.match)]
    note = None
    if cands:
        best = min(cands, key=lambda p: abs(p.memory_bytes - memory_total_bytes))
        if abs(best.memory_bytes - memory_total_bytes) <= MEMORY_TOLERANCE * best.memory_bytes:
            return best, None
        note = (f"{name}: the name matches profile {best.id} but its {memory_total_bytes // MiB} MiB differ from "
                f"the profile's {best.memory_bytes // MiB} MiB; planning with a generic profile from the measured "
                "memory")
    return generic_profile(name, memory_total_bytes, backend, vendor, reserved_bytes), note


def generic_profile(name: str, memory_total_bytes: int, backend: str, vendor: str,
                    reserved_bytes: int | None = None) -> DeviceProfile:
    """A profile for a device no profile describes: its measured memory, the runtime context of a known device
    of the same backend, and the driver-reserved memory NVML reported (else that device's)."""
    ref = profiles().get(_REFERENCE.get(backend, ""))
    ctx = ref.process_context_bytes if ref else 1 << 30
    drv = reserved_bytes if reserved_bytes is not None else (ref.driver_reserved_bytes if ref else 0)
    reserve = min(drv + ctx, memory_total_bytes // 2)
    return DeviceProfile(
        id="generic", name=name, vendor=vendor, backend=backend, memory_bytes=memory_total_bytes,
        reserve_bytes=reserve, context_bytes=min(ctx, reserve), devices_per_node=1,
        source=f"detected on this machine: {name}, {memory_total_bytes} bytes total"
               + (f", {reserved_bytes} driver-reserved" if reserved_bytes is not None else "")
               + (f"; runtime context as profile {ref.id}" if ref else ""),
        unverified=("reserve_bytes", "context_bytes", "bandwidth_gbs", "bf16_tflops", "fp8_tflops"),
        generic=True,
    )


def _primary(planned: list[Accelerator]) -> DeviceProfile | None:
    profs = [a.profile_obj for a in planned if a.profile_obj is not None]
    if not profs:
        return None
    counts = Counter(p.id if not p.generic else f"generic:{p.name}" for p in profs)
    top = counts.most_common(1)[0][0]
    return next(p for p in profs if (p.id if not p.generic else f"generic:{p.name}") == top)


# ---- detection -------------------------------------------------------------------------------------------

def _numa_node(bus_id: str) -> int | None:
    if not bus_id:
        return None
    try:
        v = int(Path(f"/sys/bus/pci/devices/{bus_id}/numa_node").read_text().strip())
    except (OSError, ValueError):
        return None
    return v if v >= 0 else None


def _nvidia(rep: nvml.NvmlReport, env: dict[str, str]) -> tuple[list[Accelerator], dict[str, str], list[str]]:
    notes: list[str] = list(rep.notes)
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    seen, vnotes = nvml.cuda_visible(rep.gpus, cvd)
    notes += vnotes
    accs: list[Accelerator] = []
    whole: dict[int, Accelerator] = {}
    for g in rep.gpus:
        a = Accelerator(
            index=g.index, name=g.name, vendor="nvidia", backend="CUDA",
            memory_total_bytes=g.memory_total_bytes, memory_free_bytes=g.memory_free_bytes,
            memory_used_bytes=g.memory_used_bytes, memory_reserved_bytes=g.memory_reserved_bytes,
            uuid=g.uuid, pci_bus_id=g.pci_bus_id,
            compute_capability=f"{g.compute_capability[0]}.{g.compute_capability[1]}" if g.compute_capability else None,
            mig_enabled=g.mig_enabled, nvlink_links=g.nvlink_links, numa_node=_numa_node(g.pci_bus_id),
            error=g.error,
        )
        a.visible = any(d.gpu == g.index for d in seen)
        if g.error is None:
            a.profile_obj, note = match_profile(g.name, g.memory_total_bytes, "CUDA", "nvidia",
                                                g.memory_reserved_bytes)
            a.profile = a.profile_obj.id
            if note:
                notes.append(note)
        accs.append(a)
        whole[g.index] = a
        for m in g.mig_devices:
            accs.append(Accelerator(
                index=m.index, name=m.name, vendor="nvidia", backend="CUDA", memory_total_bytes=m.memory_total_bytes,
                memory_free_bytes=m.memory_free_bytes, memory_used_bytes=m.memory_used_bytes, uuid=m.uuid,
                compute_capability=a.compute_capability, mig=True, parent_index=g.index,
                gpu_instance_id=m.gpu_instance_id, compute_instance_id=m.compute_instance_id,
                visible=nvml.CudaDevice(g.index, m.index) in seen,
                why_not_planned="MIG device",
            ))
    planned: list[nvml.CudaDevice] = []
    for d in seen:
        if d.mig is not None:
            continue
        a = whole[d.gpu]
        if a.error:
            a.why_not_planned = f"not readable: {a.error}"
        elif a.mig_enabled:
            a.why_not_planned = "MIG mode on"
        else:
            planned.append(d)
    for a in accs:
        if a.mig_enabled and a.error is None:
            a.why_not_planned = "MIG mode on"
        elif not a.visible and a.why_not_planned is None:
            a.why_not_planned = "hidden by CUDA_VISIBLE_DEVICES"
    pin: dict[str, str] = {}
    if planned == seen:
        for pos, d in enumerate(seen):
            whole[d.gpu].label = f"CUDA{pos}"
    elif planned:
        for pos, d in enumerate(planned):
            whole[d.gpu].label = f"CUDA{pos}"
        pin = {"CUDA_VISIBLE_DEVICES": ",".join(whole[d.gpu].uuid or str(d.gpu) for d in planned)}
    for d in planned:
        whole[d.gpu].planned = True
    names = {a.name for a in accs if a.planned}
    if len(names) > 1 and env.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID" and not pin:
        notes.append("different GPU models: CUDA's default device order (fastest first) may differ from the PCI "
                     "order used here; set CUDA_DEVICE_ORDER=PCI_BUS_ID")
    return accs, pin, notes


def _ascend(rep: npu_smi.NpuSmiReport, env: dict[str, str]) -> tuple[list[Accelerator], dict[str, str], list[str]]:
    notes: list[str] = list(rep.notes)
    seen, vnotes = npu_smi.visible(rep.chips, env.get("ASCEND_RT_VISIBLE_DEVICES"))
    notes += vnotes
    accs: list[Accelerator] = []
    for i, c in enumerate(rep.chips):
        a = Accelerator(index=i, name=c.name, vendor="huawei", backend="CANN",
                        memory_total_bytes=c.memory_total_bytes, memory_free_bytes=c.memory_free_bytes,
                        memory_used_bytes=c.memory_used_bytes, pci_bus_id=c.bus_id.lower(), health=c.health,
                        npu=c.npu, chip=c.chip, visible=i in seen, numa_node=_numa_node(c.bus_id.lower()))
        a.profile_obj, note = match_profile(c.name, c.memory_total_bytes, "CANN", "huawei")
        a.profile = a.profile_obj.id
        if note:
            notes.append(note)
        accs.append(a)
    planned = []
    for i in seen:
        h = (rep.chips[i].health or "").lower()
        if h in ("ok", "warning"):
            planned.append(i)
        else:
            accs[i].why_not_planned = f"health {rep.chips[i].health}"
    for a in accs:
        if not a.visible:
            a.why_not_planned = "hidden by ASCEND_RT_VISIBLE_DEVICES"
    pin: dict[str, str] = {}
    order = seen if planned == seen else planned
    if planned and planned != seen:
        pin = {"ASCEND_RT_VISIBLE_DEVICES": ",".join(str(i) for i in planned)}
    for pos, i in enumerate(order):
        if i in planned:
            accs[i].label = f"CANN{pos}"
            accs[i].planned = True
    return accs, pin, notes


def assemble(rep: nvml.NvmlReport, asc: npu_smi.NpuSmiReport, host: HostInfo,
             env: dict[str, str] | None = None) -> Detection:
    """A Detection from what NVML and npu-smi reported: visible devices, profiles, names, what is planned on."""
    env = dict(os.environ if env is None else env)
    notes: list[str] = []
    nv_accs, nv_pin, nv_notes = _nvidia(rep, env) if rep.available else ([], {}, list(rep.notes))
    as_accs, as_pin, as_notes = _ascend(asc, env) if asc.available else ([], {}, list(asc.notes))
    if any(a.planned for a in nv_accs) and any(a.planned for a in as_accs):
        for a in as_accs:
            if a.planned:
                a.planned, a.label = False, None
                a.why_not_planned = "NVIDIA GPUs are planned on instead"
        as_pin = {}
        notes.append("both NVIDIA GPUs and Ascend NPUs found: planning on the NVIDIA GPUs")
    return Detection(
        accelerators=nv_accs + as_accs, host=host,
        links=[{"a": lk.a, "b": lk.b, "kind": lk.kind} for lk in rep.links],
        nvidia={"driver_version": rep.driver_version or None, "cuda_driver_version": rep.cuda_driver_version or None,
                "error": rep.error},
        ascend={"npu_smi_version": asc.npu_smi_version or None, "driver_version": asc.driver_version or None,
                "error": asc.error},
        notes=notes + nv_notes + as_notes, env={**nv_pin, **as_pin},
    )


def detect(env: dict[str, str] | None = None, disk_path: str | os.PathLike | None = None,
           sources: tuple[str, ...] = ("nvidia", "ascend"), honour_off_switch: bool = True) -> Detection:
    """Detect now (no cache). `env` defaults to os.environ (CUDA_VISIBLE_DEVICES, ASCEND_RT_VISIBLE_DEVICES,
    DQ_PLANNER_DETECT); `sources` chooses which of NVML ("nvidia") and npu-smi ("ascend") to ask.
    DQ_PLANNER_DETECT=0 keeps plans off the local devices; `dq-planner detect` itself always looks
    (honour_off_switch=False)."""
    t0 = time.perf_counter()
    env = dict(os.environ if env is None else env)
    host = host_info(disk_path)
    if honour_off_switch and env.get("DQ_PLANNER_DETECT", "").strip().lower() in ("0", "no", "off", "false"):
        det = Detection(accelerators=[], host=host, notes=["accelerator detection is off (DQ_PLANNER_DETECT)"])
    else:
        rep = nvml.query() if "nvidia" in sources else nvml.NvmlReport(error="not asked")
        asc = npu_smi.query() if "ascend" in sources else npu_smi.NpuSmiReport(error="not asked")
        det = assemble(rep, asc, host, env)
    det.elapsed_s = time.perf_counter() - t0
    return det


@lru_cache(maxsize=1)
def detect_hardware() -> Detection:
    """detect() once per process (clear with detect_hardware.cache_clear())."""
    return detect()


def hardware_for_plan(det: Detection) -> DetectedHardware | None:
    """The profile, devices, names and per-device capacities to plan with; None when nothing is planned on.

    Capacity = the device's detected free memory less the serving process's own runtime context
    (profile.process_context_bytes: CUDA context and cuBLAS workspace, or CANN's), i.e. about what llama.cpp
    reports as free once it has started; the driver-reserved memory and other processes' memory are already
    outside the detected free figure, so no further reserve applies to these capacities.
    """
    planned = det.planned
    if not planned:
        return None
    prof = _primary(planned)
    assert prof is not None
    profs = [a.profile_obj or prof for a in planned]
    ctx = [p.process_context_bytes for p in profs]
    caps = [max(0, a.memory_free_bytes - c) for a, c in zip(planned, ctx)]
    names = Counter(a.name for a in planned)
    what = ", ".join(f"{n} x {name}" for name, n in names.most_common())
    kind = {"CUDA": "CUDA", "CANN": "CANN", "ROCm": "HIP"}.get(prof.backend, prof.backend)
    notes = [f"planning with the detected free memory of {what} (profile {prof.id}"
             + (f" '{prof.name}'" if prof.generic else "") + f"), less {ctx[0] // MiB} MiB per device for the "
             f"{kind} runtime context"]
    for k, v in det.env.items():
        notes.append(f"llama.cpp must run with {k}={v} to use exactly the planned devices (the device names "
                     "assume it)")
    if len(names) > 1:
        notes.append("mixed devices: each is planned with its own free memory")
    busy = []
    for a, p in zip(planned, profs):
        baseline = a.memory_reserved_bytes if a.memory_reserved_bytes is not None else p.driver_reserved_bytes
        held = a.memory_used_bytes - baseline
        if held > max(GiB, 0.05 * a.memory_total_bytes):
            busy.append((a.label, held))
    if busy:
        lo, hi = min(b for _, b in busy) / GiB, max(b for _, b in busy) / GiB
        amount = f"{lo:.1f} GiB" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}-{hi:.1f} GiB"
        notes.append(f"{', '.join(lb for lb, _ in busy)}: {amount} already in use by other processes "
                     "(the plan uses what is free now)")
    return DetectedHardware(profile=prof, capacities=caps, labels=[a.label or "" for a in planned],
                            names=[a.name for a in planned], free_bytes=[a.memory_free_bytes for a in planned],
                            context_bytes=ctx, profiles=profs, env=dict(det.env), notes=notes)


def summary_line(det: Detection) -> str:
    """One line saying what was found (for status lines)."""
    planned = det.planned
    if not planned:
        return "no accelerators detected"
    names = Counter(a.name for a in planned)
    return "detected " + ", ".join(f"{n} x {name}" for name, n in names.most_common())
