"""dq-planner quantize end to end with the real llama-quantize, failures included.

Every failure must leave no partial output (nor touch an existing OUT), quote llama.cpp's own error and
exit 1; paths with spaces, quotes and ';' must reach llama-quantize as single arguments.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llamacpp_support import ROOT, dq, processes_using, require_llama_cpp
from planner.gguf.header import read_header

ODD = "dir with spaces; 'quotes' \"and\" $(semicolons)"


@pytest.fixture(scope="module")
def lc():
    return require_llama_cpp("llama-quantize", "llama-imatrix")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def test_quantize_recipe_with_odd_paths(lc, tiny_gguf, tmp_path):
    d = tmp_path / ODD
    d.mkdir()
    src = d / "in put; rm -rf x 'q'.gguf"
    shutil.copy(tiny_gguf("deepseek2-mla"), src)
    out = d / "out \"file\"; echo pwned.gguf"
    r = dq("quantize", "--input", src, "--scheme", "DQ3_K_M", "--output", out, "--threads", "2")
    assert r.returncode == 0, r.stderr
    assert "every tensor's type and bytes as planned" in r.stdout
    assert sorted(p.name for p in d.iterdir()) == sorted([src.name, out.name])   # nothing else created
    h = read_header(out)
    assert h.tensor_count == 52 and h.data_complete
    types = {t.name: t.type_name for t in h.tensors}
    assert types["blk.1.ffn_down_exps.weight"] == "q3_K" and types["output.weight"] == "q6_K"
    # progress on a non-terminal stderr: plain lines, no carriage returns
    assert "quantize DQ3_K_M 100% (52 tensors" in r.stderr and "\r" not in r.stderr


def test_dry_run(lc, tiny_gguf):
    r = dq("quantize", "--input", tiny_gguf("llama"), "--scheme", "IQ2_XXS", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "every tensor's type and size as planned" in r.stdout
    assert "needs an importance matrix" in r.stdout


def test_refuses_to_overwrite_without_force(lc, tiny_gguf, tmp_path):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"mine")
    r = dq("quantize", "--input", tiny_gguf("qwen2"), "--scheme", "Q4_K_M", "--output", out)
    assert r.returncode == 2 and "exists; pass --force" in r.stderr
    assert out.read_bytes() == b"mine"
    r = dq("quantize", "--input", tiny_gguf("qwen2"), "--scheme", "Q4_K_M", "--output", out, "--force")
    assert r.returncode == 0, r.stderr
    assert read_header(out).tensor_count == len(read_header(tiny_gguf("qwen2")).tensors)
    assert leftovers(tmp_path) == []


def test_bad_input_is_one_line_exit_2(lc, tiny_gguf, tmp_path):
    for args, msg in [
        (["--input", tmp_path / "missing.gguf", "--scheme", "Q4_K_M", "--output", tmp_path / "o.gguf"], "no such file"),
        (["--input", tiny_gguf("qwen2"), "--scheme", "Q9_K", "--output", tmp_path / "o.gguf"], "unknown scheme"),
        (["--input", tiny_gguf("qwen2"), "--scheme", "DQ3_K_M", "--output", tmp_path / "o.gguf"], "recipe for deepseek2"),
        (["--input", tiny_gguf("qwen2"), "--scheme", "IQ2_XXS", "--output", tmp_path / "o.gguf"], "--imatrix"),
        (["--input", tiny_gguf("qwen2"), "--scheme", "Q4_K_M"], "--output is required"),
        (["--input", tiny_gguf("qwen2"), "--scheme", "Q4_K_M", "--output", tiny_gguf("qwen2"), "--force"], "is the input"),
    ]:
        r = dq("quantize", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "o.gguf").exists()


def test_truncated_input(lc, tiny_gguf, tmp_path):
    src = tmp_path / "cut.gguf"
    src.write_bytes(tiny_gguf("deepseek2-mla").read_bytes()[:120_000])
    out = tmp_path / "out.gguf"
    r = dq("quantize", "--input", src, "--scheme", "Q4_K_M", "--output", out)
    assert r.returncode == 1
    assert "data is not within the file bounds, model is corrupted or incomplete" in r.stderr
    assert not out.exists() and leftovers(tmp_path) == []


def nan_copy(src: Path, dst: Path) -> Path:
    """`src` with NaN weights in its last expert tensor: llama-quantize fails after writing the others."""
    shutil.copy(src, dst)
    t = [t for t in read_header(dst).tensors if t.name.endswith("ffn_up_exps.weight")][-1]
    with open(dst, "r+b") as f:
        f.seek(t.offset)
        f.write(b"\xff" * t.bytes)
    return dst


def test_corrupt_data_leaves_no_partial_and_keeps_existing_output(lc, tiny_gguf, tmp_path):
    src = nan_copy(tiny_gguf("deepseek2-mla"), tmp_path / "nan.gguf")
    out = tmp_path / "out.gguf"
    out.write_bytes(b"previous result")
    r = dq("quantize", "--input", src, "--scheme", "Q4_K_M", "--output", out, "--force")
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("dq-planner: llama-quantize failed (exit 1): tensor 'blk.2.ffn_up_exps.weight' has invalid data")
    assert out.read_bytes() == b"previous result"           # the user's file is untouched
    assert leftovers(tmp_path) == []                         # llama.cpp's partial file was removed


def test_write_failure_file_size_limit(lc, tiny_gguf, tmp_path):
    """The output cannot grow past 1 MiB (RLIMIT_FSIZE): the write fails as on a full disk."""
    out = tmp_path / "out.gguf"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    r = dq("quantize", "--input", tiny_gguf("deepseek2-mla"), "--scheme", "Q8_0", "--output", out,
           preexec_fn=limit)
    assert r.returncode == 1, r.stderr
    assert "llama-quantize failed (exit 1): basic_ios::clear: iostream error" in r.stderr
    assert "disk full or a file size limit" in r.stderr
    assert not out.exists() and leftovers(tmp_path) == []


def _small_tmpfs(folder: Path) -> list[str] | None:
    """A command prefix that runs its argument list with a 256 KiB tmpfs on `folder`, or None."""
    probe = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)]
    if os.geteuid() == 0 and shutil.which("mount"):
        r = subprocess.run(probe, capture_output=True)
        if r.returncode == 0:
            subprocess.run(["umount", str(folder)], check=True)
            return ["sh", "-c", 'mount -t tmpfs -o size=256k tmpfs "$0" && "$@"; rc=$?; umount "$0"; exit $rc',
                    str(folder)]
    if shutil.which("unshare"):
        cmd = ["unshare", "-Urm", "sh", "-c", 'mount -t tmpfs -o size=256k tmpfs "$0" && exec "$@"', str(folder)]
        if subprocess.run(cmd + ["true"], capture_output=True).returncode == 0:
            return cmd
    return None


def test_disk_too_small_is_refused_before_running(lc, tiny_gguf, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "small disk"
    folder.mkdir()
    out = folder / "out.gguf"
    prefix = _small_tmpfs(folder)
    if prefix is not None:
        r = subprocess.run(prefix + [sys.executable, "-m", "planner.cli", "quantize", "--input",
                                     str(tiny_gguf("deepseek2-mla")), "--scheme", "Q4_K_M", "--output", str(out)],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        rc, err = r.returncode, r.stderr
    else:
        # no way to mount a small disk here: the free-space figure is faked at its one call
        from collections import namedtuple

        import planner.engines.llamacpp.quantize as qmod
        from planner.cli import main

        Usage = namedtuple("Usage", "total used free")
        monkeypatch.setattr(qmod.shutil, "disk_usage", lambda p: Usage(256 << 10, 0, 256 << 10))
        rc = main(["quantize", "--input", str(tiny_gguf("deepseek2-mla")), "--scheme", "Q4_K_M", "--output", str(out)])
        err = capsys.readouterr().err
    assert rc == 1, err
    assert "not enough free disk space" in err and "the output needs" in err
    assert "quantize Q4_K_M" not in err                     # llama-quantize never started
    assert not out.exists() and leftovers(folder) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_interrupt_kills_llama_quantize_and_removes_the_partial_file(lc, tmp_path, sig, code):
    from planner.gguf.writer import model_from_hparams, write_gguf
    from tiny_models import tiny_llama_hparams

    src = write_gguf(tmp_path / "big.gguf", model_from_hparams(tiny_llama_hparams(n_layer=16, n_ff=2048)))[0]
    out = tmp_path / "out.gguf"
    p = subprocess.Popen([sys.executable, "-m", "planner.cli", "quantize", "--input", str(src), "--scheme",
                          "IQ4_XS", "--output", str(out), "--threads", "1"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not leftovers(tmp_path) or not processes_using(src):
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        quantizers = processes_using(src)
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == code, err
    assert err.strip().splitlines()[-1] == "dq-planner: interrupted" + ("" if sig == signal.SIGINT else f" by {sig.name}")
    assert processes_using(src) == [] and all(not Path(f"/proc/{q}").exists() for q in quantizers)
    assert not out.exists() and leftovers(tmp_path) == []


def test_verification_reports_a_difference(lc, tiny_gguf, tmp_path, monkeypatch, capsys):
    """A plan that disagrees with what llama-quantize wrote: every difference listed, exit 1."""
    import planner.core.llamacpp.sizing as sizing
    from planner.cli import main

    real = sizing.size_scheme

    def wrong(model, scheme, imatrix=None):
        sp = real(model, scheme, imatrix)
        t = next(t for t in sp.tensors if t.name == "blk.0.ffn_down.weight")
        t.type = "q8_0"
        return sp

    monkeypatch.setattr(sizing, "size_scheme", wrong)
    out = tmp_path / "out.gguf"
    rc = main(["quantize", "--input", str(tiny_gguf("llama")), "--scheme", "Q4_K_M", "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "blk.0.ffn_down.weight: type planned q8_0, llama.cpp q4_K" in err
    assert "2 difference(s) from the plan" in err             # llama-quantize's line and the file's header
    assert "differs from the plan for 1 tensor(s) of 40" in err
    assert out.exists()                                       # a complete GGUF: kept, the exit status says it


def test_llama_quantize_dies_with_a_killed_dq_planner(lc, tmp_path):
    """SIGKILL cannot be handled: the kernel stops llama-quantize (PR_SET_PDEATHSIG), and the next run for
    the same output removes the partial file the killed run left."""
    from planner.gguf.writer import model_from_hparams, write_gguf
    from tiny_models import tiny_llama_hparams

    src = write_gguf(tmp_path / "big.gguf", model_from_hparams(tiny_llama_hparams(n_layer=16, n_ff=2048)))[0]
    out = tmp_path / "out.gguf"
    p = subprocess.Popen([sys.executable, "-m", "planner.cli", "quantize", "--input", str(src), "--scheme",
                          "IQ4_XS", "--output", str(out), "--threads", "1"], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not leftovers(tmp_path) or len(processes_using(src)) < 2:
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        quantizer = [q for q in processes_using(src) if q != p.pid]
        p.kill()
        p.wait()
        deadline = time.monotonic() + 20
        while processes_using(src):
            assert time.monotonic() < deadline, f"llama-quantize {quantizer} outlived dq-planner"
            time.sleep(0.05)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert len(leftovers(tmp_path)) == 1                     # SIGKILL: nothing could clean up
    r = dq("quantize", "--input", tiny_gguf_path(tmp_path), "--scheme", "Q8_0", "--output", out)
    assert r.returncode == 0, r.stderr
    assert leftovers(tmp_path) == [] and out.exists()


def tiny_gguf_path(folder: Path) -> Path:
    from planner.gguf.writer import write_gguf
    from tiny_models import tiny_model

    return write_gguf(folder / "small.gguf", tiny_model("llama"))[0]


def test_split_input_by_its_first_shard(lc, tmp_path):
    from planner.gguf.writer import write_gguf
    from tiny_models import tiny_model

    shards = write_gguf(tmp_path / "m.gguf", tiny_model("qwen2"), split_max_tensors=20)
    assert len(shards) == 3
    out = tmp_path / "q.gguf"
    r = dq("quantize", "--input", shards[0], "--scheme", "Q4_K_M", "--output", out)
    assert r.returncode == 0, r.stderr
    assert read_header(out).tensor_count == len(tiny_model("qwen2").tensors) and read_header(out).split_count == 1


def test_long_recipe_goes_as_a_tensor_type_file(lc, tiny_gguf, tmp_path):
    """A user's recipe with more rules than fit comfortably on a command line: --tensor-type-file, same
    first-match semantics."""
    from planner.core.llamacpp.schemes import load_recipe
    from planner.core.llamacpp.sizing import size_scheme
    from planner.engines.llamacpp.argv import TENSOR_TYPE_FILE_THRESHOLD
    from planner.engines.llamacpp.quantize import compare_log, read_file_table, run_quantize, verify_file
    from tiny_models import tiny_model

    types = ["q8_0", "q6_K", "q5_K", "q4_K", "q3_K"]
    rules = [f'  {{ pattern = \'^blk\\.{i}\\.ffn_(up|gate)\', type = "{types[i % 5]}" }},' for i in range(60)]
    rules.append('  { pattern = \'attn_kv_a_mqa\', type = "q8_0" },')
    recipe = tmp_path / "long.toml"
    recipe.write_text('id = "LONG"\nbase = "Q4_K_M"\nrules = [\n' + "\n".join(rules) + "\n]\n")
    s = load_recipe(recipe)
    assert len(s.rules) > TENSOR_TYPE_FILE_THRESHOLD
    model = tiny_model("deepseek2-mla")
    plan = size_scheme(model, s, imatrix=False)
    out = tmp_path / "long.gguf"
    res = run_quantize(lc, tiny_gguf("deepseek2-mla"), out, s, plan, threads=2)
    assert "--tensor-type-file" in res.argv and "--tensor-type" not in res.argv
    assert res.log.overrides["blk.1.ffn_up_exps.weight"] == ("q4_K", "q6_K")
    assert compare_log(plan, res.log) == [] and verify_file(plan, read_file_table(out)) == []
    r = dq("quantize", "--input", tiny_gguf("deepseek2-mla"), "--scheme", recipe, "--dry-run")
    assert r.returncode == 0 and "as planned" in r.stdout, r.stderr
