"""`dq-planner quantize --engine vllm|sglang`: the real llm-compressor on tiny generated checkpoints.

Each format is written for a dense Qwen2 and a DeepSeek-V3-shaped MoE, and the written files are read
back here, independently of the command's own check: every tensor's name, dtype, shape and bytes equal
the plan's (planner.core.serving.hf_checkpoint), config.json's quantization_config names the format. Runs
without llm-compressor are skipped locally and fail when CI is set (as the llama.cpp tests do).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from planner.core.catalog import entry_from_config
from planner.core.serving.hf_checkpoint import checkpoint, resolve_format
from planner.engines.compress import checkpoint_files as cf
from planner.engines.compress.calibration import read_samples
from planner.engines.output_files import OutputAppeared, publish_folder
from planner.errors import PlannerError
from planner.events import parse_event
from tiny_checkpoints import CALIBRATION_LINES, write_checkpoint

SCHEMES = ("FP8-dynamic", "W8A8", "W4A16")


def _require_compressor() -> None:
    import importlib.util

    missing = [m for m in ("llmcompressor", "torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {', '.join(missing)} is missing (install dq-planner[compress])")
        pytest.skip(f"{', '.join(missing)} not installed (dq-planner[compress])")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    _require_compressor()
    folder = tmp_path_factory.mktemp("hf")
    made: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in made:
            made[kind] = write_checkpoint(kind, folder / kind)
        return made[kind]
    return make


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("calib") / "calib.txt"
    p.write_text("\n".join(CALIBRATION_LINES) + "\n")
    return p


def quantize(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", "quantize", *args], capture_output=True, text=True,
                          timeout=timeout)


def plan_of(src: Path, scheme: str):
    cfg = json.loads((src / "config.json").read_text())
    return checkpoint(entry_from_config(cfg, str(src / "config.json"), src.name), resolve_format(scheme))


@pytest.fixture(scope="module")
def written(ckpt, calib, tmp_path_factory):
    """Each (model, scheme) quantized once: (output folder, the command's result)."""
    done: dict[tuple[str, str], tuple[Path, subprocess.CompletedProcess]] = {}

    def make(kind: str, scheme: str):
        if (kind, scheme) not in done:
            out = tmp_path_factory.mktemp("out") / f"{kind}-{scheme}"
            engine = "sglang" if scheme == "W8A8" else "vllm"
            r = quantize("--engine", engine, "--input", str(ckpt(kind)), "--scheme", scheme, "--output", str(out),
                         "--calibration", str(calib), "--samples", "4", "--max-seq-len", "16", "--threads", "1",
                         "--events", "jsonl")
            done[(kind, scheme)] = out, r
        return done[(kind, scheme)]
    return make


@pytest.mark.parametrize("kind", ["qwen2", "deepseek3"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_written_as_planned(ckpt, written, kind, scheme):
    src = ckpt(kind)
    out, r = written(kind, scheme)
    assert r.returncode == 0, r.stderr[-3000:]
    events = [e for e in map(parse_event, r.stdout.splitlines()) if e]
    assert [e["event"] for e in events][0] == "started" and events[-1] == {"event": "done", "exit_code": 0,
                                                                            "output": str(out)}
    ck = plan_of(src, scheme)
    planned = ck.tensors()
    verified = [e for e in events if e["event"] == "verified"]
    assert verified == [{"event": "verified", "ok": True, "tensors": len(planned), "differences": 0, "mismatches": []}]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["bytes_done"] == progress[-1]["bytes_total"] > 0

    # the files, read here: every tensor as planned, and nothing else
    written = cf.read_tensors(out)
    assert set(written) == {t.name for t in planned}
    for t in planned:
        w = written[t.name]
        assert (w.dtype, w.shape, w.nbytes) == (t.dtype, tuple(t.shape), t.bytes), t.name
    assert sum(w.nbytes for w in written.values()) == ck.size_bytes
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["format"] == {"FP8-dynamic": "float-quantized", "W8A8": "int-quantized", "W4A16": "pack-quantized"}[scheme]
    assert "lm_head" in qc["ignore"] and written["lm_head.weight"].dtype == "bf16"
    if kind == "deepseek3":
        assert written["model.layers.1.mlp.gate.weight"].dtype == "bf16"          # the router is kept
        if scheme == "W4A16":      # only the routed experts: attention and the shared expert stay bf16
            assert "model.layers.1.mlp.experts.3.down_proj.weight_packed" in written
            assert written["model.layers.1.self_attn.q_b_proj.weight"].dtype == "bf16"
            assert written["model.layers.1.mlp.shared_experts.up_proj.weight"].dtype == "bf16"
    assert (out / "tokenizer.json").is_file()
    assert [p.name for p in out.parent.iterdir()] == [out.name]      # no temporary folder left


def test_sigterm_stops_the_child_and_leaves_nothing(ckpt, calib, tmp_path):
    from planner.engines.llamacpp.process import group_alive

    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "planner.cli", "quantize", "--engine", "vllm", "--input",
                          str(ckpt("qwen2")), "--scheme", "W4A16", "--output", str(out), "--calibration", str(calib),
                          "--samples", "4", "--max-seq-len", "16", "--events", "jsonl"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child = None
    for line in p.stdout:
        e = parse_event(line)
        if e and e["event"] == "started":
            child = e["pid"]
            break
    assert child is not None
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    rest, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert [e for e in map(parse_event, rest.splitlines()) if e][-1]["event"] == "done"
    assert not group_alive(child)
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_finds_its_output_taken_is_told_and_removes_its_own(ckpt, tmp_path):
    """Two runs into one folder: the other run's folder appears while this one quantizes."""
    from planner.engines.compress.recipe import recipe_for
    from planner.engines.compress.run import run_compress

    src = ckpt("qwen2")
    out = tmp_path / "out"
    cfg = json.loads((src / "config.json").read_text())
    entry = entry_from_config(cfg, str(src / "config.json"), src.name)
    recipe = recipe_for(resolve_format("FP8-dynamic"), entry.hparams)

    def other_run_finishes(child):
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"theirs")

    with pytest.raises(OutputAppeared):
        run_compress(src, out, entry, recipe, calibration=None, max_seq_len=16, threads=None, overwrite=False,
                     verify=lambda folder: None, on_start=other_run_finishes)
    assert (out / "model.safetensors").read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_publish_never_replaces_without_overwrite(tmp_path):
    new, dst = tmp_path / "new", tmp_path / "dst"
    new.mkdir()
    (new / "a").write_text("new")
    dst.mkdir()
    with pytest.raises(FileExistsError):
        publish_folder(new, dst, overwrite=False)
    assert (new / "a").exists() and list(dst.iterdir()) == []
    (dst / "old").write_text("old")
    publish_folder(new, dst, overwrite=True)
    assert [p.name for p in dst.iterdir()] == ["a"] and sorted(p.name for p in tmp_path.iterdir()) == ["dst"]


# ----------------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing written (no child started)

def _one_line_exit(r: subprocess.CompletedProcess, code: int, words: str) -> None:
    assert r.returncode == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr


def test_bad_inputs_exit_2_with_one_line(tmp_path, calib):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "hidden_size": 64}))
    (gpt2 / "model.safetensors").write_bytes(b"")
    out = str(tmp_path / "out")
    cases = [
        (["--input", str(empty), "--scheme", "FP8-dynamic"], "no config.json"),
        (["--input", str(no_weights), "--scheme", "FP8-dynamic"], "no weights"),
        (["--input", str(gpt2), "--scheme", "FP8-dynamic"], "unsupported architectures"),
        (["--input", str(tmp_path / "missing"), "--scheme", "FP8-dynamic"], "no such folder"),
    ]
    for args, words in cases:
        _one_line_exit(quantize("--engine", "vllm", *args, "--output", out), 2, words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "gpt2", "noweights"]


def test_scheme_and_calibration_errors(ckpt, tmp_path):
    src = str(ckpt("qwen2"))
    out = tmp_path / "out"
    _one_line_exit(quantize("--engine", "vllm", "--input", src, "--scheme", "W4A16", "--output", str(out)), 2,
                   "needs calibration text")
    _one_line_exit(quantize("--engine", "sglang", "--input", src, "--scheme", "AWQ", "--output", str(out)), 2,
                   "not made by llm-compressor")
    _one_line_exit(quantize("--engine", "vllm", "--input", src, "--scheme", "Q4_K_M", "--output", str(out)), 2,
                   "unknown vLLM/SGLang format")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"content": "no text"}\n')
    _one_line_exit(quantize("--engine", "vllm", "--input", src, "--scheme", "W8A8", "--output", str(out),
                            "--calibration", str(bad)), 2, "line 2 has no string \"text\" field")
    out.mkdir()
    _one_line_exit(quantize("--engine", "vllm", "--input", src, "--scheme", "FP8-dynamic", "--output", str(out)), 2,
                   "exists; pass --force")
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "out"]


def test_already_quantized_input_is_refused(tmp_path):
    src = tmp_path / "q"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"],
                                                 "quantization_config": {"quant_method": "compressed-tensors"}}))
    (src / "model.safetensors").write_bytes(b"")
    _one_line_exit(quantize("--engine", "vllm", "--input", str(src), "--scheme", "FP8-dynamic", "--output",
                            str(tmp_path / "o")), 2, "already quantized (compressed-tensors)")


def test_no_disk_space_exits_1_before_the_child(ckpt, tmp_path, monkeypatch, capsys):
    import shutil

    from planner.cli import main

    _require_compressor()
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    rc = main(["quantize", "--engine", "vllm", "--input", str(ckpt("qwen2")), "--scheme", "FP8-dynamic",
               "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "not enough free disk space" in err[0] and "1000 bytes" in err[0]
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------
# the checks themselves

def test_verification_reports_each_difference(ckpt, written):
    """A checkpoint checked against another format's plan differs in dtype for every quantized weight."""
    src = ckpt("qwen2")
    out, r = written("qwen2", "FP8-dynamic")
    assert r.returncode == 0, r.stderr[-2000:]
    written = cf.read_tensors(out)
    mism = cf.verify_tensors(plan_of(src, "W8A8").tensors(), written)
    assert {(m.what, m.predicted, m.actual) for m in mism} == {("dtype", "i8", "f8_e4m3")}
    assert len(mism) == 14                        # 2 layers x 7 linear weights
    mism = cf.verify_tensors(plan_of(src, "W4A16").tensors(), written)
    assert {m.what for m in mism} == {"missing", "unexpected", "shape", "bytes"}
    assert {m.name.rsplit(".", 1)[1] for m in mism if m.what == "missing"} == {"weight_packed", "weight_shape"}
    assert {m.name.rsplit(".", 1)[1] for m in mism if m.what == "shape"} == {"weight_scale"}
    cfg_mism = cf.verify_quantization_config(out, resolve_format("W8A8"), 128, ("lm_head",))
    assert [(m.name, m.predicted, m.actual) for m in cfg_mism if m.name.endswith(".format")] == \
        [("config.json quantization_config.format", '"int-quantized"', '"float-quantized"')]
    assert cf.verify_quantization_config(out, resolve_format("FP8-dynamic"), 128, ("lm_head",)) == []


def test_calibration_file_layouts(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("one\n\n  \ntwo\nthree\n")
    assert read_samples(txt, 2) == ["one", "two"]
    js = tmp_path / "a.jsonl"
    js.write_text('{"text": "alpha", "id": 1}\n\n{"text": ""}\n{"text": "beta"}\n')
    assert read_samples(js, 10) == ["alpha", "beta"]
    empty = tmp_path / "e.txt"
    empty.write_text("\n\n")
    with pytest.raises(PlannerError, match="no calibration samples"):
        read_samples(empty, 4)
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(PlannerError, match="line 2 is not UTF-8"):
        read_samples(binary, 4)
    with pytest.raises(PlannerError, match="is a directory"):
        read_samples(tmp_path, 4)


# ----------------------------------------------------------------------------------------------------
# the plan's launch commands

QWEN2_CONFIG = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 256,
                "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "vocab_size": 512, "max_position_embeddings": 4096, "tie_word_embeddings": False,
                "torch_dtype": "bfloat16"}


@pytest.mark.parametrize("engine,scheme", [("vllm", "W4A16"), ("sglang", "FP8-dynamic")])
def test_launch_of_a_bf16_folder_quantizes_first(tmp_path, capsys, engine, scheme):
    import shlex

    from planner.cli import main

    src = tmp_path / "distill"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(QWEN2_CONFIG))
    assert main(["--headless", "--engine", engine, "--model", str(src), "--scheme", scheme, "--device", "h100",
                 "--ctx", "4096", "--print-commands"]) == 0
    lines = [shlex.split(x) for x in capsys.readouterr().out.splitlines() if x and not x.startswith("#")]
    cmds = [x for x in lines if x[0] in ("dq-planner", "vllm", "python3")]
    out = f"{src}-{scheme}"
    step = ["dq-planner", "quantize", "--engine", engine, "--input", str(src), "--scheme", scheme, "--output", out]
    if scheme != "FP8-dynamic":
        step += ["--calibration", "CALIBRATION.jsonl"]
    assert cmds[0] == step
    serve = cmds[1]
    assert serve[serve.index("serve") + 1 if engine == "vllm" else serve.index("--model-path") + 1] == out


def test_launch_of_a_published_checkpoint_has_no_quantize_step(capsys):
    from planner.cli import main

    assert main(["--headless", "--engine", "vllm", "--model", "deepseek-r1-distill-qwen-7b", "--scheme", "W4A16",
                 "--device", "h100", "--ctx", "4096", "--print-commands"]) == 0
    out = capsys.readouterr().out
    assert "vllm serve RedHatAI/DeepSeek-R1-Distill-Qwen-7B-quantized.w4a16" in out and "dq-planner quantize" not in out


def test_workbench_quantizes_a_bf16_folder_for_vllm(ckpt, tmp_path):
    """The workbench's quantize action on a vLLM format: the llm-compressor child, its events, verified."""
    import asyncio

    from planner.core.plan import PlanRequest
    from planner.tui.app import PlannerApp

    src = ckpt("qwen2")
    out = tmp_path / "qwen2-FP8-dynamic"
    req = PlanRequest(model=str(src), engine="vllm", device="h100", ctx=4096, schemes=["FP8-dynamic"])

    async def main():
        app = PlannerApp(req, full_plan_delay=0)
        async with app.run_test(size=(120, 40)) as pilot:
            await app.settle()
            await pilot.pause()
            assert app.wb.quantizes_checkpoint() and not app.wb.needs_calibration()
            app.start_quantize_checkpoint(str(src), str(out))
            for w in [w for w in app.workers if w.name == "quantize"]:
                await w.wait()
            await pilot.pause()
            q = app.query_one("#quantize-panel")
            assert q.last_status.startswith("done:"), q.last_status
            assert q.fraction == 1.0

    asyncio.run(main())
    assert cf.verify_tensors(plan_of(src, "FP8-dynamic").tensors(), cf.read_tensors(out)) == []
