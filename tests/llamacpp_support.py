"""Shared by the tests that run the real llama.cpp binaries (tests/test_llamacpp_*.py).

They are never skipped in CI: when the environment variable CI is set and the binaries cannot be found,
the tests fail (CI installs the `llama` extra). Elsewhere they are skipped when the binaries are absent.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from planner.errors import PlannerError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "llamacpp"


def require_llama_cpp(*tools: str):
    """The located llama.cpp (planner.engines.llamacpp.locate) with `tools`; skip or fail as above."""
    from planner.engines.llamacpp.locate import locate

    try:
        lc = locate()
        for t in tools or ("llama-quantize",):
            lc.binary(t)
    except PlannerError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the llama.cpp binaries are missing (install dq-planner[llama]): {e}")
        pytest.skip(f"llama.cpp binaries not installed: {e}")
    return lc


def run_logged(argv: list[str], needs: str, tries: int = 3, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a short-lived llama.cpp tool (llama-completion) whose figures a test reads from its log, and
    run it again (up to `tries` times) when it exits 0 without a line matching `needs`.

    llama.cpp's log lines go through an asynchronous worker thread, and its logger is deliberately never
    destroyed (common/log.cpp, common_log_main; llama.cpp issue 22142): whatever is still queued when the
    program exits is lost. On an idle machine that is only the last lines (the generation), but on a busy
    one the worker can lag far behind: a CI run of llama-completion once exited 0 with its log cut just
    after the KV buffer line. The figures themselves are still asserted on a complete log."""
    import re

    pat = re.compile(needs)
    r = None
    for _ in range(tries):
        r = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr[-2000:]
        if pat.search(r.stderr):
            return r
    raise AssertionError(f"{tries} runs of {Path(argv[0]).name} exited 0 without a log line matching "
                         f"{needs!r}; the last log ends: {r.stderr[-1500:]}")


def dq(*args: str | os.PathLike, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run `dq-planner ARGS...` in a subprocess (argument list, no shell)."""
    return subprocess.run([sys.executable, "-m", "planner.cli", *map(os.fspath, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def rpc_servers(lc, n: int):
    """`n` llama.cpp rpc-server processes on loopback (each in its own process group), yielded as
    "127.0.0.1:PORT" once each answers on its port; stopped, and checked gone, on the way out."""
    from planner.engines.llamacpp.argv import rpc_server_argv
    from planner.engines.llamacpp.process import Child

    ports = [free_port() for _ in range(n)]
    kids = [Child(rpc_server_argv(lc.binary("rpc-server"), p, "127.0.0.1")) for p in ports]
    for k in kids:
        k.read_in_background()
    try:
        deadline = time.monotonic() + 30
        for p in ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", p), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"rpc-server on port {p} did not start")
                    time.sleep(0.05)
        yield [f"127.0.0.1:{p}" for p in ports]
    finally:
        for k in kids:
            k.stop(5)
        assert all(k.poll() is not None for k in kids)


def fit_params_by_device(model: os.PathLike | str, split: str, rpc: list[str], ctx: int = 32768) -> dict:
    """llama-fit-params' own estimate for `model` with every layer offloaded over the `rpc` devices (and
    the local one), -ts `split`, flash attention on, --fit off: its device rows by name ("RPC0", ...,
    "Host")."""
    from planner.engines.llamacpp.logs import parse_fit_params

    exe = str(require_llama_cpp("llama-fit-params").binary("llama-fit-params"))
    r = subprocess.run([exe, "-m", os.fspath(model), "-c", str(ctx), "-fa", "on", "-ngl", "99", "-ts", split,
                        "--rpc", ",".join(rpc), "--fit", "off", "--fit-print", "on"],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-2000:]
    fit = parse_fit_params(r.stdout.splitlines())
    return {d.name.split("[")[0] if d.name.startswith("RPC") else d.name: d for d in fit.devices}


def assert_rpc_placement_matches(mem, theirs: dict, n_rpc: int) -> list:
    """The plan's weights and KV cache on each RPC device, and its host weights, within 1 MiB of
    llama-fit-params' (fit_params_by_device); returns the plan's RPC devices in order."""
    mib = 1 << 20
    rpc = [d for d in mem.per_device if d.device.startswith("RPC")]
    assert len(rpc) == n_rpc
    for i, d in enumerate(rpc):
        t = theirs[f"RPC{i}"]
        assert abs(d.weights_bytes / mib - t.model_mib) <= 1, (i, d.weights_bytes / mib, t.model_mib)
        assert abs(d.kv_bytes / mib - t.context_mib) <= 1, (i, d.kv_bytes / mib, t.context_mib)
    assert abs(mem.host.weights_bytes / mib - theirs["Host"].model_mib) <= 1
    return rpc


def make_imatrix(lc, model: Path, out: Path) -> Path:
    """A small importance matrix of `model` computed by llama-imatrix on a little generated text."""
    words = "the quick brown fox jumps over lazy dog model weights layer tensor quantize matrix".split()
    rnd = random.Random(0)
    text = out.with_suffix(".txt")
    text.write_text(" ".join(rnd.choice(words) for _ in range(1500)))
    r = subprocess.run([str(lc.binary("llama-imatrix")), "-m", str(model), "-f", str(text), "-o", str(out),
                        "-c", "64", "--chunks", "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and out.is_file(), r.stdout[-2000:] + r.stderr[-2000:]
    return out


def processes_using(path: Path) -> list[int]:
    """Pids of live (non-zombie) processes whose command line mentions `path`."""
    import psutil

    out = []
    needle = os.fspath(path)
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(needle in (a or "") for a in (p.info["cmdline"] or [])):
                out.append(p.info["pid"])
        except psutil.Error:
            continue
    return out
