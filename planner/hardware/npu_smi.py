"""Huawei Ascend NPUs through `npu-smi info` (run only when /dev/davinci* or npu-smi exists, with a timeout).

`npu-smi info` prints, after a version line, two table rows per chip:

    | NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
    | Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
    | 0     910B3               | OK            | 102.8       55                0    / 0             |
    | 0                         | 0000:C1:00.0  | 0           0    / 0          3338 / 65536         |

then a process table. Atlas A3 nodes add a "Phy-ID" column after the chip id and list two chips per NPU;
310P cards have no HBM column (their memory is the Memory-Usage pair). npu-smi's "MB" are MiB (65536 MB is
64 GiB). ACL, and so llama.cpp's CANN backend, numbers the chips it sees 0..n-1 in this order
(ASCEND_RT_VISIBLE_DEVICES selects and reorders them); device names are "CANN<n>".
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

MiB = 1 << 20
TIMEOUT_S = 10.0


@dataclass
class AscendChip:
    npu: int                         # NPU (card) id as npu-smi prints it
    chip: int                        # chip id on that NPU
    name: str                        # "910B3", "Ascend910", "310P3"
    health: str                      # "OK", "Warning", "Alarm", "Critical", ...
    bus_id: str = ""
    phy_id: int | None = None        # physical chip id (Atlas A3 layout)
    memory_used_bytes: int = 0       # HBM (or, without HBM, device memory) in use
    memory_total_bytes: int = 0
    aicore_pct: float | None = None
    processes: int = 0               # processes holding memory on this chip (npu-smi's process table)

    @property
    def memory_free_bytes(self) -> int:
        return max(0, self.memory_total_bytes - self.memory_used_bytes)


@dataclass
class NpuSmiReport:
    available: bool = False
    error: str | None = None
    npu_smi_version: str = ""
    driver_version: str = ""
    chips: list[AscendChip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


_PAIR = re.compile(r"(\d+)\s*/\s*(\d+)")
_BUS = re.compile(r"^[0-9A-Fa-fx]{4,8}:[0-9A-Fa-fx]{2}:[0-9A-Fa-fx]{2}\.[0-9]$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_npu_smi_info(text: str) -> NpuSmiReport:
    """Parse the output of `npu-smi info`. Raises ValueError when the text has no chip table."""
    rep = NpuSmiReport()
    m = re.search(r"npu-smi\s+(\S+)\s+Version:\s*(\S+)", text)
    if m:
        rep.npu_smi_version, rep.driver_version = m.group(1), m.group(2)
    has_hbm = "HBM-Usage" in text
    in_procs = False
    pending: tuple[int, str, str, str] | None = None     # (npu, name, health, first-row metrics) of row A
    by_key: dict[tuple[int, int], AscendChip] = {}
    for line in text.splitlines():
        s = line.strip()
        if not s.startswith("|"):
            continue
        cells = _cells(s)
        head = cells[0] if cells else ""
        if "Process id" in s or "Process name" in s:
            in_procs = True
            continue
        if in_procs:
            pm = re.fullmatch(r"(\d+)\s+(\d+)", head)
            if pm and len(cells) >= 4 and re.fullmatch(r"\d+", cells[1]):
                chip = by_key.get((int(pm.group(1)), int(pm.group(2))))
                if chip is not None:
                    chip.processes += 1
            continue
        if len(cells) < 3:
            continue
        a = re.fullmatch(r"(\d+)\s+(\S*[A-Za-z]\S*)", head)          # row A: "<npu>  <name>"
        b = re.fullmatch(r"(\d+)(?:\s+(\d+))?", head)                # row B: "<chip> [<phy-id>]"
        if a and not b:
            pending = (int(a.group(1)), a.group(2), cells[1], cells[2])
            continue
        if b and pending is not None and (_BUS.match(cells[1]) or ":" in cells[1]):
            npu, name, health, _ = pending
            pairs = _PAIR.findall(cells[2])
            if not pairs:
                pending = None
                continue
            used, total = pairs[-1] if has_hbm or len(pairs) == 1 else pairs[0]
            ai = re.match(r"\s*(\d+(?:\.\d+)?)", cells[2])
            chip = AscendChip(npu=npu, chip=int(b.group(1)), name=name, health=health, bus_id=cells[1],
                              phy_id=int(b.group(2)) if b.group(2) else None,
                              memory_used_bytes=int(used) * MiB, memory_total_bytes=int(total) * MiB,
                              aicore_pct=float(ai.group(1)) if ai else None)
            rep.chips.append(chip)
            by_key[(chip.npu, chip.chip)] = chip
            pending = None
    if not rep.chips:
        raise ValueError("no NPU chip rows found in npu-smi output")
    rep.available = True
    return rep


def present() -> bool:
    """An Ascend driver is installed: /dev/davinci<N> device nodes or npu-smi on PATH."""
    return bool(glob.glob("/dev/davinci[0-9]*")) or shutil.which("npu-smi") is not None


def query(timeout: float = TIMEOUT_S) -> NpuSmiReport:
    """Run `npu-smi info` (only when an Ascend driver is present) and parse it; failures become a reason."""
    if not present():
        return NpuSmiReport(available=False, error="no Ascend driver (no /dev/davinci*, no npu-smi)")
    exe = shutil.which("npu-smi")
    if exe is None:
        return NpuSmiReport(available=False, error="/dev/davinci* exists but npu-smi is not on PATH")
    try:
        proc = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        return NpuSmiReport(available=False, error=f"npu-smi info did not answer within {timeout:g} s")
    except OSError as e:
        return NpuSmiReport(available=False, error=f"npu-smi could not run ({e.strerror})")
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        return NpuSmiReport(available=False, error=f"npu-smi info failed (exit {proc.returncode})"
                            + (f": {msg[-1]}" if msg else ""))
    try:
        return parse_npu_smi_info(proc.stdout)
    except ValueError as e:
        return NpuSmiReport(available=False, error=f"npu-smi info: {e}")


def visible(chips: list[AscendChip], value: str | None) -> tuple[list[int], list[str]]:
    """Positions (into `chips`) that ACL would see under ASCEND_RT_VISIBLE_DEVICES=value, in ACL's order."""
    if value is None:
        return list(range(len(chips))), []
    out: list[int] = []
    notes: list[str] = []
    for tok in (t.strip() for t in value.split(",")):
        if not re.fullmatch(r"\d+", tok) or int(tok) >= len(chips) or int(tok) in out:
            notes.append(f"ASCEND_RT_VISIBLE_DEVICES: '{tok}' names no device; it and what follows are ignored")
            break
        out.append(int(tok))
    return out, notes
