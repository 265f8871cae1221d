"""One plan, one answer: the launch command a plan prints carries every flag of its placement, and that
command fed back through --from-command reproduces the plan (per-device weights, KV cache and compute
within 1 MiB, speed within 1%); equivalent spellings of one placement (-ot exps=CPU, --cpu-moe,
--n-cpu-moe <all layers>, -ot layer ranges and the matching --n-cpu-moe) are one plan, memory and speed."""

from __future__ import annotations

import re
import shlex
from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st

from planner.core import catalog as cat
from planner.core.llamacpp.memory import FFN_EXPS_REGEX
from planner.core.llamacpp.schemes import resolve_scheme
from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
from planner.core.plan import PlanRequest
from planner.engines.llamacpp.command_line import parse_command
from planner.engines.registry import engine, parse_command as parse_launch
from planner.gguf.writer import write_sparse_gguf
from planner.make_plan import make_plan

MiB = 1 << 20
HARDWARE = ("device", "gpus", "nodes", "host_ram", "host_bandwidth", "prompt", "depth", "engine", "concurrency",
            "gen_tokens")
R1 = "deepseek-r1"
LAYERS_0_39 = r"blk\.([0-9]|[1-3][0-9])\.ffn_(up|down|gate)_exps=CPU"

# (name, request): GPU-only, hybrid chosen by the planner, --n-cpu-moe auto, -ot placements, --cpu-moe,
# RPC devices, several nodes, cache types and slots, a partial -ngl, other architectures, a dense model
MATRIX = [
    ("gpu-only 8xH200", PlanRequest(model=R1, schemes=["Q4_K_M"], device="h200", gpus=8)),
    ("hybrid by the planner, 1x4090", PlanRequest(model=R1, schemes=["DQ3_K_M"], device="rtx4090", gpus=1,
                                                  host_ram=768)),
    ("hybrid by the planner, 2xH100", PlanRequest(model=R1, schemes=["Q4_K_M"], device="h100", gpus=2,
                                                  host_ram=512)),
    ("--n-cpu-moe auto, 1xA100", PlanRequest(model=R1, schemes=["UD-Q2_K_XL"], device="a100", gpus=1,
                                             host_ram=512, n_cpu_moe="auto")),
    ("-ot exps=CPU, 1xH100", PlanRequest(model=R1, schemes=["Q4_K_M"], device="h100", gpus=1, host_ram=768,
                                         ctx=65536, tensor_overrides=["exps=CPU"])),
    ("--cpu-moe, 1xH100", PlanRequest(model=R1, schemes=["Q4_K_M"], device="h100", gpus=1, host_ram=768,
                                      tensor_overrides=[f"{FFN_EXPS_REGEX}=CPU"])),
    ("--cpu-moe --no-op-offload, 1xH100", PlanRequest(model=R1, schemes=["Q4_K_M"], device="h100", gpus=1,
                                                       host_ram=768, tensor_overrides=[f"{FFN_EXPS_REGEX}=CPU"],
                                                       op_offload=False)),
    ("hybrid by the planner --no-op-offload, 1x4090", PlanRequest(model=R1, schemes=["DQ3_K_M"], device="rtx4090",
                                                                  gpus=1, host_ram=768, op_offload=False)),
    ("-ot layer range, 2xH100", PlanRequest(model=R1, schemes=["Q4_K_M"], device="h100", gpus=2, host_ram=512,
                                            tensor_overrides=[LAYERS_0_39])),
    ("-ot onto a named GPU", PlanRequest(model=R1, schemes=["DQ3_K_M"], device="h200", gpus=2, host_ram=512,
                                         tensor_overrides=[r"blk\.(5[0-9]|60)\.ffn_.*_exps=CUDA1", "exps=CPU"])),
    ("RPC and 2xH100, hybrid", PlanRequest(model=R1, schemes=["Q4_K_M"], device="h100", gpus=2, host_ram=512,
                                           rpc=["10.0.0.2:50052=80G"])),
    ("RPC devices only", PlanRequest(model=R1, schemes=["UD-Q2_K_XL"], device="h100", gpus=0, host_ram=512,
                                     rpc=["10.0.0.2:50052=80G", "10.0.0.3:50052=80G"], n_cpu_moe="auto")),
    ("2 nodes x 8xH100", PlanRequest(model=R1, schemes=["Q8_0"], device="h100", gpus=8, nodes=2)),
    ("q8_0 cache, 2 slots, ub 1024", PlanRequest(model=R1, schemes=["Q4_K_M"], device="h200", gpus=8, ctx=131072,
                                                 cache_type_k="q8_0", cache_type_v="q8_0", parallel=2, ubatch=1024, batch=4096)),
    ("-ngl 40, 1xH100", PlanRequest(model=R1, schemes=["UD-Q2_K_XL"], device="h100", gpus=1, host_ram=512,
                                    ngl=40)),
    ("V3.2 on 8xH200", PlanRequest(model="deepseek-v3.2", schemes=["Q4_K_M"], device="h200", gpus=8)),
    ("V2-Lite hybrid, 1x4090", PlanRequest(model="deepseek-v2-lite", schemes=["BF16"], device="rtx4090", gpus=1,
                                           host_ram=64)),
    ("dense 32B, 1x4090", PlanRequest(model="deepseek-r1-distill-qwen-32b", schemes=["Q4_K_M"], device="rtx4090",
                                      gpus=1)),
    ("8 slots, unified cache, 2xH100", PlanRequest(model="deepseek-r1-distill-qwen-32b", schemes=["Q8_0"],
                                                   device="h100", gpus=2, ctx=65536, parallel=8, kv_unified=True,
                                                   concurrency=6, gen_tokens=512)),
    ("4 slots, 2xH200 R1", PlanRequest(model=R1, schemes=["UD-Q2_K_XL"], device="h200", gpus=2, host_ram=512,
                                       ctx=16384, parallel=4, concurrency=8)),
    ("3 nodes x 4xA100, Q4_K_M", PlanRequest(model=R1, schemes=["Q4_K_M"], device="a100", gpus=4, nodes=3)),
    ("2 nodes x 8xH100 with an RPC device", PlanRequest(model=R1, schemes=["Q8_0"], device="h100", gpus=8, nodes=2,
                                                        rpc=["10.0.0.9:50052=48G"])),
]

# vLLM and SGLang plans, read back by their own command parsers: one node, TP x PP over nodes, DP attention,
# FP8 KV caches, memory shares and sequence limits
SERVING = [
    ("vLLM FP8 8xH200", PlanRequest(model=R1, engine="vllm", schemes=["FP8"], device="h200", gpus=8)),
    ("vLLM FP8 TP8 x PP2 over 2 nodes", PlanRequest(model=R1, engine="vllm", schemes=["FP8"], device="h100", gpus=8,
                                                    nodes=2, head_address="10.0.0.1")),
    ("vLLM W4A16 TP4 x PP2, fp8 cache", PlanRequest(model=R1, engine="vllm", schemes=["W4A16"], device="h100", gpus=4,
                                                    nodes=2, cache_type_k="fp8", cache_type_v="fp8", ctx=16384)),
    ("vLLM AWQ 8xA100, 0.95, 64 seqs", PlanRequest(model=R1, engine="vllm", schemes=["AWQ"], device="a100", gpus=8,
                                                   gpu_memory_utilization=0.95, max_num_seqs=64)),
    ("vLLM W8A8 70B TP2", PlanRequest(model="deepseek-r1-distill-llama-70b", engine="vllm", schemes=["W8A8"],
                                      device="h100", gpus=2, ctx=65536)),
    ("vLLM BF16 32B 1xH100", PlanRequest(model="deepseek-r1-distill-qwen-32b", engine="vllm", schemes=["BF16"],
                                         device="h100", gpus=1, ctx=8192)),
    ("SGLang FP8 8xH200", PlanRequest(model=R1, engine="sglang", schemes=["FP8"], device="h200", gpus=8)),
    ("SGLang FP8 2x8xH100 DP attention", PlanRequest(model=R1, engine="sglang", schemes=["FP8"], device="h100",
                                                     gpus=8, nodes=2, dp_attention=True, head_address="10.0.0.1")),
    ("SGLang FP8 TP16 over 2 nodes", PlanRequest(model=R1, engine="sglang", schemes=["FP8"], device="h100", gpus=8,
                                                 nodes=2)),
    ("SGLang FP8 8xH200 DP attention, 0.85, fp8 cache", PlanRequest(
        model=R1, engine="sglang", schemes=["FP8"], device="h200", gpus=8, dp_attention=True,
        mem_fraction_static=0.85, cache_type_k="fp8", cache_type_v="fp8", ctx=65536)),
    ("SGLang FP8 EP16 over 2 nodes", PlanRequest(model=R1, engine="sglang", schemes=["FP8"], device="h100", gpus=8,
                                                 nodes=2, ep_moe=True)),
    ("SGLang W4A16 EP8 with DP attention", PlanRequest(model=R1, engine="sglang", schemes=["W4A16"], device="h200",
                                                       gpus=8, ep_moe=True, dp_attention=True)),
    ("SGLang W4A16 32B 2xL40S, 32 requests", PlanRequest(model="deepseek-r1-distill-qwen-32b", engine="sglang",
                                                         schemes=["W4A16"], device="l40s", gpus=2, max_num_seqs=32)),
]


@pytest.fixture(scope="module")
def headers(tmp_path_factory):
    """GGUF headers (sparse files) of (model, scheme), as `dq-planner header` writes them."""
    folder = tmp_path_factory.mktemp("headers")
    made: dict[tuple[str, str], str] = {}

    def get(model_id: str, scheme_id: str) -> str:
        if (model_id, scheme_id) not in made:
            model = resolve_catalog_model(cat.resolve_model(model_id), None)
            scheme = resolve_scheme(scheme_id)
            path = folder / f"{model_id}-{scheme_id}.gguf"
            write_sparse_gguf(path, model, types=size_scheme(model, scheme), file_type=scheme.base)
            made[(model_id, scheme_id)] = str(path)
        return made[(model_id, scheme_id)]
    return get


def server_line(plan, req) -> list[str]:
    """The llama-server command of the plan's launch recipe, as words."""
    scheme = plan.recommendation.scheme if plan.recommendation else plan.schemes[0].id
    line = next(x for x in engine(plan.engine).launch(plan, req, scheme).lines if x.startswith("llama-server "))
    return shlex.split(line)


def figures(sp) -> dict:
    """What a plan says of one scheme (or one Deployment): the devices' and the host's memory, fit and speed."""
    m = sp.memory
    host = (m.host.weights_bytes, m.host.kv_bytes, m.host.compute_bytes) if m.host is not None else (0, 0, 0)
    out = {"devices": [(d.device, d.layers, d.weights_bytes, d.kv_bytes, d.compute_bytes) for d in m.per_device],
           "host": host, "fits": m.fits,
           "speed": (sp.speed.decode_tps, sp.speed.prefill_tps) if sp.speed is not None else None}
    if hasattr(sp, "serving"):          # a scheme's row (a Deployment has no serving figures of its own)
        s = sp.serving
        out["serving"] = None if s is None else (s.max_concurrency, s.ttft_s, s.tpot_s, s.output_tps)
    return out


def recommended(plan):
    """The deployment the recommendation picks: its scheme, as the hybrid deployment when it says so."""
    rec = plan.recommendation
    sp = plan.scheme(rec.scheme if rec else plan.schemes[0].id)
    if rec is not None and rec.placement == "hybrid":
        return sp, next(d for d in sp.deployments if d.placement == "hybrid")
    return sp, sp


def differences(a: dict, b: dict) -> list[str]:
    """Where two plans' figures differ beyond 1 MiB (memory) or 1% (speed); [] when they agree."""
    out = []
    if [d[:2] for d in a["devices"]] != [d[:2] for d in b["devices"]]:
        out.append(f"devices/layers {[d[:2] for d in a['devices']]} vs {[d[:2] for d in b['devices']]}")
    for x, y in zip(a["devices"], b["devices"]):
        for what, u, v in zip(("weights", "KV", "compute"), x[2:], y[2:]):
            if abs(u - v) > MiB:
                out.append(f"{x[0]} {what} {u} vs {v}")
    for what, u, v in zip(("weights", "KV", "compute"), a["host"], b["host"]):
        if abs(u - v) > MiB:
            out.append(f"host {what} {u} vs {v}")
    if a["fits"] != b["fits"]:
        out.append(f"fits {a['fits']} vs {b['fits']}")
    if (a["speed"] is None) != (b["speed"] is None):
        out.append(f"speed {a['speed']} vs {b['speed']}")
    elif a["speed"] is not None:
        for what, u, v in zip(("decode", "prefill"), a["speed"], b["speed"]):
            if abs(u - v) > 0.01 * u:
                out.append(f"{what} {u:.2f} vs {v:.2f} tok/s")
    if "serving" in a and "serving" in b:
        x, y = a["serving"], b["serving"]
        if (x is None) != (y is None) or (x is not None and (x[0] != y[0] or any(
                abs(u - v) > 0.01 * u for u, v in zip(x[1:], y[1:])))):
            out.append(f"serving {x} vs {y}")
    return out


def launch_text(plan, req, headers) -> str:
    """Every node's launch commands as the plan prints them, the GGUF named by its header file."""
    sp, _ = recommended(plan)
    lines = engine(plan.engine).launch(plan, req, sp.id).lines
    out = []
    for line in lines:
        if line.startswith("llama-server "):
            argv = shlex.split(line)
            argv[argv.index("-m") + 1] = headers(req.model, sp.id)
            line = shlex.join(argv)
        out.append(line)
    return "\n".join(out)


def round_trip(req: PlanRequest, headers) -> tuple[str, list[str]]:
    """(the launch commands, the differences between the plan and the plan of those commands)."""
    plan = make_plan(req)
    sp, deployment = recommended(plan)
    text = launch_text(plan, req, headers)
    base = PlanRequest(**{k: getattr(req, k) for k in HARDWARE}, rpc=list(req.rpc))
    back = make_plan(parse_launch(text, base).request)
    return text, differences(figures(deployment), figures(back.schemes[0])) + differences(
        figures(sp), figures(deployment))


@pytest.mark.parametrize("name,req", MATRIX + SERVING, ids=[m[0] for m in MATRIX + SERVING])
def test_launch_command_round_trips_to_the_same_plan(name, req, headers):
    text, diff = round_trip(req, headers)
    assert diff == [], f"{name}: {text}"


def test_the_recommended_hybrid_launch_carries_its_expert_layers(headers):
    # the case: nothing fits a 24 GB card; the recommendation runs the experts of 60 layers on the host
    req = MATRIX[1][1]
    plan = make_plan(req)
    sp = plan.scheme("DQ3_K_M")
    rec = plan.recommendation
    hybrid = next(d for d in sp.deployments if d.placement == "hybrid")
    assert rec.placement == "hybrid" and hybrid.usable
    argv = server_line(plan, req)
    assert argv[argv.index("--n-cpu-moe") + 1] == str(hybrid.n_cpu_moe) == str(sp.n_cpu_moe)
    # every figure of the scheme's row is the hybrid deployment's; the GPU-only one stands beside it, labelled
    doc = plan.to_dict()["schemes"][0]
    assert (doc["fits"], doc["headroom_bytes"], doc["speed"], doc["n_cpu_moe"]) == (
        True, hybrid.headroom_bytes, hybrid.speed.to_dict(), hybrid.n_cpu_moe)
    assert [(d["placement"], d["fits"]) for d in doc["deployments"]] == [("gpu", False), ("hybrid", True)]
    assert rec.deployments[0].decode_tps == sp.speed.decode_tps


def test_exported_script_and_workbench_carry_the_placement(tmp_path):
    from planner.engines.hf_serving import write_scripts
    from planner.workbench import Workbench

    req = MATRIX[1][1]
    plan = make_plan(req)
    launch = engine(plan.engine).launch(plan, req, plan.recommendation.scheme)
    paths = write_scripts(launch.scripts, str(tmp_path / "out"))
    text = "\n".join(p.read_text() for p in paths)
    n = plan.scheme("DQ3_K_M").n_cpu_moe
    assert re.search(rf"llama-server .*--n-cpu-moe {n}\b", text)
    wb = Workbench(req)
    wb.refresh()
    assert re.search(rf"llama-server .*--n-cpu-moe {n}\b", wb.launch_script())


# ---------------------------------------------------------------- equivalent spellings: one plan

def _r1(**kw) -> PlanRequest:
    return PlanRequest(model=R1, schemes=["Q4_K_M"], device="h100", host_ram=768, **kw)


def _layers(n: int) -> str:
    """An -ot pattern for the routed experts of layers 0..n-1, as a user might write it."""
    return r"blk\.(" + "|".join(str(i) for i in range(n)) + r")\.ffn_(up|down|gate)_exps=CPU"


@settings(max_examples=12, deadline=None)
@given(gpus=st.integers(1, 2), ctx=st.sampled_from([4096, 32768, 65536]),
       spelling=st.sampled_from(["-ot exps=CPU", "--cpu-moe", "--n-cpu-moe 61", "--n-cpu-moe 99"]))
def test_every_expert_on_the_host_is_one_plan(gpus, ctx, spelling):
    ref = figures(make_plan(_r1(gpus=gpus, ctx=ctx, n_cpu_moe=61)).schemes[0])
    flag, _, value = spelling.partition(" ")
    if flag == "-ot":
        kw = {"tensor_overrides": [value]}
    elif flag == "--cpu-moe":
        kw = {"tensor_overrides": [f"{FFN_EXPS_REGEX}=CPU"]}
    else:
        kw = {"n_cpu_moe": int(value)}
    other = figures(make_plan(_r1(gpus=gpus, ctx=ctx, **kw)).schemes[0])
    assert differences(ref, other) == []


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 61), gpus=st.integers(1, 2))
def test_ot_layer_ranges_equal_the_matching_n_cpu_moe(n, gpus):
    by_count = make_plan(_r1(gpus=gpus, n_cpu_moe=n)).schemes[0]
    by_pattern = make_plan(_r1(gpus=gpus, tensor_overrides=[_layers(n)])).schemes[0]
    assert differences(figures(by_count), figures(by_pattern)) == []
    assert by_count.memory.host.weights_bytes > 0


def test_cpu_moe_is_a_top_level_flag(capsys):
    from planner.cli import main

    assert main(["--headless", "--json", "--model", R1, "--scheme", "Q4_K_M", "--device", "h100", "--gpus", "1",
                 "--host-ram", "768", "--cpu-moe"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    ref = figures(make_plan(_r1(gpus=1, n_cpu_moe=61)).schemes[0])
    s = doc["schemes"][0]
    assert s["memory"]["host"]["weights_bytes"] == ref["host"][0]
    assert s["speed"]["decode_tps"] == pytest.approx(ref["speed"][0], rel=0.01)
