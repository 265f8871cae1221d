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


def dq(*args: str | os.PathLike, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run `dq-planner ARGS...` in a subprocess (argument list, no shell)."""
    return subprocess.run([sys.executable, "-m", "planner.cli", *map(os.fspath, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
