"""dq-planner inspect: header-only reports, split models, --scheme differences, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from planner.cli import main
from planner.core.ggml.tensor_types import type_name
from planner.core.llamacpp.schemes import resolve_scheme
from planner.core.llamacpp.sizing import size_scheme
from planner.gguf.header import read_gguf
from planner.gguf.writer import write_gguf
from tiny_models import tiny_model


def _json(capsys, *args) -> dict:
    assert main(["inspect", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _cli(capsys, *args) -> _Result:
    """The command as the console script runs it (planner.cli.main: exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = main(["inspect", *map(str, args)])
    out = capsys.readouterr()
    return _Result(rc, out.out, out.err)


def _process(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", "inspect", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def q3(tmp_path_factory, tiny_gguf, llama_cpp):
    """The tiny MLA deepseek2 quantized to Q3_K_M by the real llama-quantize."""
    out = tmp_path_factory.mktemp("inspect") / "dsv-q3_k_m.gguf"
    r = subprocess.run([str(llama_cpp.binary("llama-quantize")), str(tiny_gguf("deepseek2-mla")), str(out), "Q3_K_M", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_json_document(capsys, q3):
    d = _json(capsys, q3)
    h = read_gguf(q3)
    assert d["path"] == str(q3) and d["architecture"] == "deepseek2" and d["file_type"] == "Q3_K_M"
    assert d["tensor_count"] == 52 and d["tensor_bytes"] == h.tensor_bytes == sum(t["bytes"] for t in d["tensors"])
    assert d["tensors"][0] == {"name": "output.weight", "shape": [256, 384], "type": "q6_K",
                               "bytes": 384 * 210, "offset": h.data_offset}
    assert {t["name"]: t["type"] for t in d["tensors"]} == {p.name: p.type for p in
                                                            size_scheme(tiny_model("deepseek2-mla"), resolve_scheme("Q3_K_M")).tensors}
    assert d["metadata"]["tokenizer.ggml.tokens"]["length"] == 384
    assert d["metadata"]["deepseek2.attention.key_length_mla"] == 192
    assert d["model"]["layout"] == "mla" and d["model"]["params"] == tiny_model("deepseek2-mla").params
    assert d["plan"]["id"] == "Q3_K_M" and d["plan"]["size_bytes"] == d["tensor_bytes"]
    assert sum(d["plan"]["type_bytes"].values()) == d["tensor_bytes"]
    assert d["data_complete"] is True and d["split_count"] == 1 and "scheme" not in d


def test_header_only_copy_gives_the_same_totals(capsys, q3, tmp_path):
    """The header of the file, cut right after the tensor infos, reports what the whole file does."""
    h = read_gguf(q3)
    cut = tmp_path / "header-only.gguf"
    cut.write_bytes(q3.read_bytes()[:h.shards[0].header_end])
    whole = _json(capsys, q3)
    head = _json(capsys, cut)
    for key in ("architecture", "file_type", "tensor_count", "tensor_bytes", "tensors", "metadata", "plan", "data_offset"):
        assert head[key] == whole[key], key
    assert head["data_complete"] is False and head["file_size"] == h.shards[0].header_end < whole["file_size"]
    text = _cli(capsys, cut)
    assert text.returncode == 0
    assert "data INCOMPLETE" in text.stdout and f"{h.tensor_bytes} bytes" in text.stdout


def test_scheme_differences(capsys, q3):
    same = _json(capsys, q3, "--scheme", "Q3_K_M")
    assert same["scheme"]["id"] == "Q3_K_M" and same["scheme"]["differences"] == []
    assert same["scheme"]["size_bytes"] == same["tensor_bytes"]
    other = _json(capsys, q3, "--scheme", "Q4_K_M")
    plan4 = {p.name: (p.type, p.bytes) for p in size_scheme(tiny_model("deepseek2-mla"), resolve_scheme("Q4_K_M")).tensors}
    actual = {t.name: (type_name(t.type), t.bytes) for t in read_gguf(q3).tensors}
    expected = sorted(n for n in actual if actual[n][0] != plan4[n][0])
    diffs = other["scheme"]["differences"]
    assert sorted(d["name"] for d in diffs) == expected and len(expected) > 10
    tok = next(d for d in diffs if d["name"] == "token_embd.weight")
    assert (tok["predicted"], tok["actual"]) == (plan4["token_embd.weight"][0], actual["token_embd.weight"][0])
    assert (tok["predicted_bytes"], tok["actual_bytes"]) == (plan4["token_embd.weight"][1], actual["token_embd.weight"][1])
    text = _cli(capsys, q3, "--scheme", "Q4_K_M")
    assert f"scheme Q4_K_M: plan" in text.stdout and f"{len(expected)} tensor(s) differ from it" in text.stdout


def test_text_report(capsys, q3):
    r = _cli(capsys, q3)
    assert r.returncode == 0 and r.stderr == ""
    out = r.stdout
    assert "file type:    Q3_K_M" in out
    assert "model:        tiny-deepseek2-mla (deepseek2, mla layout), 3.40M parameters" in out
    assert "tensors:      52 in the header(s) read" in out and "data complete" in out
    assert '  tokenizer.ggml.tokens = [384 x string: "<unk>", "<s>", "</s>"' in out
    assert "  deepseek2.attention.head_count_kv = 1" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("blk.1.ffn_down_exps.weight"))
    t = read_gguf(q3).tensor("blk.1.ffn_down_exps.weight")
    assert line.split() == ["blk.1.ffn_down_exps.weight", "256x256x4", t.type_name, str(t.bytes), str(t.offset)]


def test_split_first_shard_only(capsys, tmp_path):
    paths = write_gguf(tmp_path / "m.gguf", tiny_model("llama"), split_max_tensors=15)
    whole = read_gguf(paths[0])
    assert len(paths) == 3 and whole.tensor_count == 40
    d = _json(capsys, paths[1])                       # any shard: the others are followed
    assert d["split_count"] == 3 and d["missing_shards"] == [] and d["tensor_count"] == 40
    assert [t.get("shard") for t in d["tensors"]] == [1] * 15 + [2] * 15 + [3] * 10
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(paths[0], only)
    d = _json(capsys, only / paths[0].name)
    assert d["tensor_count"] == 15 and d["data_complete"] is False
    assert d["missing_shards"] == [str(only / p.name) for p in paths[1:]]
    # the plan covers the whole model: the 25 missing bf16 tensors typed by the file's BF16 rules
    assert d["plan"]["size_bytes"] == whole.tensor_bytes
    assert "1 of 3 shards read; 25 tensors of the missing shards typed by BF16's rules" in d["model"]["source"]
    r = _cli(capsys, only / paths[0].name)
    assert "split model: 1 of 3 shards read; missing:" in r.stdout


@pytest.mark.parametrize("cut,message", [
    (10, "truncated GGUF header"),
    (2000, "truncated or corrupt GGUF header: array 'tokenizer.ggml.tokens'"),
])
def test_truncated_file_exit_2_one_line(capsys, tmp_path, tiny_gguf, cut, message):
    p = tmp_path / "cut.gguf"
    p.write_bytes(tiny_gguf("qwen2").read_bytes()[:cut])
    r = _process(p)              # the real console entry point: exit status and stderr
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dq-planner: {p}: ") and message in lines[0]


def test_corrupt_and_usage_errors(capsys, tmp_path, q3):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    for args, message in (([bad], "not a GGUF file (bad magic b'not ', expected b'GGUF')"),
                          ([tmp_path / "none.gguf"], "no such file"),
                          ([q3, "--scheme", "Q9_K"], "unknown scheme 'Q9_K'"),
                          ([], "the following arguments are required: FILE.gguf")):
        r = _cli(capsys, *args)
        lines = r.stderr.splitlines()
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr


def test_recipe_for_another_architecture(capsys, tiny_gguf):
    r = _cli(capsys, tiny_gguf("qwen2"), "--scheme", "DQ3_K_M")
    assert r.returncode == 2 and r.stderr.strip() == "dq-planner: scheme DQ3_K_M is a recipe for deepseek2, deepseek32, deepseek4, not qwen2"


def test_unsupported_architecture_still_reports_the_header(capsys, tmp_path):
    import gguf
    import numpy as np

    p = tmp_path / "g.gguf"
    w = gguf.GGUFWriter(p, "gemma3")
    w.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    d = _json(capsys, p)
    assert d["architecture"] == "gemma3" and d["tensor_count"] == 1 and d["tensor_bytes"] == 1024
    assert d["model"] is None and d["plan"] is None
    from planner.core.catalog import ARCHITECTURES
    from planner.errors import choices
    assert d["notes"] == ["no plan: " + f"{p}: architecture 'gemma3' is not supported; supported: {choices(ARCHITECTURES)}"]
