"""From a request to the devices a plan places layers on (profiles, detected devices, RPC devices)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from planner.core.devices.profiles import DeviceProfile, resolve_device
from planner.core.plan import HardwareSummary, PlanRequest
from planner.core.request_bounds import check_device_count, check_request_bounds
from planner.errors import PlannerError

MAX_HOST_RAM_GIB = 1 << 20         # 1 PiB: beyond any machine; larger values only overflow the arithmetic

DEFAULT_DEVICE = "h100"
_UNITS = {"b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1 << 20, "mb": 10**6, "mib": 1 << 20,
          "g": 1 << 30, "gb": 10**9, "gib": 1 << 30, "t": 1 << 40, "tb": 10**12, "tib": 1 << 40}


def parse_size(text: str, bare_unit: int = 1 << 30) -> int:
    """'80G', '24GiB', '81559MiB', '24' -> bytes (G/M/K alone are binary, GB/MB decimal; a bare number is
    in `bare_unit`, GiB by default: nobody gives a device's memory in bytes)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or (m.group(2) and m.group(2).lower() not in _UNITS):
        raise PlannerError(f"bad memory size '{text}'; use e.g. 80G, 24GiB, 81559MiB, or a number of GiB")
    unit = _UNITS[m.group(2).lower()] if m.group(2) else bare_unit
    n = int(float(m.group(1)) * unit)
    if n <= 0:
        raise PlannerError(f"bad memory size '{text}': must be more than 0")
    return n


def parse_rpc(spec: str) -> tuple[str, int | None]:
    """'HOST:PORT[=MEM]' -> ('HOST:PORT', bytes or None)."""
    addr, _, mem = spec.partition("=")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+:[0-9]{1,5}|\[[0-9a-fA-F:]+\]:[0-9]{1,5}", addr):
        raise PlannerError(f"bad --rpc device '{spec}'; expected HOST:PORT[=MEM], e.g. 127.0.0.1:50052=24G")
    port = int(addr.rsplit(":", 1)[1])
    if not 0 < port < 65536:
        raise PlannerError(f"bad --rpc port in '{spec}'")
    return addr, (parse_size(mem) if mem else None)


@dataclass(frozen=True)
class Slot:
    """One device llama.cpp places layers on."""

    label: str                 # "CUDA0", "RPC[10.0.0.2:50052]", "NPU3"
    capacity_bytes: int        # memory the device has (driver total, or detected free)
    reserve_bytes: int = 0     # runtime context the process cannot use
    weight: float | None = None   # default split weight (llama.cpp: free memory)


@dataclass
class LocalDevices:
    """The accelerators found on this machine, as the caller's detection resolved them (the core never
    detects): the profile of most of them, each device's plannable capacity and llama.cpp name."""
    profile: DeviceProfile
    capacities: list[int]            # bytes per device: free memory less the runtime context
    labels: list[str]                # llama.cpp's device names, in its order
    notes: list[str] = field(default_factory=list)
    host_memory_bytes: int = 0       # this host's RAM (only meaningful when planning for this machine)


@dataclass
class Hardware:
    summary: HardwareSummary
    slots: list[Slot]
    host_capacity_bytes: int = 0
    profile: DeviceProfile | None = None
    notes: list[str] = field(default_factory=list)


def wants_local_devices(req: PlanRequest) -> bool:
    """The request plans on this machine's detected devices (--device auto, or no --device)."""
    return req.device in (None, "auto") and not req.device_file


def resolve_hardware(req: PlanRequest, local: LocalDevices | None = None) -> Hardware:
    """The devices to plan on: the caller's detected `local` devices (when the request asks for them:
    --device auto or none), else the profile of --device (or DEFAULT_DEVICE) x --gpus x --nodes; then the
    --rpc devices, which come first in llama.cpp's device order. `--gpus 0` plans the RPC devices and
    the host only (a head node without GPUs driving llama.cpp RPC servers)."""
    check_request_bounds(req)
    notes: list[str] = []
    host_cap = 0
    wants_local = wants_local_devices(req)
    if not wants_local:
        local = None
    if local is not None:
        prof = local.profile
        caps = list(local.capacities)
        labels = list(local.labels)
        # the host's RAM only matters when planning for this very machine
        host_cap = local.host_memory_bytes
        if req.gpus is not None:
            if req.gpus > len(caps):
                raise PlannerError(f"--gpus {req.gpus}: only {len(caps)} devices were detected")
            caps, labels = caps[: req.gpus], labels[: req.gpus]
        # detected capacities are free memory: the runtime context is already taken out of them
        slots = [Slot(lb, c, 0) for lb, c in zip(labels, caps)]
        notes += list(local.notes)
        source = "detected"
        gpus = len(slots)
    else:
        if wants_local:
            notes.append(f"no accelerators detected: planning for the {DEFAULT_DEVICE} profile")
        prof = resolve_device(req.device_file or (req.device if not wants_local else DEFAULT_DEVICE))
        gpus = req.gpus if req.gpus is not None else prof.devices_per_node
        check_device_count(gpus, req.nodes)
        slots = []
        for node in range(req.nodes):
            for i in range(gpus):
                label = f"{prof.backend}{i}" if node == 0 else f"node{node}.{prof.backend}{i}"
                slots.append(Slot(label, prof.memory_bytes, prof.reserve_bytes))
        source = "profile"
    if gpus == 0 and not req.rpc:
        raise PlannerError("--gpus 0 plans llama.cpp RPC devices and the host only: give them with --rpc")
    rpc_slots = []
    for spec in req.rpc:
        addr, mem = parse_rpc(spec)
        cap = mem if mem is not None else prof.memory_bytes
        rpc_slots.append(Slot(f"RPC[{addr}]", cap, 0 if mem is not None else prof.reserve_bytes))
    if rpc_slots:
        notes.append(f"{len(rpc_slots)} RPC device(s) come first in llama.cpp's device order")
    if req.host_ram is not None:
        if not 0 < req.host_ram <= MAX_HOST_RAM_GIB:
            raise PlannerError(f"--host-ram must be more than 0 and at most {MAX_HOST_RAM_GIB} GiB (1 PiB), "
                               f"got {req.host_ram:g}")
        host_cap = int(req.host_ram * (1 << 30))
        if prof.vendor == "cpu":          # --device host: the host's RAM is the one device
            # the profile's reserve for the OS, at most a quarter of a small host's RAM
            slots = [Slot(s.label, host_cap, min(prof.reserve_bytes, host_cap // 4)) for s in slots]
            host_cap = 0
    all_slots = rpc_slots + slots
    name = prof.name
    if local is None and prof.vendor == "cpu" and req.host_probe is not None:
        # --device host planned on this machine (planner.make_plan.with_host): its figures, not the profile's
        from planner.core.devices.host_kernels import HostProbe

        probe = HostProbe.of(req.host_probe)
        name = "this machine's CPU"
        source = "measured here"
        notes.append(f"--device host on this machine: bandwidth {probe.bandwidth_gbs:.1f} GB/s and "
                     f"{probe.tflops:.2f} TFLOPS measured here"
                     + ", its RAM unless --host-ram gives it"
                     + f", not the figures of the '{prof.name}' profile (DQ_PLANNER_DETECT=0 plans the profile)")
    summary = HardwareSummary(
        device=prof.id, name=name, gpus=gpus, nodes=req.nodes,
        memory_per_gpu_bytes=min(s.capacity_bytes for s in (slots or rpc_slots)) if all_slots else prof.memory_bytes,
        source=source, reserve_bytes=prof.reserve_bytes if source != "detected" else 0, notes=notes,
    )
    return Hardware(summary=summary, slots=all_slots, host_capacity_bytes=host_cap, profile=prof, notes=notes)
