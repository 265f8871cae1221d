"""Hostile files and command lines (docs/reliability.md items 18 onwards, the ones without a server):
text that reaches a script or a terminal, recipe patterns, header amplification, numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from planner.gguf.writer import write_gguf
from tiny_models import tiny_model

ROOT = Path(__file__).resolve().parent.parent
PWN = "DeepSeek-R1\n touch PWNED ;\x1b[2J\u202e"


def dq(*args, timeout: float = 60, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, DQ_PLANNER_DETECT="0")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "planner.cli", *map(os.fspath, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or ROOT, env=e)


def one_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def inert(text: str) -> bool:
    """No control character but line ends, no bidirectional override."""
    return not any((ord(c) < 32 and c != "\n") or 0x7f <= ord(c) <= 0x9f or c == "\u202e" for c in text)


# -- 18. a name from a file becomes a command in a launch script -------------------------------------

@pytest.fixture(scope="module")
def pwn_gguf(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pwn")
    return write_gguf(folder / "pwn.gguf", replace(tiny_model("deepseek2-mla"), name=PWN))[0]


def test_gguf_name_cannot_become_a_command(pwn_gguf, tmp_path):
    out = tmp_path / "scripts"
    r = dq("--headless", "--model-file", pwn_gguf, "--device", "h100", "--scheme", "Q8_0", "--print-commands",
           "--export-commands", out)
    assert r.returncode == 0, r.stderr
    assert inert(r.stdout) and not any(ln.lstrip().startswith("touch") for ln in r.stdout.splitlines())
    script = (out / "launch.sh").read_text()
    assert inert(script) and "DeepSeek-R1\\n touch PWNED ;\\x1b[2J\\u202e" in script
    # running the script runs no injected line: it stops at the first command (dq-planner is not on PATH)
    run = subprocess.run(["sh", str(out / "launch.sh")], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 127 and not (tmp_path / "PWNED").exists()


def test_gguf_name_is_inert_in_inspect_and_plan_text(pwn_gguf):
    r = dq("inspect", pwn_gguf)
    assert r.returncode == 0 and inert(r.stdout) and "touch PWNED" in r.stdout
    r = dq("--headless", "--model-file", pwn_gguf, "--device", "h100", "--scheme", "Q8_0")
    assert r.returncode == 0 and inert(r.stdout + r.stderr)


def test_recipe_id_with_a_newline_is_refused(tmp_path):
    folder = tmp_path / "dq-planner" / "schemes"
    folder.mkdir(parents=True)
    (folder / "evil.toml").write_text('id = "MYQ3\\ntouch PWNED2 #"\nbase = "Q4_K_M"\n'
                                      'rules = [ { pattern = "ffn", type = "q8_0" } ]\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    r = dq("--headless", "--device", "h100", "--print-commands", "--export-commands", tmp_path / "out", env=env,
           cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "skipped" in r.stderr and "'id' must be" in r.stderr and inert(r.stderr)
    assert "PWNED2" not in r.stdout and "PWNED2" not in (tmp_path / "out" / "launch.sh").read_text()
    (tmp_path / "evil.toml").write_text((folder / "evil.toml").read_text())
    r = dq("--headless", "--device", "h100", "--scheme", tmp_path / "evil.toml")
    assert r.returncode == 2 and "'id' must be" in one_line(r) and inert(r.stderr)
