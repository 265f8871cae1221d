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


@dataclass(frozen=True)
class ProbeScope:
    """What the kernel probe (planner/hardware/kernel_probe.py) measures: weight types (their decode and
    prefill kernels; the plan's largest first), the types that hold routed experts (their MUL_MAT_ID
    too) and attention classes ("mla", "gqa"); and, for llama.cpp's cost per layer measured beside it
    (planner/engines/llamacpp/overhead_probe.py), the layers' attention kind. every=True: every type and
    class (and every layer kind)."""

    types: tuple[str, ...] = ()
    expert_types: tuple[str, ...] = ()
    attention: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    every: bool = False

    def argv(self) -> list[str]:
        if self.every:
            return ["--all-types"]
        return ["--types", ",".join(self.types), "--expert-types", ",".join(self.expert_types),
                "--attention", ",".join(self.attention)]

    def wanted(self) -> list[str]:
        """The figures the scope asks for, as the probe's steps name them ("q4_K", "q4_K experts", ...)."""
        from planner.hardware.kernel_probe import ATTENTION_SHAPES, PROBE_TYPES, steps

        if self.every:
            plan = steps(list(PROBE_TYPES), list(PROBE_TYPES), list(ATTENTION_SHAPES))
        else:
            types = list(dict.fromkeys("f16" if t == "f32" else t for t in self.types + self.expert_types))
            plan = steps(types, ["f16" if t == "f32" else t for t in self.expert_types], list(self.attention))
        return [_figure_name(kind, name) for kind, name in plan]


def _figure_name(kind: str, name: str) -> str:
    return {"kernels": "{}", "experts": "{} experts (ubatch)", "expert_decode": "{} experts (decode)",
            "attention": "{} attention"}[kind].format(name)


# the scoped probe of a file's own types takes well under a minute on 2 cores; past this the host is too
# busy (or a kernel too slow) for the figures to be worth the wait
KERNEL_PROBE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class KernelProbeResult:
    """What a kernel probe measured (None: nothing), the figures of its scope it did not (their speed is
    then predicted from the host's bandwidth and the speed factors) and why it stopped short ("": it
    did not)."""

    kernels: HostKernels | None
    missing: list[str]
    stopped: str = ""
    seconds: float = 0.0


def probe_host_kernels(threads: int, lib_dirs: list, scope: ProbeScope, *,
                       timeout: float = KERNEL_PROBE_TIMEOUT_S, progress=None) -> KernelProbeResult:
    """Measure llama.cpp's ggml CPU kernels (planner/hardware/kernel_probe.py) of the scope in a child
    process with `threads` threads, its progress lines passed on to `progress` (a text stream) as they
    come. The child reports each figure as soon as it is measured: a probe that runs past `timeout`
    seconds (then killed), is killed by someone else, crashes in ggml or cannot load it keeps what it
    measured, and the result names what is missing and why. The child dies with this process
    (PR_SET_PDEATHSIG) and is killed when this function is left any other way (an interrupt)."""
    import json
    import signal
    import subprocess
    import sys
    import threading
    import time

    argv = [sys.executable, "-m", "planner.hardware.kernel_probe", str(threads)] + scope.argv() + \
        [str(d) for d in lib_dirs]
    parts: list[str] = []
    tail: list[str] = []
    skipped: list[str] = []             # the probe's own lines on a step it could not run

    def read_out(stream) -> None:
        for line in stream:
            parts.append(line)

    def read_err(stream) -> None:
        for line in stream:
            tail[:] = (tail + [line.rstrip()])[-3:]
            if " not measured: " in line:
                skipped.append(line.split(" not measured: ", 1)[1].strip())
            # the probe's own lines; ggml's (repacking notes, an assertion before an abort) stay in the tail
            if progress is not None and line.startswith("kernel probe"):
                try:
                    progress.write(line)
                    progress.flush()
                except (OSError, ValueError):
                    pass

    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    readers = [threading.Thread(target=f, args=(s,), daemon=True)
               for f, s in ((read_out, proc.stdout), (read_err, proc.stderr))]
    for r in readers:
        r.start()
    stopped = ""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stopped = f"ran past its {timeout:.0f} s limit"
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        for r in readers:
            r.join(5)
    rc = proc.returncode
    if not stopped and rc < 0:
        stopped = f"was stopped by {signal.Signals(-rc).name}" if -rc in signal.valid_signals() else f"died ({rc})"
        if -rc not in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT) and tail and \
                not tail[-1].startswith("kernel probe"):
            stopped += f" ({tail[-1]})"            # a crash: ggml's last word (an assertion, say)
    elif not stopped and rc != 0:
        stopped = f"failed: {tail[-1] if tail else f'exit {rc}'}"
    data: dict = {"threads": threads, "kernels": {}}
    for line in parts:
        try:
            part = json.loads(line)
        except ValueError:
            continue
        if not isinstance(part, dict):
            continue
        for k, v in part.items():
            if isinstance(v, dict) and isinstance(data.get(k), dict):
                data[k].update(v)
            elif isinstance(v, dict):
                data[k] = dict(v)
            else:
                data[k] = v
    kernels = None
    if data["kernels"] or data.get("attention"):
        try:
            kernels = HostKernels.from_json(data)
        except PlannerError as e:
            stopped = stopped or str(e)
    got = set()
    if kernels is not None:
        got = {t for t in kernels.types} | {f"{c} attention" for c in kernels.attention}
        got |= {f"{t} experts (ubatch)" for t, k in kernels.types.items() if k.expert_prefill_flops is not None}
        got |= {f"{t} experts (decode)" for t, k in kernels.types.items() if k.expert_decode_bytes_per_s is not None}
    missing = [w for w in scope.wanted() if w not in got]
    if missing and not stopped:
        stopped = f"could not measure them on this host ({skipped[0] if skipped else 'no reason given'})"
    return KernelProbeResult(kernels, missing, stopped, time.monotonic() - t0)


def store_host_kernels(kernels: HostKernels) -> None:
    """Cache the host's measured kernels (cached_host_kernels reads them for plans on this machine); the
    types, attention classes and layer kinds a probe of only some left out keep their cached figures of
    the same thread count."""
    import time
    from dataclasses import replace

    from planner.hardware.kernel_probe import PROBE_METHOD

    old = cached_host_kernels(kernels.threads)
    if old is not None:
        kernels = replace(kernels, types={**old.types, **kernels.types},
                          attention={**old.attention, **kernels.attention},
                          layer_seconds={**old.layer_seconds, **kernels.layer_seconds})
    _write_atomic(_kernels_file(), {**kernels.to_json(), "method": PROBE_METHOD, "when": time.time()})
