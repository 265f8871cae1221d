"""Children started with planner.engines.llamacpp.process.run_captured never outlive the command that
started them: not on a timeout, not on Ctrl-C, not when dq-planner itself is killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from planner.engines.llamacpp.process import run_captured

ROOT = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def test_output_and_status_as_subprocess_run_gives_them():
    r = run_captured([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"])
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")


def test_a_timeout_kills_the_child_and_its_group(tmp_path):
    marker = tmp_path / "pid"
    code = (f"import os, subprocess, time; c = subprocess.Popen(['sleep', '60']); "
            f"open({str(marker)!r}, 'w').write(f'{{os.getpid()}} {{c.pid}}'); time.sleep(60)")
    with pytest.raises(subprocess.TimeoutExpired):
        run_captured([sys.executable, "-c", code], timeout=3)
    pids = [int(x) for x in marker.read_text().split()]
    assert len(pids) == 2 and all(_gone_within(p, 5) for p in pids)   # the child and its own child


def test_a_sigkilled_parent_takes_its_child_along(tmp_path):
    """SIGKILL cannot be handled: the kernel ends the child (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    marker = tmp_path / "child"
    child_code = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    parent_code = ("import sys; from planner.engines.llamacpp.process import run_captured; "
                   f"run_captured([sys.executable, '-c', {child_code!r}])")
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=ROOT)
    try:
        end = time.monotonic() + 60
        while not (marker.exists() and marker.read_text()):
            assert parent.poll() is None and time.monotonic() < end
            time.sleep(0.05)
        child = int(marker.read_text())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _gone_within(child, 10)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if marker.exists() and marker.read_text():
            try:
                os.kill(int(marker.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
