"""`dq-planner detect [--json]`: the accelerators and host this machine has, and the profile plans will use."""

from __future__ import annotations

import json
import os
import sys

from planner.hardware.detect import Detection, detect, hardware_for_plan
from planner.units import GiB, MiB

DEFAULT_DEVICE = "h100"


def _g(n: int | None) -> str:
    return "-" if n is None else f"{n / GiB:.1f}"


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def _links_line(det: Detection) -> str | None:
    if not det.links:
        return None
    whole = [a for a in det.accelerators if a.vendor == "nvidia" and not a.mig and not a.mig_enabled and not a.error]
    n = len(whole)
    kinds = {lk["kind"] for lk in det.links}
    if len(det.links) == n * (n - 1) // 2 and len(kinds) == 1:
        return f"GPU links: {kinds.pop()} between all {n} GPUs ({len(det.links)} pairs)"
    pairs = ", ".join(f"{lk['a']}-{lk['b']} {lk['kind']}" for lk in det.links)
    return f"GPU links: {pairs}"


def render(det: Detection) -> str:
    out: list[str] = []
    nv, asc = det.nvidia, det.ascend
    if det.accelerators:
        if nv.get("driver_version"):
            out.append(f"NVIDIA driver {nv['driver_version']}"
                       + (f", CUDA {nv['cuda_driver_version']}" if nv.get("cuda_driver_version") else ""))
        if asc.get("driver_version"):
            out.append(f"Ascend driver {asc['driver_version']} (npu-smi {asc.get('npu_smi_version') or '?'})")
        rows = []
        for a in det.accelerators:
            idx = f"{a.parent_index}/{a.index}" if a.mig else str(a.index)
            extra = []
            if a.compute_capability and not a.mig:
                extra.append(f"sm {a.compute_capability}")
            if a.health and a.health.upper() != "OK":
                extra.append(f"health {a.health}")
            if a.nvlink_links:
                extra.append(f"NVLink x{a.nvlink_links}")
            if a.numa_node is not None:
                extra.append(f"NUMA {a.numa_node}")
            rows.append([idx, a.label or "-", ("  MIG " if a.mig else "") + a.name,
                         _g(a.memory_free_bytes), _g(a.memory_total_bytes), a.profile or "-",
                         "yes" if a.planned else f"no: {a.why_not_planned}" if a.why_not_planned else "no", ", ".join(extra)])
        out += _table(["#", "device", "name", "free GiB", "total GiB", "profile", "planned", "details"], rows, {3, 4})
        links = _links_line(det)
        if links:
            out.append(links)
    else:
        reasons = [f"NVIDIA: {nv['error']}" if nv.get("error") else "",
                   f"Ascend: {asc['error']}" if asc.get("error") else ""]
        reasons = [r for r in reasons if r]
        out.append("no accelerators detected" + (f" ({'; '.join(reasons)})" if reasons else ""))
    h = det.host
    numa = f", {len(h.numa_nodes)} NUMA node{'s' if len(h.numa_nodes) != 1 else ''}" if h.numa_nodes else ""
    phys = f" ({h.cpu_cores_physical} physical)" if h.cpu_cores_physical and h.cpu_cores_physical != h.cpu_cores else ""
    out.append(f"Host: {h.memory_total_bytes / GiB:.1f} GiB RAM ({h.memory_available_bytes / GiB:.1f} GiB available), "
               f"{h.cpu_cores} CPU cores{phys}{numa}"
               + (f"; {h.disk_free_bytes / GiB:.1f} GiB free disk at {h.disk_path}" if h.disk_free_bytes is not None else ""))
    hw = hardware_for_plan(det)
    if hw is None:
        out.append(f"Plans use the {DEFAULT_DEVICE} profile unless --device is given.")
    else:
        p = hw.profile
        out.append(f"Plans use {hw.gpus} device{'s' if hw.gpus != 1 else ''} ({', '.join(hw.labels)}) with profile "
                   f"{p.id}" + (f" ('{p.name}', built from the measured memory)" if p.generic else f" ({p.name})")
                   + f"; capacity per device = free memory - {hw.context_bytes[0] // MiB} MiB runtime context")
    for n in det.notes + (hw.notes[1:] if hw else []):
        out.append(f"note: {n}")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    from planner.arg_parser import PROG, Parser

    p = Parser(prog=f"{PROG} detect", description="Show the GPUs/NPUs (NVML, npu-smi) and the host this machine "
                "has, and the hardware profile plans will use.")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--disk", metavar="PATH", help="report free disk space at PATH (default: the current folder)")
    a = p.parse_args(argv)
    if a.disk is not None and not os.path.exists(a.disk):
        from planner.errors import PlannerError

        raise PlannerError(f"--disk {a.disk}: no such file or folder"
                           + (" (a dangling symbolic link)" if os.path.islink(a.disk) else ""))
    det = detect(disk_path=a.disk, honour_off_switch=False)
    if a.json:
        json.dump(det.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(det))
    return 0
