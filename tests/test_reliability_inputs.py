"""Issue 17, items 6, 8, 11-16: hostile input ends in one line on stderr and exit 2 (or a plan that
says what it skipped), quickly, and no file is created, changed or removed."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llamacpp_support import ROOT, require_llama_cpp

PLAN = ["--headless", "--device", "h100", "--scheme", "Q4_K_M"]


def dq(*args, timeout: float = 30, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, DQ_PLANNER_DETECT="0")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "planner.cli", *map(os.fspath, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=e)


def dq_here(*args) -> subprocess.CompletedProcess:
    """The command run in this process (planner.cli.main): for the checks a child process adds nothing to
    (no FIFO that could hang it, no environment of its own)."""
    import contextlib
    import io

    from planner.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = os.environ.get("DQ_PLANNER_DETECT")
    os.environ["DQ_PLANNER_DETECT"] = "0"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([os.fspath(a) for a in args])
    finally:
        if saved is None:
            os.environ.pop("DQ_PLANNER_DETECT", None)
        else:
            os.environ["DQ_PLANNER_DETECT"] = saved
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def one_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.lstat().st_size for p in sorted(folder.rglob("*"))}


# -- 6. non-regular files ------------------------------------------------------------------------

@pytest.fixture
def odd_files(tmp_path):
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    (tmp_path / "folder.gguf").mkdir()
    (tmp_path / "dangling.gguf").symlink_to(tmp_path / "gone.gguf")
    return {"fifo": (fifo, "is a FIFO (named pipe), not a file"),
            "folder": (tmp_path / "folder.gguf", "is a directory, not a file"),
            "device": (Path("/dev/null"), "is a character device, not a file"),
            "dangling": (tmp_path / "dangling.gguf", f"is a dangling symbolic link (to {tmp_path / 'gone.gguf'}"),
            "missing": (tmp_path / "missing.gguf", "no such file")}


@pytest.mark.parametrize("kind", ["fifo", "folder", "device", "dangling", "missing"])
@pytest.mark.parametrize("command", ["inspect", "--model-file"])
def test_non_regular_files_are_refused(odd_files, tmp_path, kind, command):
    path, words = odd_files[kind]
    before = tree(tmp_path)
    t = time.monotonic()
    r = dq("inspect", path) if command == "inspect" else dq(*PLAN, "--model-file", path)
    assert time.monotonic() - t < 20              # a FIFO used to block for ever
    assert r.returncode == 2
    line = one_line(r)
    assert line.startswith("dq-planner: ") and str(path) in line and words in line
    assert tree(tmp_path) == before


def test_quantize_input_fifo(odd_files, tmp_path):
    path, words = odd_files["fifo"]
    before = tree(tmp_path)
    r = dq("quantize", "--input", path, "--scheme", "Q8_0", "--output", tmp_path / "o.gguf")
    assert r.returncode == 2 and "--input" in one_line(r) and str(path) in one_line(r) and words in one_line(r)
    assert tree(tmp_path) == before


def test_serve_model_file_fifo(odd_files, tmp_path):
    require_llama_cpp("llama-server")
    path, words = odd_files["fifo"]
    before = tree(tmp_path)
    r = dq("serve", "--model-file", path, "--print-command")
    assert r.returncode == 2 and one_line(r).endswith(f"{path}: {words}")
    assert tree(tmp_path) == before


def test_fifo_in_the_profiles_folder_does_not_hang(tmp_path):
    (tmp_path / "dq-planner" / "hardware").mkdir(parents=True)
    os.mkfifo(tmp_path / "dq-planner" / "hardware" / "pipe.toml")
    r = dq(*PLAN, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert r.returncode == 0
    line = one_line(r)
    assert "warning" in line and str(tmp_path / "dq-planner" / "hardware" / "pipe.toml") in line and "FIFO" in line


# -- 8, 12. huge counts and overflowing tensors in a header --------------------------------------

def patch_u32(src: Path, dst: Path, key: str, value: int) -> Path:
    data = bytearray(src.read_bytes())
    k = key.encode()
    i = data.find(struct.pack("<Q", len(k)) + k)
    assert i > 0, key
    j = i + 8 + len(k)
    assert struct.unpack_from("<I", data, j)[0] == 4          # GGUF uint32
    struct.pack_into("<I", data, j + 4, value)
    dst.write_bytes(data)
    return dst


@pytest.mark.parametrize("kind, key, value, words", [
    ("llama", "llama.block_count", 1 << 31,
     "GGUF metadata 'llama.block_count' is 2147483648, more than llama.cpp loads (512 layers, LLAMA_MAX_LAYERS)"),
    ("llama", "llama.block_count", 3, "tensor blk.3 but GGUF metadata 'llama.block_count' says 3 layers"),
    ("deepseek2-mla", "deepseek2.expert_count", 1 << 31,
     "GGUF metadata 'deepseek2.expert_count' is 2147483648, more than llama.cpp loads (1024 experts"),
    ("llama", "llama.attention.head_count_kv", (1 << 32) - 1, "tensor blk.0.attn_k.weight has shape [256, 64] but"),
    ("llama", "llama.feed_forward_length", (1 << 32) - 1, "tensor blk.0.ffn_gate.weight has shape [256, 512] but"),
])
def test_huge_counts_are_refused_quickly(tiny_gguf, tmp_path, kind, key, value, words):
    bad = patch_u32(tiny_gguf(kind), tmp_path / "bad.gguf", key, value)
    t = time.monotonic()
    r = dq_here(*PLAN, "--model-file", bad)
    assert time.monotonic() - t < 10
    assert r.returncode == 2 and one_line(r).startswith(f"dq-planner: {bad}: {words}")


def _gguf(tensors: list[tuple[str, tuple[int, ...], int, int]]) -> bytes:
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 0)
    for name, shape, ttype, offset in tensors:
        n = name.encode()
        out += struct.pack("<Q", len(n)) + n + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in shape) + struct.pack("<IQ", ttype, offset)
    return out


@pytest.mark.parametrize("tensors, words", [
    ([("t.weight", (1 << 32, 1 << 32), 0, 0)], "tensor 't.weight' of shape [4294967296, 4294967296] has "
                                               "18446744073709551616 elements, more than 2^63-1"),
    ([("a.weight", (1 << 62, 2), 0, 0)], "has 9223372036854775808 elements, more than 2^63-1"),
    ([("a.weight", (1 << 61,), 0, 0), ("b.weight", (1 << 61,), 0, 1 << 63)],
     "the data of tensor 'b.weight' would end at byte"),
    ([("a.weight", (32,), 0, 0), ("b.weight", (32,), 0, 1 << 40)],
     "tensor 'b.weight' data offset 1099511627776, expected 128"),
])
def test_overflowing_tensors_are_header_errors(tmp_path, tensors, words):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(_gguf(tensors))
    r = dq_here("inspect", bad)
    assert r.returncode == 2 and words in one_line(r) and str(bad) in one_line(r)


# -- 11. malformed Hugging Face configs ----------------------------------------------------------

def _config() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "profiles" / "models" / "deepseek-r1-distill-llama-8b.toml").read_text())["config"]


@pytest.mark.parametrize("mutate, words", [
    (lambda raw: raw.replace(b'"LlamaForCausalLM"', b'"Llama\xffForCausalLM"'), "not UTF-8 text (byte"),
    (lambda raw: json.dumps(dict(json.loads(raw), rope_scaling=[{"rope_type": "llama3"}])).encode(),
     "'rope_scaling' must be an object or null, got a list"),
    (lambda raw: json.dumps(dict(json.loads(raw), quantization_config={"quant_method": [None]})).encode(),
     "'quantization_config.quant_method' must be a string or null, got a list"),
    (lambda raw: json.dumps(dict(json.loads(raw), max_position_embeddings="long")).encode(),
     "'max_position_embeddings' must be a non-negative integer, got \"long\""),
    (lambda raw: json.dumps(dict(json.loads(raw), num_hidden_layers=10 ** 9)).encode(),
     "'num_hidden_layers' is 1000000000, more than llama.cpp accepts (512, LLAMA_MAX_LAYERS)"),
    (lambda raw: json.dumps(dict(json.loads(raw), architectures=5)).encode(),
     "'architectures' must be a list of class names, got 5"),
    (lambda raw: raw.replace(b'"hidden_size": 4096', b'"hidden_size": NaN'), "not valid JSON (NaN is not a JSON number"),
])
def test_malformed_config_json(tmp_path, mutate, words):
    raw = json.dumps(_config()).encode()
    folder = tmp_path / "model"
    folder.mkdir()
    new = mutate(raw)
    assert new != raw
    (folder / "config.json").write_bytes(new)
    before = tree(tmp_path)
    r = dq_here(*PLAN, "--model", folder)
    assert r.returncode == 2
    line = one_line(r)
    assert str(folder / "config.json") in line and words in line
    assert tree(tmp_path) == before


def test_nested_nulls_are_absent_keys(tmp_path):
    cfg = dict(_config(), rope_scaling={"rope_type": None, "factor": None}, max_position_embeddings=None,
               quantization_config=None)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = dq_here(*PLAN, "--model", tmp_path, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schemes"][0]["id"] == "Q4_K_M" and doc["schemes"][0]["size_bytes"] > 0


# -- 13. recipe patterns with llama-quantize's rules ---------------------------------------------

@pytest.mark.parametrize("pattern, words", [
    ("", "pattern '' is empty"),
    ("attn=x", "pattern 'attn=x' contains '='"),
    ("attn q", "contains whitespace"),
    ("(?<!x)ffn", "uses the group '(?<'"),
    ("(?i)ffn", "uses the group '(?i'"),
    ("ffn{", "uses a brace"),
    ("[[:alpha:]]+_down", "uses a POSIX class"),
    ("ffn(", "is not a valid regular expression"),
])
def test_bad_recipe_pattern_names_file_and_line(tmp_path, pattern, words):
    recipe = tmp_path / "mine.toml"
    recipe.write_text('id = "MINE"\nbase = "Q4_K_M"\nrules = [\n'
                      "  { pattern = 'ffn_down', type = \"q6_K\" },\n"
                      f"  {{ pattern = '{pattern}', type = \"q8_0\" }},\n]\n")
    r = dq_here(*PLAN[:-2], "--scheme", recipe, "--model", "deepseek-r1-distill-llama-8b")
    assert r.returncode == 2
    line = one_line(r)
    assert str(recipe) in line and "line 5" in line and "rule 2" in line and words in line


# llama-quantize itself on the patterns: what the planner refuses for llama.cpp's own reasons,
# llama-quantize refuses too; what it accepts, llama-quantize types exactly as planned.
REFUSED_BY_LLAMA = ["", "(?<!x)ffn", "(?i)ffn", "ffn{", "(?P<n>ffn)"]
ACCEPTED = [r"^blk\.(1|3)\.ffn_(up|gate)", r"ffn_down\.weight$", r"blk\.\d{2}\.attn_[qk]", r"(?:attn|ffn)_(?!down)"]


def test_patterns_agree_with_llama_quantize(tiny_gguf, tmp_path):
    from planner.core.llamacpp.schemes import load_recipe, pattern_problem
    from planner.core.llamacpp.sizing import size_scheme
    from planner.engines.llamacpp.logs import QuantizeLineParser
    from planner.engines.llamacpp.quantize import compare_log
    from planner.gguf.writer import model_from_hparams, write_gguf
    from tiny_models import tiny_llama_hparams

    lc = require_llama_cpp("llama-quantize")
    model = model_from_hparams(tiny_llama_hparams(n_layer=12))
    src = write_gguf(tmp_path / "m.gguf", model)[0]
    binary = lc.binary("llama-quantize")

    def dry(pattern):
        return subprocess.run([str(binary), "--dry-run", "--tensor-type", f"{pattern}=q8_0", str(src), "Q4_K_M"],
                              capture_output=True, text=True, timeout=60)

    for p in REFUSED_BY_LLAMA:
        assert pattern_problem(p) is not None
        assert dry(p).returncode != 0, p
    for p in ACCEPTED:
        assert pattern_problem(p) is None
        r = dry(p)
        assert r.returncode == 0, r.stdout[-1000:]
        recipe = tmp_path / "r.toml"
        recipe.write_text(f"id = \"R\"\nbase = \"Q4_K_M\"\nrules = [ {{ pattern = '{p}', type = \"q8_0\" }} ]\n")
        parser = QuantizeLineParser()
        for line in (r.stdout + r.stderr).splitlines():
            parser.feed(line)
        plan = size_scheme(model, load_recipe(recipe), imatrix=False)
        assert compare_log(plan, parser.log) == [], p
        assert any(t.type == "q8_0" for t in plan.tensors)


# -- 14. detect --disk ---------------------------------------------------------------------------

def test_detect_disk_that_does_not_exist(tmp_path):
    r = dq_here("detect", "--disk", tmp_path / "nonexistent")
    assert r.returncode == 2 and str(tmp_path / "nonexistent") in one_line(r) and "no such file" in one_line(r)
    assert not (tmp_path / "nonexistent").exists()


# -- 15. a 0-byte shard is a missing one --------------------------------------------------------

def test_zero_byte_shard_is_missing_and_named(tmp_path):
    from planner.gguf.writer import write_gguf
    from tiny_models import tiny_model

    shards = write_gguf(tmp_path / "m.gguf", tiny_model("qwen2"), split_max_tensors=20)
    assert len(shards) == 3
    shards[1].write_bytes(b"")
    whole = dq_here(*PLAN, "--model-file", shards[0], "--json")
    assert whole.returncode == 0, whole.stderr
    src = json.loads(whole.stdout)["model"]["source"]
    assert "2 of 3 shards read; empty (0 bytes), counted as missing: m-00002-of-00003.gguf" in src
    r = dq_here("inspect", shards[0], "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["missing_shards"] == [str(shards[1])] and doc["empty_shards"] == [str(shards[1])]
    assert shards[1].stat().st_size == 0 and all(s.exists() for s in shards)


# -- 16. a broken user profile or recipe ---------------------------------------------------------

def _user(tmp_path: Path, kind: str, text: str) -> Path:
    folder = tmp_path / "dq-planner" / kind
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "broken.toml"
    f.write_text(text)
    return f


@pytest.mark.parametrize("kind, text, ask, words", [
    ("hardware", 'id = "broken"\nname = ', "--device", "invalid TOML"),
    ("hardware", 'id = "broken"\n', "--device", "missing name"),
    ("schemes", 'id = "broken"\nbase = "Q4_K_M"\nrules = [ { pattern = "a=b", type = "q8_0" } ]\n', "--scheme",
     "pattern 'a=b' contains '='"),
])
def test_broken_user_file_is_skipped_unless_asked_for(tmp_path, kind, text, ask, words):
    f = _user(tmp_path, kind, text)
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    r = dq("--headless", "--device", "h100", "--scheme", "Q4_K_M", "--json", env=env)
    assert r.returncode == 0
    assert json.loads(r.stdout)["schemes"][0]["size_bytes"] > 0
    warning = one_line(r)
    assert warning.startswith("dq-planner: warning: skipped ") and str(f) in warning and words in warning
    args = ["--headless", "--device", "h100", "--scheme", "Q4_K_M"]
    args[args.index(ask) + 1] = "broken"
    r = dq(*args, env=env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("dq-planner: ") and str(f) in r.stderr.splitlines()[-1]
    assert words in r.stderr.splitlines()[-1] and f.read_text() == text
