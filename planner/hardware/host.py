"""The host: RAM (total and available), CPU cores, NUMA nodes where Linux shows them, free disk at a path.

RAM and cores come from psutil; NUMA nodes from /sys/devices/system/node (absent in some containers and on
other systems: then the list is empty). Free disk is what an unprivileged user may write at the path (or at
its nearest existing parent, for an output file that does not exist yet).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from planner.core.devices.host_kernels import HostKernels, HostProbe
from planner.errors import PlannerError

NODE_DIR = Path("/sys/devices/system/node")


@dataclass
class NumaNode:
    id: int
    cpus: str = ""                   # Linux cpulist, e.g. "0-55,112-167"
    memory_total_bytes: int = 0


@dataclass
class HostInfo:
    memory_total_bytes: int
    memory_available_bytes: int
    cpu_cores: int                   # logical CPUs this process may run on
    cpu_cores_physical: int | None = None
    numa_nodes: list[NumaNode] = field(default_factory=list)
    disk_path: str = ""
    disk_free_bytes: int | None = None

    def to_dict(self) -> dict:
        return {
            "memory_total_bytes": self.memory_total_bytes,
            "memory_available_bytes": self.memory_available_bytes,
            "cpu_cores": self.cpu_cores,
            "cpu_cores_physical": self.cpu_cores_physical,
            "numa_nodes": [{"id": n.id, "cpus": n.cpus, "memory_total_bytes": n.memory_total_bytes}
                           for n in self.numa_nodes],
            "disk_path": self.disk_path,
            "disk_free_bytes": self.disk_free_bytes,
        }


def numa_nodes(root: Path = NODE_DIR) -> list[NumaNode]:
    out: list[NumaNode] = []
    try:
        entries = sorted(root.glob("node[0-9]*"), key=lambda p: int(p.name[4:]))
    except OSError:
        return out
    for d in entries:
        node = NumaNode(id=int(d.name[4:]))
        try:
            node.cpus = (d / "cpulist").read_text().strip()
        except OSError:
            pass
        try:
            m = re.search(r"MemTotal:\s+(\d+)\s*kB", (d / "meminfo").read_text())
            if m:
                node.memory_total_bytes = int(m.group(1)) * 1024
        except OSError:
            pass
        out.append(node)
    return out


def disk_free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes an unprivileged user can write at `path` or its nearest existing parent; None if unknown."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def host_info(path: str | os.PathLike | None = None) -> HostInfo:
    import psutil

    vm = psutil.virtual_memory()
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = psutil.cpu_count(logical=True) or 1
    disk = Path(path) if path is not None else Path.cwd()
    return HostInfo(
        memory_total_bytes=int(vm.total),
        memory_available_bytes=int(vm.available),
        cpu_cores=cores,
        cpu_cores_physical=psutil.cpu_count(logical=False),
        numa_nodes=numa_nodes(),
        disk_path=str(disk),
        disk_free_bytes=disk_free_bytes(disk),
    )


# ---------------------------------------------------------------------------------------------------
# the host as a device: a short probe of its memory bandwidth and dense FLOPS, cached

def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dq-planner" / "host-probe.json"


def probe_host_speed(threads: int | None = None, *, refresh: bool = False) -> HostProbe:
    """The HostProbe of this machine: read bandwidth GB/s and float32 TFLOPS, measured once and cached
    under $XDG_CACHE_HOME/dq-planner (keyed by the CPU count it ran with), and llama.cpp's ggml CPU
    kernels where probe_host_kernels measured them for this thread count.

    Bandwidth: a float64 matrix-vector product (BLAS gemv) over a 512 MiB matrix, larger than any
    last-level cache, best of five: the streaming read of a decode step's mat-vec, with the BLAS
    threads the process has (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS). FLOPS: a 1024 x 1024 float32
    matmul (BLAS), best of five."""
    import json
    import time

    import numpy as np

    n_thr = threads or _cpus()
    key = f"threads={n_thr}"
    cache = _cache_file()
    if not refresh:
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return HostProbe(float(data["bandwidth_gbs"]), float(data["tflops"]), cached_host_kernels(n_thr))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    a = np.ones(((512 << 20) // 8 // 1024, 1024), dtype=np.float64)
    v = np.ones(1024, dtype=np.float64)
    a @ v
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ v
        best = min(best, time.perf_counter() - t0)
    bw = a.nbytes / best / 1e9
    del a
    m = np.ones((1024, 1024), dtype=np.float32)
    np.dot(m, m)
    fbest = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        np.dot(m, m)
        fbest = min(fbest, time.perf_counter() - t0)
    tflops = 2 * 1024 ** 3 / fbest / 1e12
    _write_atomic(cache, {"key": key, "bandwidth_gbs": bw, "tflops": tflops, "when": time.time()})
    return HostProbe(bw, tflops, cached_host_kernels(n_thr))


def _cpus() -> int:
    return max(1, len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _write_atomic(path: Path, data: dict) -> None:
    """The cache file replaced whole (a temporary file of this process, renamed): two runs at once never
    leave it half-written. A cache that cannot be written is skipped."""
    import json

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    except OSError:
        pass


def _kernels_file() -> Path:
    return _cache_file().with_name("host-kernels.json")


def cached_host_kernels(threads: int | None = None) -> HostKernels | None:
    """The ggml CPU kernels measured on this machine (probe_host_kernels) with this thread count and the
    probe's current method, from the cache; None when never measured so (the plan then uses the
    bandwidth and the factors, until `dq-planner bench` measures them again)."""
    import json

    from planner.hardware.kernel_probe import PROBE_METHOD

    n_thr = threads or _cpus()
    try:
        data = json.loads(_kernels_file().read_text())
        if data.get("threads") != n_thr or data.get("method") != PROBE_METHOD:
            return None
        return HostKernels.from_json(data)
    except (OSError, ValueError, PlannerError):
        return None


def probe_host_kernels(threads: int, lib_dirs: list, *, types: list[str] | None = None,
                       timeout: float = 300) -> HostKernels:
    """Measure llama.cpp's ggml CPU kernels per weight type (planner/hardware/kernel_probe.py, ~40 s
    for every type, a few seconds for a file's own `types`) in a child process with `threads` threads
    (store_host_kernels caches them)."""
    import json
    import subprocess
    import sys

    sel = ["--types", ",".join(sorted(types))] if types else []
    r = subprocess.run([sys.executable, "-m", "planner.hardware.kernel_probe", str(threads)] + sel +
                       [str(d) for d in lib_dirs], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        tail = r.stderr.strip().splitlines()[-1:] or [f"exit {r.returncode}"]
        raise OSError(f"kernel probe failed: {tail[0]}")
    return HostKernels.from_json(json.loads(r.stdout.strip().splitlines()[-1]))


def store_host_kernels(kernels: HostKernels) -> None:
    """Cache the host's measured kernels (cached_host_kernels reads them for plans on this machine); the
    types a probe of only some types left out keep their cached figures of the same thread count."""
    import time
    from dataclasses import replace

    from planner.hardware.kernel_probe import PROBE_METHOD

    old = cached_host_kernels(kernels.threads)
    if old is not None:
        kernels = replace(kernels, types={**old.types, **kernels.types})
    _write_atomic(_kernels_file(), {**kernels.to_json(), "method": PROBE_METHOD, "when": time.time()})
