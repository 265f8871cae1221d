"""Counts and sizes a request may carry (planner/core/request_bounds.py): refused in one line with exit 2 before
anything is planned, and the plans that are accepted stay sane. Also --gpus 0 with RPC devices, unique
scheme ids for a GGUF file planned beside its own scheme, and the context-above-training note."""

import json
import os
import subprocess
import sys

import pytest

from planner.core.plan import PlanRequest
from planner.core.request_bounds import INT32_MAX, MAX_CONCURRENCY, MAX_DEVICES, MAX_GPUS_PER_NODE, MAX_NODES, check_request_bounds
from planner.errors import PlannerError
from planner.make_plan import make_plan

ENV = dict(os.environ, NO_COLOR="1", DQ_PLANNER_DETECT="0")


def run(*args):
    return subprocess.run([sys.executable, "-m", "planner.cli", "--headless", "--device", "h100", *args],
                          capture_output=True, text=True, env=ENV, timeout=60)


@pytest.mark.parametrize("args,subject", [
    (["--gpus", "1000000"], "--gpus must be from 0 to 384"),
    (["--nodes", "1000000"], "--nodes must be from 1 to 64"),
    (["--gpus", "384", "--nodes", "2"], "768 devices; at most 384"),
    (["--gpus", "8", "--nodes", "49"], "392 devices; at most 384"),
    (["--tensor-split", "nan,1"], "--tensor-split values must be finite"),
    (["--tensor-split", "inf,1"], "--tensor-split values must be finite"),
    (["--tensor-split", "1,-inf"], "--tensor-split"),
    (["--tensor-split", "1e-320,0"], "add up to more than 0"),
    (["--tensor-split", "1e39,1"], "32-bit floats"),
    (["--ctx", "9223372036854775807"], "--ctx must be from 1 to 2147483647"),
    (["--ctx", "2147483648"], "--ctx must be from 1 to 2147483647"),
    (["--ubatch", "4294967296"], "--ubatch must be from 1 to 2147483647"),
    (["--gpus", "0"], "--gpus 0 plans llama.cpp RPC devices and the host only"),
    (["--concurrency", "0"], "--concurrency must be at least 1"),
    (["--concurrency", "-3"], "--concurrency must be at least 1"),
    (["--concurrency", "1048577"], "--concurrency must be from 1 to 1048576"),
    (["--gen", "0"], "--gen must be at least 1"),
    (["--gen", "-5"], "--gen must be at least 1"),
    (["--gen", "4294967296"], "--gen must be from 1 to 2147483647"),
    (["--prompt", "-1"], "--prompt must be at least 1"),
    (["--prompt", "99999999999"], "--prompt must be from 1 to 2147483647"),
    (["--ttft-ms", "0"], "--ttft-ms must be a number above 0"),
    (["--tpot-ms", "nan"], "--tpot-ms must be a number above 0"),
    (["--tpot-ms", "1e12"], "--tpot-ms must be a number of milliseconds above 0 and at most 86400000"),
])
def test_out_of_bounds_requests_are_refused_in_one_line(args, subject):
    r = run(*args, "--scheme", "Q4_K_M")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and subject in lines[0] and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_the_bounds_themselves_are_accepted():
    check_request_bounds(PlanRequest(concurrency=MAX_CONCURRENCY, gen_tokens=INT32_MAX, prompt=INT32_MAX,
                                     ttft_ms=86_400_000.0, tpot_ms=0.001))
    for bad in (dict(concurrency=0), dict(concurrency=MAX_CONCURRENCY + 1), dict(gen_tokens=0),
                dict(prompt=INT32_MAX + 1), dict(ttft_ms=-1.0), dict(tpot_ms=float("inf"))):
        with pytest.raises(PlannerError):
            check_request_bounds(PlanRequest(**bad))
    check_request_bounds(PlanRequest(gpus=MAX_GPUS_PER_NODE, nodes=MAX_DEVICES // MAX_GPUS_PER_NODE))
    check_request_bounds(PlanRequest(gpus=MAX_DEVICES // MAX_NODES, nodes=MAX_NODES, ctx=INT32_MAX))
    with pytest.raises(PlannerError):
        check_request_bounds(PlanRequest(gpus=MAX_DEVICES // MAX_NODES + 1, nodes=MAX_NODES))
    # the profile's own count (--gpus not given) is bounded too, once resolved
    with pytest.raises(PlannerError, match="at most 384"):
        make_plan(PlanRequest(device="h100", nodes=MAX_NODES, schemes=["Q4_K_M"]))


def test_the_largest_single_domain_is_planned_whole():
    """A CloudMatrix-sized domain (384 devices) is planned: R1 Q4_K_M spread over the first 62 devices
    (61 layers + the output layer, whole layers per device), the others empty but listed."""
    p = make_plan(PlanRequest(device="910b", gpus=384, schemes=["Q4_K_M"]))
    per = p.scheme("Q4_K_M").memory.per_device
    assert len(per) == 384
    assert sorted(il for d in per for il in d.layers) == list(range(62))
    assert max(len(d.layers) for d in per) == 1
    assert p.scheme("Q4_K_M").fits is True
    assert p.scheme("Q4_K_M").memory.fewest_devices == 7


def test_a_huge_context_within_32_bits_is_planned_with_a_note():
    p = make_plan(PlanRequest(device="h100", ctx=1 << 20, schemes=["Q4_K_M"]))
    assert p.context == 1 << 20
    assert p.scheme("Q4_K_M").memory.n_ctx == 1 << 20
    assert any("above the 163,840 tokens" in n for n in p.notes)
    # within the trained context: no such note
    assert not any("trained for" in n for n in make_plan(PlanRequest(device="h100", schemes=["Q4_K_M"])).notes)


def test_gpus_0_plans_the_rpc_devices_and_the_host():
    r = run("--gpus", "0", "--rpc", "127.0.0.1:50052=200G,127.0.0.1:50053=200G", "--scheme", "UD-Q2_K_XL",
            "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["hardware"]["gpus"] == 0
    mem = doc["schemes"][0]["memory"]
    assert [d["device"] for d in mem["per_device"]] == ["RPC[127.0.0.1:50052]", "RPC[127.0.0.1:50053]"]
    # every repeating layer and the output layer on the two RPC devices, token_embd on the host
    assert sorted(il for d in mem["per_device"] for il in d["layers"]) == list(range(62))
    assert mem["host"]["layers"] == [] and mem["host"]["weights_bytes"] > 0
    assert doc["schemes"][0]["fits"] is True
    assert all(d["capacity_bytes"] == 200 << 30 for d in mem["per_device"])


def test_a_gguf_file_beside_its_own_scheme_has_a_unique_id(tiny_gguf, tmp_path, llama_cpp):
    out = tmp_path / "q.gguf"
    r = subprocess.run([str(llama_cpp.binary("llama-quantize")), str(tiny_gguf("qwen2")), str(out), "Q4_K_M", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    p = make_plan(PlanRequest(model_file=str(out), device="h100", gpus=1, schemes=["Q4_K_M", "Q8_0"]))
    assert [(s.id, s.kind) for s in p.schemes] == [("file:Q4_K_M", "file"), ("Q4_K_M", "ftype"), ("Q8_0", "ftype")]
    # the file as it is and the plan of its scheme are the same bytes (the file was made with that scheme)
    assert p.schemes[0].size_bytes == p.schemes[1].size_bytes
    # alone, the file keeps its scheme's name
    assert [s.id for s in make_plan(PlanRequest(model_file=str(out), device="h100", gpus=1)).schemes] == ["Q4_K_M"]
