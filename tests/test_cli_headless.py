"""The headless command line: JSON contract, exit codes, one-line errors, plots, --model auto."""

import json
import os
import subprocess
import sys

import pytest

ENV = dict(os.environ, NO_COLOR="1")


def run(*args, ok=True):
    r = subprocess.run([sys.executable, "-m", "planner.cli", *args], capture_output=True, text=True, env=ENV,
                       timeout=120)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def test_default_headless_json_is_r1_on_8_h100_at_32k_with_a_recommendation():
    doc = json.loads(run("--headless", "--device", "h100", "--json").stdout)
    assert doc["schema_version"] == 1
    assert doc["model"]["id"] == "deepseek-r1" and doc["model"]["architecture"] == "deepseek2"
    assert doc["hardware"] == {**doc["hardware"], "device": "h100", "gpus": 8, "nodes": 1, "source": "profile"}
    assert doc["context"] == 32768 and doc["kv_mode"] == "mla"
    ids = [s["id"] for s in doc["schemes"]]
    assert "Q4_K_M" in ids and "DQ3_K_M" in ids and "UD-Q2_K_XL" in ids and "IQ1_S" in ids
    q4 = next(s for s in doc["schemes"] if s["id"] == "Q4_K_M")
    assert q4["memory"]["kv_cache_bytes"] == 2_302_672_896
    assert len(q4["memory"]["per_device"]) == 8 and q4["fits"] is True
    assert q4["accuracy"]["weighted_avg"] == 85.24
    for key in ("device", "weights_bytes", "kv_bytes", "compute_bytes", "overhead_bytes", "total_bytes",
                "capacity_bytes"):
        assert isinstance(q4["memory"]["per_device"][0][key], (int, str))
    assert doc["recommendation"]["scheme"] in ("Q4_K_M", "DQ3_K_M")
    assert doc["recommendation"]["reasons"]


def test_tensors_flag_lists_every_tensor_with_bytes():
    doc = json.loads(run("--headless", "--device", "h100", "--json", "--tensors", "--scheme", "DQ3_K_M",
                         "--layout", "legacy").stdout)
    s = doc["schemes"][0]
    assert len(s["tensors"]) == 1025
    assert sum(t["bytes"] for t in s["tensors"]) == s["size_bytes"]
    assert sum(s["type_bytes"].values()) == s["size_bytes"]
    t = next(t for t in s["tensors"] if t["name"] == "blk.3.ffn_down_exps.weight")
    assert t == {"name": "blk.3.ffn_down_exps.weight", "shape": [2048, 7168, 256], "type": "q6_K",
                 "bytes": 7168 * 256 * 2048 // 256 * 210}


@pytest.mark.parametrize("args,needle", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--scheme", "Q9_K"], "unknown scheme 'Q9_K'"),
    (["--device", "tpu9"], "unknown device 'tpu9'"),
    (["--gpus", "0"], "--gpus 0 plans llama.cpp RPC devices and the host only"),
    (["--ctx", "-1"], "--ctx must be at least 1"),
    (["--tensor-split", "1,1,1"], "--tensor-split has 3 values for 8 devices"),
    (["--cache-type-k", "q3_k", "--cache-type-v", "q3_k"], "unknown --cache-type-k 'q3_k'"),
    (["--kv-mode", "legacy", "--layout", "mla"], "--kv-mode legacy needs the legacy layout"),
    (["--rpc", "nohost"], "bad --rpc device 'nohost'"),
    (["--task", "poetry"], "invalid choice: 'poetry'"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    r = run("--headless", "--device", "h100", *args, ok=False)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_malformed_recipe_and_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('id = "X"\nbase = "Q4_K_M"\nrules = [{ pattern = "(", type = "q4_K" }]\n')
    r = run("--headless", "--device", "h100", "--scheme", str(bad), ok=False)
    assert r.returncode == 2 and "bad pattern" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64}')
    r = run("--headless", "--device", "h100", "--model", str(d), ok=False)
    assert r.returncode == 2 and "missing 'num_attention_heads'" in r.stderr


def test_hf_folder_plans_like_the_catalog(tmp_path):
    from planner.core.catalog import catalog

    cfg = catalog()["deepseek-r1-distill-qwen-7b"].config
    d = tmp_path / "my-qwen"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    a = json.loads(run("--headless", "--device", "h100", "--json", "--model", str(d), "--scheme", "Q4_K_M").stdout)
    b = json.loads(run("--headless", "--device", "h100", "--json", "--model", "deepseek-r1-distill-qwen-7b",
                       "--scheme", "Q4_K_M").stdout)
    assert a["schemes"][0]["size_bytes"] == b["schemes"][0]["size_bytes"]
    assert a["schemes"][0]["accuracy"] is None  # a folder is not a catalog model with measurements


def test_plot_draws_measured_schemes_without_colour_codes():
    out = run("--headless", "--device", "910b", "--kv-mode", "legacy", "--plot", "--scheme", "Q4_K_M",
              "--scheme", "DQ3_K_M").stdout
    assert "DQ3_K_M" in out and "\x1b[" not in out and "GiB on the tightest device" in out


def test_model_auto_on_one_a100_picks_the_distill():
    doc = json.loads(run("--headless", "--device", "a100", "--gpus", "1", "--model", "auto", "--json").stdout)
    assert doc["recommendation"]["model"] == "deepseek-r1-distill-qwen-32b"
    assert doc["recommendation"]["scheme"] == "Q4_K_M"
    assert {c["model"]["id"] for c in doc["candidates"]} >= {"deepseek-r1", "deepseek-r1-distill-qwen-32b"}


def test_paper_second_question_on_8_910b_legacy():
    doc = json.loads(run("--headless", "--device", "910b", "--kv-mode", "legacy", "--model", "auto",
                         "--json").stdout)
    assert (doc["recommendation"]["model"], doc["recommendation"]["scheme"]) == ("deepseek-r1", "DQ3_K_M")


def test_910b_current_llama_cpp_fits_q4_k_m_but_legacy_does_not():
    mla = json.loads(run("--headless", "--device", "910b", "--json", "--scheme", "Q4_K_M", "--scheme",
                         "DQ3_K_M").stdout)
    leg = json.loads(run("--headless", "--device", "910b", "--kv-mode", "legacy", "--json", "--scheme", "Q4_K_M",
                         "--scheme", "DQ3_K_M").stdout)
    assert [s["fits"] for s in mla["schemes"]] == [True, True]
    assert [s["fits"] for s in leg["schemes"]] == [False, True]
    assert leg["recommendation"]["scheme"] == "DQ3_K_M"
    assert any("Q4_K_M needs" in a and "> 64.0 GiB" in a for a in leg["recommendation"]["alternatives"])


def test_core_does_not_import_ui_libraries():
    code = ("import sys, planner.make_plan as p; from planner.core.plan import PlanRequest; "
            "p.make_plan(PlanRequest(device='h100')); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'plotext', 'textual_plotext')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_llama_cpp_launch_commands_place_whole_layers_as_planned():
    out = run("--headless", "--device", "910b", "--kv-mode", "legacy", "--print-commands").stdout
    assert "dq-planner quantize --input DeepSeek-R1-BF16.gguf --scheme DQ3_K_M" in out
    line = next(x for x in out.splitlines() if x.startswith("llama-server "))
    assert "-ngl 62" in line and "-ts 8,8,8,7,8,8,8,7" in line and "--fit off" in line and "-c 32768" in line


def test_multi_node_vllm_scripts_are_exported_and_never_overwritten(tmp_path):
    d = tmp_path / "launch"
    args = ("--headless", "--engine", "vllm", "--device", "h100", "--nodes", "2", "--scheme", "FP8",
            "--head-address", "10.1.2.3", "--export-commands", str(d))
    run(*args)
    head = (d / "node0.sh").read_text()
    assert "ray start --head --node-ip-address=10.1.2.3" in head
    assert "--tensor-parallel-size 8 --pipeline-parallel-size 2" in head
    assert "--address=10.1.2.3:6379" in (d / "node1.sh").read_text()
    (d / "node0.sh").write_text("mine")
    r = run(*args, ok=False)
    assert r.returncode == 2 and (d / "node0.sh").read_text() == "mine"


def test_compare_engines_latency_prefers_one_node():
    # R1 W8A8 has no published accuracy, so accuracy does not rank these two (FP8, 85.82, would lead
    # DQ3_K_M's 85.53 by more than the tie: tests/test_engine_compare.py)
    doc = json.loads(run("--headless", "--json", "--compare", "vllm:W8A8@2x8/h100", "--compare",
                         "llama.cpp:DQ3_K_M@1x8/h100", "--workload", "latency").stdout)
    first, second = doc["deployments"]
    assert (first["engine"], first["scheme"]["id"], first["nodes"]) == ("llama.cpp", "DQ3_K_M", 1)
    assert (second["engine"], second["nodes"], second["fits"]) == ("vllm", 2, True)
    assert second["max_sequences"] > 1


def test_r1_fp8_on_vllm_needs_more_than_8_h100():
    one = json.loads(run("--headless", "--json", "--engine", "vllm", "--device", "h100", "--scheme", "FP8").stdout)
    two = json.loads(run("--headless", "--json", "--engine", "vllm", "--device", "h100", "--nodes", "2",
                         "--scheme", "FP8").stdout)
    h200 = json.loads(run("--headless", "--json", "--engine", "vllm", "--device", "h200", "--scheme", "FP8").stdout)
    assert one["schemes"][0]["fits"] is False
    assert two["schemes"][0]["fits"] is True and h200["schemes"][0]["fits"] is True
