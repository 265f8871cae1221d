"""Issue 17, items 1-5 and 17: quantize never loses a file, never leaves one, exits 128+signal.

The runs are real `dq-planner quantize` processes with the real llama-quantize (the `llama` extra);
like every llama.cpp test they fail under CI when the binaries are missing.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest

from llamacpp_support import ROOT, dq, processes_using, require_llama_cpp
from planner.gguf.header import read_header


@pytest.fixture(scope="module")
def lc():
    return require_llama_cpp("llama-quantize")


@pytest.fixture(scope="module")
def slow_gguf(tmp_path_factory):
    """A 12-layer tiny llama: IQ4_XS/IQ4_NL take a few seconds on one thread, long enough to overlap
    two runs or to signal one mid-way."""
    from planner.gguf.writer import model_from_hparams, write_gguf
    from tiny_models import tiny_llama_hparams

    folder = tmp_path_factory.mktemp("slow")
    return write_gguf(folder / "big.gguf", model_from_hparams(tiny_llama_hparams(n_layer=12, n_ff=1024)))[0]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def partials(folder: Path) -> list[str]:
    return [n for n in names(folder) if ".partial-" in n]


def start(src: Path, out: Path, scheme: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "planner.cli", "quantize", "--input", str(src), "--scheme",
                             scheme, "--output", str(out), "--threads", "1"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def plan_for(src: Path, scheme: str):
    from planner.core.llamacpp.schemes import resolve_scheme
    from planner.core.llamacpp.sizing import size_scheme
    from planner.gguf.model import model_from_gguf

    return size_scheme(model_from_gguf(str(src)), resolve_scheme(scheme), imatrix=False)


# -- 1. two runs into the same output ------------------------------------------------------------

def test_race_two_runs_one_output_the_winners(lc, slow_gguf, tmp_path):
    from planner.engines.llamacpp.quantize import read_file_table, verify_file

    out = tmp_path / "out.gguf"
    runs = {"IQ4_XS": start(slow_gguf, out, "IQ4_XS"), "IQ4_NL": start(slow_gguf, out, "IQ4_NL")}
    res = {}
    try:
        for s, p in runs.items():
            res[s] = (p.wait(timeout=120), p.stderr.read())
    finally:
        for p in runs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = sorted(rc for rc, _ in res.values())
    assert codes == [0, 1], res
    winner = next(s for s, (rc, _) in res.items() if rc == 0)
    loser = next(s for s in res if s != winner)
    last = res[loser][1].strip().splitlines()[-1]
    assert last.startswith(f"dq-planner: {out} appeared while quantizing (another run?); not replacing it"), last
    # exactly one complete output, the winner's (the two schemes type the tensors differently)
    assert names(tmp_path) == ["out.gguf"]
    table = read_file_table(out)
    assert verify_file(plan_for(slow_gguf, winner), table) == []
    assert verify_file(plan_for(slow_gguf, loser), table) != []
    assert read_header(out).data_complete


def test_publish_never_replaces(tmp_path):
    """The publishing step itself: renameat2(RENAME_NOREPLACE) and the link+unlink fallback both
    refuse an existing output and leave the partial in place for the caller to remove."""
    import planner.engines.output_files as q

    for use_renameat2 in (True, False):
        d = tmp_path / str(use_renameat2)
        d.mkdir()
        tmp, dst = d / ".out.partial-1", d / "out"
        tmp.write_bytes(b"new")
        dst.write_bytes(b"theirs")
        saved = q._RENAMEAT2
        if not use_renameat2:
            q._RENAMEAT2 = None
        try:
            with pytest.raises(FileExistsError):
                q.publish(tmp, dst)
            assert dst.read_bytes() == b"theirs" and tmp.read_bytes() == b"new"
            dst.unlink()
            q.publish(tmp, dst)
            assert dst.read_bytes() == b"new" and names(d) == ["out"]
        finally:
            q._RENAMEAT2 = saved
    if sys.platform.startswith("linux"):
        assert q._RENAMEAT2 is not None          # glibc's renameat2 is what Linux uses


# -- 2, 4. signals: a second one cannot cut the cleanup short; 128 + the signal ---------------------

@pytest.mark.parametrize("signals, gap, code", [
    ((signal.SIGINT, signal.SIGINT), 0.001, 130),      # two Ctrl-C a millisecond apart
    ((signal.SIGTERM,), 0, 143),
    # a different signal during the cleanup changes nothing; 0.1 s apart, because two different signals
    # pending at once are handled by Python in signal-number order (SIGINT before SIGTERM), not arrival order
    ((signal.SIGTERM, signal.SIGINT), 0.1, 143),
    ((signal.SIGHUP,), 0, 129),
])
def test_signals_leave_nothing(lc, slow_gguf, tmp_path, signals, gap, code):
    out = tmp_path / "out.gguf"
    p = start(slow_gguf, out, "IQ4_XS")
    try:
        deadline = time.monotonic() + 60
        while not [q for q in processes_using(slow_gguf) if q != p.pid] or not partials(tmp_path):
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        quantizers = [q for q in processes_using(slow_gguf) if q != p.pid]
        for i, s in enumerate(signals):
            if i:
                time.sleep(gap)
            os.kill(p.pid, s)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == code, err
    first = signal.Signals(signals[0])
    assert err.strip().splitlines()[-1] == "dq-planner: interrupted" + ("" if first == signal.SIGINT else f" by {first.name}")
    assert all(not Path(f"/proc/{q}").exists() for q in quantizers) and processes_using(slow_gguf) == []
    assert names(tmp_path) == []                 # no output, no partial


# -- 3, 17. stale partials go before the free-space check; tiny sizes in bytes ---------------------

def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _fake_disk(monkeypatch, folder: Path, capacity: int) -> None:
    """A disk of `capacity` bytes holding the files of `folder` (their apparent sizes)."""
    import shutil

    Usage = namedtuple("Usage", "total used free")

    def usage(path):
        used = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        return Usage(capacity, used, max(capacity - used, 0))

    monkeypatch.setattr(shutil, "disk_usage", usage)


def _need(src: Path, scheme: str) -> int:
    from planner.engines.llamacpp.quantize import needed_bytes

    return needed_bytes(plan_for(src, scheme), read_header(src).data_offset)


def test_stale_partial_is_removed_before_the_free_space_check(lc, tiny_gguf, tmp_path, monkeypatch, capsys):
    from planner.cli import main

    src = tiny_gguf("llama")
    need = _need(src, "Q8_0")
    folder = tmp_path / "disk"
    folder.mkdir()
    stale = folder / f".out.gguf.partial-{_dead_pid()}"
    with open(stale, "wb") as f:
        f.truncate(need)                          # a killed run's partial: as large as the output
    _fake_disk(monkeypatch, folder, need + need // 2)
    rc = main(["quantize", "--input", str(src), "--scheme", "Q8_0", "--output", str(folder / "out.gguf")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert names(folder) == ["out.gguf"]          # the stale partial is gone, the output complete
    assert read_header(folder / "out.gguf").data_complete


def test_tiny_sizes_are_told_in_bytes(lc, tiny_gguf, tmp_path, monkeypatch, capsys):
    """A partial of a run still going (this test's own parent) is kept; the check then refuses, and a
    size below 0.01 GiB is told in bytes, not as 0.00 GiB."""
    from planner.cli import main

    src = tiny_gguf("llama")
    need = _need(src, "Q8_0")
    assert need < (1 << 30) // 100
    folder = tmp_path / "disk"
    folder.mkdir()
    live = folder / f".out.gguf.partial-{os.getppid()}"
    with open(live, "wb") as f:
        f.truncate(need)
    _fake_disk(monkeypatch, folder, need + need // 2)
    rc = main(["quantize", "--input", str(src), "--scheme", "Q8_0", "--output", str(folder / "out.gguf")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1] == (f"dq-planner: not enough free disk space in {folder}: the output needs {need} bytes, "
                       f"{need // 2} bytes are free")
    assert names(folder) == [live.name]           # the other run's partial untouched, nothing added


def test_size_text():
    from planner.units import size_text

    assert size_text(524288) == "524288 bytes" and size_text(1) == "1 byte"
    assert size_text(10 << 20) == "10485760 bytes"                 # 0.0098 GiB
    assert size_text(11 << 20) == "0.01 GiB (11534336 bytes)"
    assert size_text(3 << 30) == "3.00 GiB (3221225472 bytes)"


# -- 5. an output name longer than the file system allows ----------------------------------------

def test_too_long_output_name_is_exit_2(lc, tiny_gguf, tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    out = tmp_path / ("x" * (limit + 1) + ".gguf")
    r = dq("quantize", "--input", tiny_gguf("llama"), "--scheme", "Q8_0", "--output", out)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.endswith(f"{os.strerror(errno.ENAMETOOLONG)} (the name has {limit + 6} bytes; the file system of {tmp_path} "
                         f"allows {limit})")
    assert names(tmp_path) == []


def test_longest_output_name_works(lc, tiny_gguf, tmp_path):
    """A name at the file system's limit: the partial beside it gets a shortened name, the output
    the name asked for."""
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    out = tmp_path / ("y" * (limit - 5) + ".gguf")
    r = dq("quantize", "--input", tiny_gguf("llama"), "--scheme", "Q8_0", "--output", out)
    assert r.returncode == 0, r.stderr
    assert names(tmp_path) == [out.name] and read_header(out).data_complete
