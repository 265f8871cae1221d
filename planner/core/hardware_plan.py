"""From a request to the devices a plan places layers on (profiles, detected devices, RPC devices)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from planner.core.memory import Slot
from planner.core.plan import HardwareSummary, PlanRequest
from planner.errors import PlannerError

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


@dataclass
class Hardware:
    summary: HardwareSummary
    slots: list[Slot]
    host_capacity_bytes: int = 0
    profile: object = None
    notes: list[str] = field(default_factory=list)


def resolve_hardware(req: PlanRequest, detection=None) -> Hardware:
    """The devices to plan on: --device/--gpus/--nodes/--rpc, or what detection found."""
    from planner.core.devices import resolve_device

    notes: list[str] = []
    detected = None
    host_cap = 0
    if req.device in (None, "auto"):
        if detection is None:
            from planner.hardware.detect import detect_hardware

            detection = detect_hardware()
        from planner.hardware.detect import hardware_for_plan

        detected = hardware_for_plan(detection)
        if detected is not None:
            # the host's RAM only matters when planning for this very machine
            host_cap = int(getattr(detection.host, "memory_total_bytes", 0) or 0)
        else:
            notes.append(f"no accelerators detected: planning for the {DEFAULT_DEVICE} profile")
    if detected is not None:
        prof = detected.profile
        caps = list(detected.capacities)
        labels = list(detected.labels)
        if req.gpus is not None:
            if req.gpus > len(caps):
                raise PlannerError(f"--gpus {req.gpus}: only {len(caps)} devices were detected")
            caps, labels = caps[: req.gpus], labels[: req.gpus]
        # detected capacities are free memory: the runtime context is already taken out of them
        slots = [Slot(lb, c, 0) for lb, c in zip(labels, caps)]
        notes += list(detected.notes)
        source = "detected"
        gpus = len(slots)
    else:
        prof = resolve_device(req.device_file or (req.device if req.device not in (None, "auto") else DEFAULT_DEVICE))
        gpus = req.gpus if req.gpus is not None else prof.devices_per_node
        if gpus < 1:
            raise PlannerError(f"--gpus must be at least 1, got {gpus}")
        slots = []
        for node in range(req.nodes):
            for i in range(gpus):
                label = f"{prof.backend}{i}" if node == 0 else f"node{node}.{prof.backend}{i}"
                slots.append(Slot(label, prof.memory_bytes, prof.reserve_bytes))
        source = "profile"
    if req.nodes < 1:
        raise PlannerError(f"--nodes must be at least 1, got {req.nodes}")
    rpc_slots = []
    for spec in req.rpc:
        addr, mem = parse_rpc(spec)
        cap = mem if mem is not None else prof.memory_bytes
        rpc_slots.append(Slot(f"RPC[{addr}]", cap, 0 if mem is not None else prof.reserve_bytes))
    if rpc_slots:
        notes.append(f"{len(rpc_slots)} RPC device(s) come first in llama.cpp's device order")
    summary = HardwareSummary(
        device=prof.id, name=prof.name, gpus=gpus, nodes=req.nodes,
        memory_per_gpu_bytes=(min(s.capacity_bytes for s in slots) if slots else prof.memory_bytes),
        source=source, reserve_bytes=prof.reserve_bytes if source == "profile" else 0, notes=notes,
    )
    return Hardware(summary=summary, slots=rpc_slots + slots, host_capacity_bytes=host_cap, profile=prof,
                    notes=notes)
