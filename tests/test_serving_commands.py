"""Pasted vLLM and SGLang launch commands (--from-command) read by their engines' own parsers, and
multi-node llama.cpp planned and printed as llama.cpp runs it (rpc-server on the other nodes, the head's
llama-server with --rpc): every flag the engines define is classified, bad or unmodelled flags are one
line and exit 2, and several nodes' commands together make one plan."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from planner.cli import main
from planner.core.plan import PlanRequest
from planner.engines.registry import engine, parse_command
from planner.errors import PlannerError
from planner.make_plan import make_plan

FIX = Path(__file__).parent / "fixtures" / "engine_flags"
R1 = "deepseek-r1"


def fixture_flags(name: str) -> set[str]:
    out = set()
    for line in (FIX / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            out.update(line.split())
    return out


@pytest.mark.parametrize("module,fixture", [("vllm", "vllm-0.7.3.txt"), ("sglang", "sglang-0.4.3.txt")])
def test_every_flag_the_engine_defines_is_classified(module, fixture):
    import importlib

    table = importlib.import_module(f"planner.engines.{module}.command_line").TABLE
    defined = fixture_flags(fixture)
    missing = defined - set(table.by_name)
    assert missing == set(), missing
    # planned, neutral and refused flags alike resolve to themselves
    for name in defined:
        assert name in table.resolve(name)[0].names


def plan_of(text: str, **base):
    return make_plan(parse_command(text, PlanRequest(**base)).request)


def test_vllm_command_plans_its_layout():
    parsed = parse_command("vllm serve deepseek-ai/DeepSeek-R1 -tp 8 --max-model-len 16384 "
                           "--gpu-memory-utilization 0.95 --kv-cache-dtype fp8_e4m3 --max-num-seqs 32 "
                           "--quantization fp8 --trust-remote-code", PlanRequest(device="h200"))
    r = parsed.request
    assert (r.engine, r.model, r.schemes, r.gpus, r.nodes, r.ctx, r.gpu_memory_utilization, r.cache_type_k,
            r.max_num_seqs) == ("vllm", R1, ["FP8"], 8, 1, 16384, 0.95, "fp8", 32)
    # argparse's prefixes, as vLLM reads them
    again = parse_command("vllm serve deepseek-ai/DeepSeek-R1 --tensor-parallel 8 --max-model 16384 "
                          "--gpu-memory-util 0.95 --kv-cache-d fp8 --max-num-s 32", PlanRequest(device="h200"))
    assert again.request == r


def test_sglang_tp_abbreviation_and_nodes_agree():
    head = ("python3 -m sglang.launch_server --model-path deepseek-ai/DeepSeek-R1 --tp 16 --dist-init-addr "
            "10.0.0.1:5000 --nnodes 2 --node-rank {} --enable-dp-attention --dp 16 --context-length 8192")
    r = parse_command(head.format(0) + "\n" + head.format(1), PlanRequest(device="h100")).request
    assert (r.engine, r.gpus, r.nodes, r.dp_attention, r.head_address, r.ctx) == ("sglang", 8, 2, True, "10.0.0.1", 8192)
    with pytest.raises(PlannerError, match="differ in ctx"):
        parse_command(head.format(0) + "\n" + head.format(1).replace("8192", "4096"), PlanRequest(device="h100"))
    with pytest.raises(PlannerError, match="its own rank"):
        parse_command(head.format(1) + "\n" + head.format(1), PlanRequest(device="h100"))


BAD = [
    ("vllm serve deepseek-ai/DeepSeek-R1 -tp 8 --enable-expert-parallel", "expert parallelism"),
    ("vllm serve deepseek-ai/DeepSeek-R1 -tp 8 --data-parallel-size 2", "data parallelism"),
    ("vllm serve deepseek-ai/DeepSeek-R1 -tp 16 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1", "multi-node"),
    ("vllm serve deepseek-ai/DeepSeek-R1 -tp 8 --enforce-eager", "no CUDA graphs"),
    ("vllm serve deepseek-ai/DeepSeek-R1 -tp 8 --frobnicate 3", "not a vllm serve flag"),
    ("vllm serve deepseek-ai/DeepSeek-R1 -tp 3", "would not start"),
    ("vllm serve deepseek-ai/DeepSeek-R1 -tp 8 --max-model-len -5", "between"),
    ("vllm serve deepseek-ai/DeepSeek-R1 -tp 8 --gpu-memory-utilization nan", "between 0 and 1"),
    ("vllm serve deepseek-ai/DeepSeek-R1 -tp 8 --max-model-len 99999999999999999999", "between"),
    ("vllm serve deepseek-ai/DeepSeek-R1-Distill-Qwen-32B --quantization fp8", "quantized at load time"),
    ("vllm serve deepseek-ai/DeepSeek-R1 --dtype float32", "32-bit"),
    ("vllm serve someone/unknown-model -tp 8", "neither a published checkpoint"),
    ("vllm serve deepseek-ai/DeepSeek-R1 -tp 8 --pipeline-parallel-size 2 --distributed-executor-backend mp",
     "needs --distributed-executor-backend ray"),
    ("vllm serve deepseek-ai/DeepSeek-R1 -tp 8\nvllm serve deepseek-ai/DeepSeek-R1 -tp 8", "2 vllm serve"),
    ("ray start --head --port=6379\nray start --head --port=6379\nvllm serve deepseek-ai/DeepSeek-R1 -tp 8 -pp 2",
     "(2 head)"),
    ("ray start --head\nray start --address=h:6379\nray start --address=h:6379\n"
     "vllm serve deepseek-ai/DeepSeek-R1 -tp 8 -pp 2", "cluster of 3 node(s)"),
    ("python3 -m sglang.launch_server --model-path deepseek-ai/DeepSeek-R1 --tp 8 --ep-size 4 --enable-ep-moe",
     "EP size equal to the TP size"),
    ("python3 -m sglang.launch_server --model-path deepseek-ai/DeepSeek-R1-Distill-Qwen-32B --tp 2 --enable-ep-moe",
     "needs an MoE model"),
    ("python3 -m sglang.launch_server --model-path deepseek-ai/DeepSeek-R1 --tp 8 --enable-deepep-moe",
     "expert parallelism"),
    ("python3 -m sglang.launch_server --model-path deepseek-ai/DeepSeek-R1 --tp 8 --dp-size 2", "replicas"),
    ("python3 -m sglang.launch_server --model-path deepseek-ai/DeepSeek-R1 --tp 16 --nnodes 2", "--dist-init-addr"),
    ("python3 -m sglang.launch_server --model-path deepseek-ai/DeepSeek-R1 --tp 8 --d 1", "ambiguous"),
    ("python3 -m sglang.launch_server --model-path deepseek-ai/DeepSeek-R1 --tp 8 --mem-fraction-static 1.5",
     "between 0 and 1"),
    ("python3 -m sglang.launch_server --model-path deepseek-ai/DeepSeek-R1 --tp 8 \x1b[2J", "positional"),
    ("llama-server -m x.gguf -ngl 99\nvllm serve deepseek-ai/DeepSeek-R1", "not part of a llama.cpp deployment"),
    ("rpc-server -p 50052 -d CUDA0 --evil 1\nllama-server -m x.gguf --rpc h:50052", "not an rpc-server flag"),
    ("tgi-launcher --model x", "not a launch command"),
    ("vllm serve 'deepseek-ai/DeepSeek-R1", "cannot split"),
]


@pytest.mark.parametrize("text,why", BAD, ids=[b[1] for b in BAD])
def test_bad_commands_are_one_line_and_exit_2(text, why, capsys, monkeypatch):
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    assert main(["--headless", "--device", "h100", "--from-command", text]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and why in err and "Traceback" not in err, err
    assert "\x1b" not in err


def test_engine_options_of_the_base_request_keep_their_place(capsys, monkeypatch):
    # --from-command decides the engine: a vLLM command with --engine llama.cpp (the default) plans vLLM
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    import json

    assert main(["--headless", "--json", "--device", "h200", "--from-command",
                 "vllm serve deepseek-ai/DeepSeek-R1 --tensor-parallel-size 8 --max-model-len 32768"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ref = make_plan(PlanRequest(model=R1, engine="vllm", schemes=["FP8"], device="h200", gpus=8))
    assert doc["engine"] == "vllm" and doc["schemes"][0]["memory"] == ref.schemes[0].memory.to_dict()


# ---------------------------------------------------------------- llama.cpp across nodes

def test_llamacpp_over_two_nodes_runs_rpc_servers_and_one_head():
    req = PlanRequest(model=R1, schemes=["Q8_0"], device="h100", gpus=8, nodes=2)
    plan = make_plan(req)
    sp = plan.schemes[0]
    devices = [d.device for d in sp.memory.per_device]
    # llama.cpp's order: the other node's GPUs (RPC devices) first, then the head's own
    assert devices == [f"RPC[NODE1_IP:{50052 + i}]" for i in range(8)] + [f"CUDA{i}" for i in range(8)]
    launch = engine("llama.cpp").launch(plan, req, "Q8_0")
    rpc_lines = [shlex.split(x) for x in launch.lines if x.startswith("rpc-server ")]
    assert [(a[a.index("-p") + 1], a[a.index("-d") + 1]) for a in rpc_lines] == [
        (str(50052 + i), f"CUDA{i}") for i in range(8)]
    server = shlex.split(next(x for x in launch.lines if x.startswith("llama-server ")))
    assert server[server.index("--rpc") + 1].split(",") == [f"NODE1_IP:{50052 + i}" for i in range(8)]
    split = server[server.index("-ts") + 1].split(",")
    assert len(split) == 16 and [float(x) for x in split] == [float(len(d.layers)) for d in sp.memory.per_device]
    # rpc-servers before the head, in the printed order and one script per node
    assert launch.lines.index(next(x for x in launch.lines if x.startswith("rpc-server "))) < \
        launch.lines.index(next(x for x in launch.lines if x.startswith("llama-server ")))
    assert [s.name for s in launch.scripts] == ["node0.sh", "node1.sh"]
    head, node1 = (s.text.splitlines() for s in launch.scripts)
    assert [x for x in head if x.startswith(("llama-server ", "rpc-server "))] == [shlex.join(server)]
    assert len([x for x in node1 if x.startswith("rpc-server ")]) == 8
    assert not [x for x in node1 if x.startswith("llama-server ")]


def test_multi_node_memory_is_the_single_node_plan_with_those_rpc_devices():
    multi = make_plan(PlanRequest(model=R1, schemes=["Q4_K_M"], device="a100", gpus=4, nodes=3)).schemes[0]
    rpc = [f"NODE{n}_IP:{50052 + i}" for n in (1, 2) for i in range(4)]
    single = make_plan(PlanRequest(model=R1, schemes=["Q4_K_M"], device="a100", gpus=4, rpc=rpc)).schemes[0]
    def rows(sp):
        return [(d.device, d.layers, d.weights_bytes, d.kv_bytes, d.compute_bytes, d.overhead_bytes,
                 d.capacity_bytes) for d in sp.memory.per_device]
    assert rows(multi) == rows(single) and len(rows(multi)) == 12
    assert multi.speed.decode_tps == single.speed.decode_tps


def test_exported_multi_node_scripts(tmp_path):
    from planner.engines.hf_serving import write_scripts

    req = PlanRequest(model=R1, schemes=["Q8_0"], device="h100", gpus=8, nodes=2)
    plan = make_plan(req)
    paths = write_scripts(engine("llama.cpp").launch(plan, req, "Q8_0").scripts, tmp_path / "out")
    assert [p.name for p in paths] == ["node0.sh", "node1.sh"]
    node1 = paths[1].read_text()
    assert re.findall(r"^rpc-server -H 0\.0\.0\.0 -p (\d+) -d (CUDA\d) &$", node1, re.M) == [
        (str(50052 + i), f"CUDA{i}") for i in range(8)]
    assert node1.rstrip().endswith("wait")


# ---------------------------------------------------------------- SGLang expert parallelism

def test_sglang_expert_parallelism_holds_whole_experts_and_prints_its_flags():
    tp = make_plan(PlanRequest(model=R1, engine="sglang", schemes=["FP8"], device="h100", gpus=8, nodes=2)).schemes[0]
    ep_req = PlanRequest(model=R1, engine="sglang", schemes=["FP8"], device="h100", gpus=8, nodes=2, ep_moe=True)
    plan = make_plan(ep_req)
    ep = plan.schemes[0]
    # 256 experts: 16 whole ones per rank hold the bytes of a 1/16 slice of each (FP8 blocks of 128 divide both)
    assert [d.weights_bytes for d in ep.memory.per_device] == [d.weights_bytes for d in tp.memory.per_device]
    # EPMoE.forward's buffers hold every token's top-8 slots at the whole expert width (gateup_input and
    # down_output of 7168, gateup_output of 2 x 2048, down_input of 2048), beside 4 hidden-size buffers
    from planner.core import catalog as cat
    from planner.core.serving.memory import activation_bytes_per_token

    hp = cat.resolve_model(R1).hparams
    assert activation_bytes_per_token(hp, 16, 16, ep=True) == 2 * (4 * 7168 + 8 * (7168 + 2 * 2048 + 2048 + 7168))
    assert activation_bytes_per_token(hp, 16, 16) < activation_bytes_per_token(hp, 16, 16, ep=True)
    assert any("EP 16" in n for n in ep.notes)
    lines = engine("sglang").launch(plan, ep_req, "FP8").lines
    argv = shlex.split(next(x for x in lines if "sglang.launch_server" in x))
    assert argv[argv.index("--ep-size") + 1] == "16" and "--enable-ep-moe" in argv
    assert {"--enable-ep-moe", "--ep-size"} <= fixture_flags("sglang-0.4.3.txt")


# ---------------------------------------------------------------- hostile flags: one line, never a traceback

from hypothesis import given, settings, strategies as st  # noqa: E402

from planner.engines.sglang.command_line import TABLE as SGLANG_TABLE  # noqa: E402
from planner.engines.vllm.command_line import TABLE as VLLM_TABLE  # noqa: E402

VALUES = ["0", "1", "-1", "8", "16", "abc", "1e9", "nan", "inf", "", "0.5", "99999999999999999999", "fp8", "auto",
          "\x00", "--", "=", "10.0.0.1:5000"]


@settings(max_examples=80, deadline=None)
@given(which=st.sampled_from(["vllm", "sglang"]), picks=st.lists(st.tuples(st.integers(0, 10_000),
                                                                          st.sampled_from(VALUES)), max_size=4))
def test_any_flag_with_any_value_plans_or_says_why_in_one_line(which, picks):
    table = VLLM_TABLE if which == "vllm" else SGLANG_TABLE
    names = sorted(table.by_name)
    words = (["vllm", "serve", "deepseek-ai/DeepSeek-R1", "-tp", "8"] if which == "vllm" else
             ["python3", "-m", "sglang.launch_server", "--model-path", "deepseek-ai/DeepSeek-R1", "--tp", "8"])
    for i, v in picks:
        flag = table.by_name[names[i % len(names)]]
        words += [names[i % len(names)]] + ([v] if flag.arity != 0 else [])
    try:
        plan = make_plan(parse_command(shlex.join(words), PlanRequest(device="h200")).request)
    except PlannerError as e:
        assert "\n" not in str(e) and str(e)
        return
    assert plan.schemes and plan.schemes[0].memory is not None
