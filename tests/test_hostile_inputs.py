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
    r = dq("inspect", pwn_gguf, "--json")
    assert r.returncode == 0 and inert(r.stdout)
    assert json.loads(r.stdout)["metadata"]["general.name"] == PWN          # the document keeps the value
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


# -- 25. catastrophic backtracking in a recipe or -ot pattern -----------------------------------------

def test_backtracking_patterns_run_in_bounded_time(tmp_path):
    folder = tmp_path / "dq-planner" / "schemes"
    folder.mkdir(parents=True)
    (folder / "slow.toml").write_text("id = \"SLOW\"\nbase = \"Q4_K_M\"\n"
                                      "rules = [ { pattern = '(.|.)*z', type = \"q4_K\" },"
                                      " { pattern = '(a+)+$', type = \"q5_K\" } ]\n")
    r = dq("--headless", "--device", "h100", "--json", timeout=60, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "SLOW" in {s["id"] for s in json.loads(r.stdout)["schemes"]}
    r = dq("--headless", "--device", "h100", "--scheme", "Q4_K_M", "--gpus", "1", "-ot", "(.|.)*z=CPU", "-ot",
           "(x+x+)+y=CPU", "--json", timeout=60)
    assert r.returncode == 0, r.stderr


def test_bounded_matcher_agrees_with_re():
    """The automaton answers as Python's re (which schemes.pattern_problem keeps within llama.cpp's
    std::regex) on every pattern and name of a generated corpus; a back-reference is refused."""
    import random
    import re

    from planner.core.llamacpp.regex_match import Pattern, compile_pattern

    rnd = random.Random(7)
    atoms = ["a", "b", ".", "[ab]", "[^a]", "\\d", "\\.", "(a|b)", "(ab|a)", "x", "^", "$", "\\b", "(?=a)",
             "(?!b)", "[0-9]", "\\w"]

    def gen(d: int = 0) -> str:
        out = ""
        for _ in range(rnd.randint(1, 4)):
            r = rnd.random()
            a = (f"({gen(d + 1)})" if r < 0.15 and d < 3 else f"({gen(d + 1)}|{gen(d + 1)})" if r < 0.25 and d < 3
                 else rnd.choice(atoms))
            if not a.startswith(("^", "$", "\\b", "(?")):
                a += rnd.choice(["", "", "*", "+", "?", "{1,2}", "*?", "{2}"])
            out += a
        return out
    n = 0
    for _ in range(1500):
        p = gen()
        try:
            r = re.compile(p)
        except re.error:
            continue
        m = Pattern(p)
        m._re = None                          # the automaton itself, not the re shortcut
        for _ in range(8):
            s = "".join(rnd.choice("ab.x1 _") for _ in range(rnd.randint(0, 8)))
            assert bool(r.search(s)) == bool(m.search(s)), (p, s)
            n += 1
    assert n > 8000
    with pytest.raises(ValueError, match="back-reference"):
        compile_pattern(r"(a)\1")


# -- 26. amplification: a header that would make the process allocate gigabytes -----------------------

@pytest.mark.parametrize("what", ["array", "tensors"])
def test_header_amplification_is_refused_before_allocating(tmp_path, what):
    import struct
    import tracemalloc

    from planner.errors import PlannerError
    from planner.gguf.header import read_gguf

    f = tmp_path / "amp.gguf"
    with open(f, "wb") as out:
        if what == "array":       # 100M int32 items (400 MB sparse on disk)
            out.write(b"GGUF" + struct.pack("<IQQ", 3, 0, 1))
            key = b"evil.array"
            out.write(struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, 5, 100_000_000))
            out.truncate(out.tell() + 400_000_000)
        else:                     # 2M tensor infos
            out.write(b"GGUF" + struct.pack("<IQQ", 3, 2_000_000, 0))
            out.truncate(80_000_000)
    tracemalloc.start()
    with pytest.raises(PlannerError, match="not read"):
        read_gguf(f)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20


# -- 27. NaN in a device profile ---------------------------------------------------------------------

def test_nan_in_a_device_profile_is_refused(tmp_path):
    src = (ROOT / "profiles" / "hardware" / "h100.toml").read_text()
    bad = tmp_path / "nan.toml"
    bad.write_text("\n".join(ln for ln in src.splitlines() if not ln.startswith("bandwidth_gbs"))
                   + "\nbandwidth_gbs = nan\n")
    r = dq("--headless", "--device", bad, "--scheme", "Q4_K_M", "--json")
    assert r.returncode == 2 and "bandwidth_gbs" in one_line(r) and "finite" in r.stderr


# -- 28. one line instead of a traceback --------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (("--host-ram", "1e300"), "--host-ram"),
    (("--from-command", "llama-server -m x.gguf -ngl \u00b2"), "-ngl must be an integer"),
    (("--tensor-split", "1e308,1e308"), "32-bit floats"),
])
def test_bad_numbers_are_one_line(args, words):
    r = dq("--headless", "--device", "h100", "--scheme", "Q4_K_M", *args)
    assert r.returncode == 2 and words in one_line(r)


def test_deeply_nested_toml_is_skipped_with_a_warning(tmp_path):
    folder = tmp_path / "dq-planner" / "hardware"
    folder.mkdir(parents=True)
    (folder / "deep.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    r = dq("--headless", "--device", "h100", "--scheme", "Q4_K_M", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert r.returncode == 0 and "nested too deeply" in one_line(r)
    r = dq("--headless", "--device", folder / "deep.toml", "--scheme", "Q4_K_M")
    assert r.returncode == 2 and "nested too deeply" in one_line(r)


@pytest.mark.parametrize("where", ["/etc/passwd/sub", "/proc/self/newdir", "long", "dangling"])
def test_export_commands_into_impossible_folders(tmp_path, where):
    if where == "long":
        where = str(tmp_path / ("a" * 300))
    elif where == "dangling":
        (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
        where = str(tmp_path / "gone")
    r = dq("--headless", "--device", "h100", "--scheme", "Q4_K_M", "--export-commands", where)
    assert r.returncode == 2 and one_line(r).startswith("dq-planner: ")
    assert not (tmp_path / "nowhere").exists()


def test_dangling_launch_script_link_is_not_replaced_without_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "launch.sh").symlink_to(tmp_path / "elsewhere.sh")
    r = dq("--headless", "--device", "h100", "--scheme", "Q4_K_M", "--export-commands", out)
    assert r.returncode == 2 and "already exist" in one_line(r)
    assert (out / "launch.sh").is_symlink() and not (tmp_path / "elsewhere.sh").exists()


# -- 29. numbers as llama.cpp reads them ------------------------------------------------------------

def test_pasted_numbers_are_read_as_std_stoi(tiny_gguf):
    src = tiny_gguf("deepseek2-mla")
    r = dq("--headless", "--device", "h100", "--json", "--from-command", f"llama-server -m {src} -c 32_768 -ngl 99")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["context"] == 32
    assert "llama.cpp reads 32" in r.stderr
    for bad in ("-c \u0663\u0662\u0667\u0666\u0668", "-ngl \u0663", "-c ''", "-c 99999999999"):
        r = dq("--headless", "--device", "h100", "--from-command", f"llama-server -m {src} {bad}")
        assert r.returncode == 2 and one_line(r)
    for flag in ("--ctx", "--gpus"):
        r = dq("--headless", "--device", "h100", "--scheme", "Q4_K_M", flag, "\u0663\u0662")
        assert r.returncode == 2 and "digits 0-9" in one_line(r)
