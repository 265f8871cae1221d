"""The real app in a real terminal: tmux runs `dq-planner`, keys go in with send-keys, the screen comes
back with capture-pane. Needs tmux (CI installs it)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from planner.core.plan import PlanRequest
from planner.make_plan import make_plan
from planner.units import human

REPO = Path(__file__).resolve().parents[1]

if not shutil.which("tmux"):
    if os.environ.get("CI"):
        raise RuntimeError("tmux is needed for the real-terminal test of the TUI (apt-get install tmux)")
    pytest.skip("tmux not installed", allow_module_level=True)


class Tmux:
    """One tmux server of our own (-L), so that nothing else in the user's tmux is touched."""

    def __init__(self, name: str) -> None:
        self.sock = f"dq-planner-test-{os.getpid()}-{name}"
        self.target = name

    def __call__(self, *args: str, check: bool = True) -> str:
        # the app must see the pane's size, not a COLUMNS/LINES the test runner may have set
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}
        r = subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True, timeout=20, env=env)
        if check and r.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def start(self, command: str, status_file: Path, width: int = 120, height: int = 40) -> int:
        """Run `command` in a new pane; its exit code goes to status_file. Returns the command's pid."""
        self("-f", "/dev/null", "new-session", "-d", "-s", self.target, "-x", str(width), "-y", str(height),
             f"cd {shlex.quote(str(REPO))} && {command}; echo $? > {shlex.quote(str(status_file))}")
        self("set-option", "-t", self.target, "remain-on-exit", "on")
        shell = psutil.Process(int(self("display-message", "-p", "-t", self.target, "#{pane_pid}").strip()))
        deadline = time.monotonic() + 20
        while not shell.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        return shell.children()[0].pid

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", self.target)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} did not appear; the screen was:\n{screen}")

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", self.target, *keys)

    def close(self) -> None:
        self("kill-server", check=False)


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


APP = f"{shlex.quote(sys.executable)} -m planner.cli --device 910b --kv-mode legacy"


def test_pick_a_scheme_see_it_stop_fitting_and_quit_with_ctrl_q(tmp_path):
    dq3 = make_plan(PlanRequest(device="910b", kv_mode="legacy", schemes=["DQ3_K_M"])).scheme("DQ3_K_M")
    q4 = make_plan(PlanRequest(device="910b", kv_mode="legacy", schemes=["Q4_K_M"])).scheme("Q4_K_M")
    t = Tmux("flow")
    try:
        status = tmp_path / "status"
        pid = t.start(APP + " --scheme DQ3_K_M", status)
        screen = t.wait_for("Recommended:")
        assert f"DQ3_K_M (recipe): {human(dq3.size_bytes)}" in screen
        assert "Fits     yes:" in screen
        t.keys("s")
        t.wait_for("Dismiss menu")                # the scheme list is open (its footer key)
        t.keys("Q", "4", "_", "K", "_", "M", "Enter")
        screen = t.wait_for("Q4_K_M (ftype)")
        assert f"NO: over by {human(-q4.headroom_bytes)}" in screen
        assert "OVER" in screen
        children = [c.pid for c in psutil.Process(pid).children(recursive=True)]
        assert children, "the planning process should be running"
        t.keys("C-q")
        assert _gone(pid, 15), "the app is still running after ctrl+q"
        assert all(_gone(c, 5) for c in children), "a child of the app outlived it"
        deadline = time.monotonic() + 10
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status.read_text().strip() == "0"
    finally:
        t.close()


def test_closing_the_terminal_ends_the_app(tmp_path):
    t = Tmux("hangup")
    try:
        pid = t.start(APP, tmp_path / "status")
        t.wait_for("Recommended:")
        children = [c.pid for c in psutil.Process(pid).children(recursive=True)]
        t("kill-session", "-t", t.target)          # the terminal goes away: SIGHUP
        assert _gone(pid, 15), "the app survived its terminal"
        assert all(_gone(c, 5) for c in children), "a child of the app outlived its terminal"
    finally:
        t.close()
