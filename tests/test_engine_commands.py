"""Launch commands for vLLM and SGLang: exact argv per node, only flags the engines define."""

import shlex
from pathlib import Path

import pytest

from planner.core.catalog import catalog
from planner.core.plan import PlanRequest
from planner.core.serving.plan_formats import EngineOptions
from planner.engines.hf_serving import export_scripts, print_commands
from planner.engines.registry import engine
from planner.errors import PlannerError

FIX = Path(__file__).parent / "fixtures" / "engine_flags"


def flag_set(name: str) -> set[str]:
    """The flags of a fixture file (every alias on a line counts)."""
    out = set()
    for line in (FIX / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        out.update(line.split())
    return out


VLLM = flag_set("vllm-0.7.3.txt")
SGLANG = flag_set("sglang-0.4.3.txt")
RAY = flag_set("ray-start.txt")


def flags(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("-")]


def test_fixtures_hold_the_flags_they_claim():
    assert len(VLLM) > 130 and {"--tensor-parallel-size", "--pipeline-parallel-size", "-tp", "--max-model-len",
                                "--gpu-memory-utilization", "--distributed-executor-backend"} <= VLLM
    assert {"--tp-size", "--tensor-parallel-size", "--dist-init-addr", "--nnodes", "--node-rank",
            "--enable-dp-attention", "--mem-fraction-static"} <= SGLANG
    assert "--tp" not in SGLANG and "--pp-size" not in SGLANG


CONFIGS = [
    ("deepseek-r1", "FP8", 8, 1), ("deepseek-r1", "FP8", 8, 2), ("deepseek-r1", "W4A16", 8, 1),
    ("deepseek-r1", "AWQ", 8, 4), ("deepseek-r1-distill-qwen-32b", "FP8-dynamic", 1, 1),
    ("deepseek-r1-distill-llama-70b", "W4A16", 2, 1),
]
OPTIONS = [EngineOptions(), EngineOptions(kv_cache_dtype="fp8", gpu_memory_utilization=0.95, max_num_seqs=64,
                                          mem_fraction_static=0.85, served_model_name="r1", port=9000)]


@pytest.mark.parametrize("model,fmt,gpus,nodes", CONFIGS)
@pytest.mark.parametrize("opts", OPTIONS)
def test_every_generated_flag_is_defined_by_the_engine(model, fmt, gpus, nodes, opts):
    req = PlanRequest(model=model)
    for n in engine("vllm").node_launches_for(req, catalog()[model], fmt, gpus, nodes, opts):
        for c in n.commands:
            if c[:2] == ["vllm", "serve"]:
                assert set(flags(c)) <= VLLM, set(flags(c)) - VLLM
            else:
                assert c[:2] == ["ray", "start"] and set(flags(c)) <= RAY
    dp = EngineOptions(**{**opts.__dict__, "dp_attention": model == "deepseek-r1"})
    for n in engine("sglang").node_launches_for(req, catalog()[model], fmt, gpus, nodes, dp):
        for c in n.commands:
            assert c[:3] == ["python3", "-m", "sglang.launch_server"]
            assert set(flags(c[3:])) <= SGLANG, set(flags(c[3:])) - SGLANG


def test_vllm_two_nodes_r1_fp8_exact():
    req = PlanRequest(model="deepseek-r1", ctx=32768)
    nodes = engine("vllm").launch_commands(req, catalog()["deepseek-r1"], "FP8", 8, 2,
                                 EngineOptions(head_address="10.0.0.1"))
    assert nodes == [
        [["ray", "start", "--head", "--node-ip-address=10.0.0.1", "--port=6379"],
         ["vllm", "serve", "deepseek-ai/DeepSeek-R1", "--tensor-parallel-size", "8",
          "--pipeline-parallel-size", "2", "--distributed-executor-backend", "ray", "--max-model-len", "32768",
          "--trust-remote-code", "--host", "0.0.0.0", "--port", "8000"]],
        [["ray", "start", "--block", "--address=10.0.0.1:6379"]],
    ]


def test_vllm_single_node_has_no_ray():
    req = PlanRequest(model="deepseek-r1-distill-qwen-32b", ctx=16384)
    assert engine("vllm").launch_commands(req, catalog()[req.model], "FP8-dynamic", 1, 1) == [[[
        "vllm", "serve", "RedHatAI/DeepSeek-R1-Distill-Qwen-32B-FP8-dynamic", "--tensor-parallel-size", "1",
        "--max-model-len", "16384", "--host", "0.0.0.0", "--port", "8000"]]]


def test_sglang_two_nodes_r1_fp8_exact():
    req = PlanRequest(model="deepseek-r1", ctx=32768)
    nodes = engine("sglang").launch_commands(req, catalog()["deepseek-r1"], "FP8", 8, 2,
                                   EngineOptions(head_address="10.0.0.1", dp_attention=True))
    base = ["python3", "-m", "sglang.launch_server", "--model-path", "deepseek-ai/DeepSeek-R1", "--tp-size", "16",
            "--dp-size", "16", "--enable-dp-attention", "--dist-init-addr", "10.0.0.1:5000", "--nnodes", "2",
            "--node-rank"]
    tail = ["--context-length", "32768", "--trust-remote-code", "--host", "0.0.0.0", "--port", "30000"]
    assert nodes == [[base + ["0"] + tail], [base + ["1"] + tail]]


def test_printing_and_exporting(tmp_path):
    req = PlanRequest(model="deepseek-r1")
    launches = engine("vllm").node_launches_for(req, catalog()["deepseek-r1"], "FP8", 8, 2,
                             EngineOptions(head_address="10.0.0.1"))
    text = print_commands(launches)
    assert "# node 0 (head)" in text and "# node 1 (worker)" in text
    assert "ray start --block --address=10.0.0.1:6379" in text
    paths = export_scripts(launches, tmp_path / "out")
    assert [p.name for p in paths] == ["node0.sh", "node1.sh"]
    head = paths[0].read_text().splitlines()
    assert head[0] == "#!/usr/bin/env bash" and paths[0].stat().st_mode & 0o111
    serve = [line for line in head if line.startswith("vllm serve")][0]
    assert shlex.split(serve) == launches[0].commands[1]
    # the head waits for all 16 GPUs between ray start and vllm serve
    i_ray = next(i for i, line in enumerate(head) if line.startswith("ray start"))
    assert "-ge 16" in head[i_ray + 1] and head.index(serve) == i_ray + 2
    # never overwrite, never leave temporary files
    paths[1].write_text("mine")
    with pytest.raises(PlannerError, match="already exist"):
        export_scripts(launches, tmp_path / "out")
    assert paths[1].read_text() == "mine"
    export_scripts(launches, tmp_path / "out", force=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["node0.sh", "node1.sh"]


def test_missing_checkpoint_and_bad_options():
    req = PlanRequest(model="deepseek-r1")
    with pytest.raises(PlannerError, match="no published FP8-dynamic checkpoint of deepseek-r1"):
        engine("vllm").launch_commands(req, catalog()["deepseek-r1"], "FP8-dynamic", 8, 1)
    own = engine("vllm").launch_commands(req, catalog()["deepseek-r1"], "FP8-dynamic", 8, 1,
                               EngineOptions(model_path="/models/r1-fp8-dynamic"))
    assert own[0][0][2] == "/models/r1-fp8-dynamic"
    with pytest.raises(PlannerError, match="between 0 and 1"):
        engine("vllm").launch_commands(req, catalog()["deepseek-r1"], "FP8", 8, 1, EngineOptions(gpu_memory_utilization=1.5))
    with pytest.raises(PlannerError, match="--nodes must be at least 1"):
        engine("sglang").launch_commands(req, catalog()["deepseek-r1"], "FP8", 8, 0)
    # SGLang runs one TP group over all nodes: 3 x 8 = 24 does not divide R1's 128 heads
    with pytest.raises(PlannerError, match="valid: 1, 2, 4, 8, 16, 32"):
        engine("sglang").launch_commands(req, catalog()["deepseek-r1"], "FP8", 8, 3)
    with pytest.raises(PlannerError, match="unknown engine"):
        engine("tgi")
