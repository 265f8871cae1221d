"""A pasted llama.cpp command line as a plan request; -ot tensor overrides, -mg and -sm in the core."""

import json
import re
import subprocess
import sys

import pytest

from planner.core.llamacpp.memory import MemoryOptions, Slot, plan_memory, tensor_layer
from planner.core.llamacpp.sizing import size_file
from planner.engines.llamacpp.command_line import FFN_EXPS_REGEX, parse_command
from planner.errors import PlannerError
from planner.gguf.writer import write_gguf
from tiny_models import tiny_model


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("cmd") / "tiny-ds2.gguf"
    write_gguf(path, tiny_model("deepseek2-mla"))
    return str(path)


def test_short_and_long_spellings_make_one_request(gguf):
    short = parse_command(f"llama-server -m {gguf} -c 8192 -ngl 99 -ts 3/1 -fa on -ub 1024 -b 4096 "
                          "-ctk q8_0 -ctv q8_0 -np 2 -mg 1 -sm layer -ot exps=CPU").request
    long = parse_command(f"./build/bin/llama-server --model={gguf} --ctx-size 8192 --n-gpu-layers 99 "
                         "--tensor-split 3,1 --flash-attn on --ubatch-size 1024 --batch-size 4096 "
                         "--cache-type-k q8_0 --cache-type-v q8_0 --parallel 2 --main-gpu 1 --split-mode layer "
                         "--override-tensor exps=CPU").request
    assert short == long
    assert (short.model_file, short.ctx, short.ngl, short.tensor_split, short.flash_attn, short.ubatch,
            short.batch, short.cache_type_k, short.parallel, short.main_gpu, short.tensor_overrides) == (
        gguf, 8192, 99, [3.0, 1.0], "on", 1024, 4096, "q8_0", 2, 1, ["exps=CPU"])


def test_override_lists_keep_llama_cpp_order_and_cpu_moe_is_its_regex(gguf):
    r = parse_command(f"llama-cli -m {gguf} -ot 'blk\\.1\\.=CUDA0,exps=CPU' -fa -ot 'output=CPU' --cpu-moe").request
    assert r.tensor_overrides == ["blk\\.1\\.=CUDA0", "exps=CPU", "output=CPU", f"{FFN_EXPS_REGEX}=CPU"]
    assert r.flash_attn == "on"                  # -fa without a value (older builds)


def test_neutral_flags_are_noted_and_memory_flags_refused(gguf):
    c = parse_command(f"llama-server -m {gguf} -np 1 --host 0.0.0.0 --port 8080 -t 24 --jinja --temp 0.6 --no-mmap")
    assert c.notes == ["accepted, memory unchanged: --host --port -t --jinja --temp --no-mmap"]
    auto = parse_command(f"llama-server -m {gguf} --kv-unified")      # slots auto: one unified cache
    assert (auto.request.parallel, auto.request.kv_unified) == (4, True)
    shared = parse_command(f"llama-server -m {gguf} -np 4 --kv-unified -c 8192")   # ollama-style: 4 slots, one cache
    assert (shared.request.parallel, shared.request.kv_unified, shared.request.ctx) == (4, True, 8192)
    assert c.request.ctx == 32768 and c.request.ngl is None
    for bad, what in (("-nkvo", "KV cache on the host"), ("-sm row", "not modelled"),
                      ("--frobnicate 3", "not a llama.cpp flag"), ("-ngl", "needs a value"), ("extra", "unexpected")):
        with pytest.raises(PlannerError, match=what):
            parse_command(f"llama-server -m {gguf} {bad}")
    with pytest.raises(PlannerError, match="no -m"):
        parse_command("llama-server -c 4096")
    with pytest.raises(PlannerError, match="not a llama.cpp program"):
        parse_command(f"python -m {gguf}")


def _plan(gguf, slots, **kw):
    from planner.gguf.model import model_from_gguf

    model = model_from_gguf(gguf)
    sp = size_file(model)
    return model.hparams, sp.tensors, plan_memory(model.hparams, sp.tensors, slots, MemoryOptions(**kw))


def test_overrides_place_tensors_first_match_winning(gguf):
    slots = [Slot("CUDA0", 1 << 34), Slot("CUDA1", 1 << 34)]
    hp, tensors, base = _plan(gguf, slots, ctx=1024)
    _, _, mp = _plan(gguf, slots, ctx=1024, tensor_overrides=(("blk\\.0\\.", "CUDA1"), ("exps", "CPU"),
                                                              ("blk\\.0\\.ffn", "CPU")))
    # expected, rule by rule as llama_model::load_tensors applies them (regex_search, first match wins)
    home = {il: i for i, d in enumerate(base.per_device) for il in d.layers}
    want = [0, 0, 0]                     # CUDA0, CUDA1, host
    for t in tensors:
        il = tensor_layer(t.name, hp.n_layer)
        if re.search(r"blk\.0\.", t.name):
            want[1] += t.bytes
        elif "exps" in t.name or il < 0:
            want[2] += t.bytes
        else:
            want[home[il]] += t.bytes
    assert [d.weights_bytes for d in mp.per_device] + [mp.host.weights_bytes] == want
    assert want[2] > base.host.weights_bytes and 0 in home.values() and home[0] == 0   # blk.0 really moved
    assert [d.kv_bytes for d in mp.per_device] == [d.kv_bytes for d in base.per_device]   # KV follows the layer
    with pytest.raises(PlannerError, match="unknown buffer type 'CUDA7'"):
        _plan(gguf, slots, ctx=1024, tensor_overrides=(("exps", "CUDA7"),))


def test_split_mode_none_puts_every_layer_on_the_main_gpu(gguf):
    slots = [Slot("CUDA0", 1 << 34), Slot("CUDA1", 1 << 34)]
    hp, tensors, mp = _plan(gguf, slots, ctx=1024, split_mode="none", main_gpu=1)
    assert mp.per_device[0].layers == [] and mp.per_device[1].layers == list(range(hp.n_layer + 1))
    with pytest.raises(PlannerError, match="out of range"):
        _plan(gguf, slots, ctx=1024, split_mode="none", main_gpu=2)


def test_cli_from_command_plans_the_pasted_run(gguf):
    cmd = [sys.executable, "-m", "planner.cli", "--headless", "--json", "--device", "h100", "--gpus", "2",
           "--from-command", f"llama-server -m {gguf} -c 4096 -ngl 99 -ot exps=CPU --port 8081"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    mem = doc["schemes"][0]["memory"]
    assert "--port" in r.stderr and doc["context"] == 4096
    from planner.gguf.model import model_from_gguf

    tensors = size_file(model_from_gguf(gguf)).tensors
    exps = sum(t.bytes for t in tensors if "exps" in t.name)
    emb = sum(t.bytes for t in tensors if tensor_layer(t.name, 0) < 0 and not t.name.startswith("output"))
    assert mem["host"]["weights_bytes"] == exps + emb
    bad = subprocess.run(cmd[:-1] + [f"llama-server -m {gguf} -sm row"], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ the real llama.cpp, -ot over loopback RPC
@pytest.fixture(scope="module")
def rpc_pair():
    from llamacpp_support import require_llama_cpp, rpc_servers

    with rpc_servers(require_llama_cpp("rpc-server"), 2) as addrs:
        yield addrs


def test_real_llama_cpp_places_overridden_tensors_as_planned(rpc_pair, gguf):
    from llamacpp_support import require_llama_cpp
    from planner.core.plan import PlanRequest
    from planner.engines.llamacpp.logs import parse_memory
    from planner.make_plan import make_plan

    exe = str(require_llama_cpp("llama-completion").binary("llama-completion"))
    a, b = rpc_pair
    rules = [f"blk\\.1\\.=RPC0[{a}]", "exps=CPU", f"output=RPC0[{b}]"]
    line = (f"llama-completion -m {gguf} -c 1024 -ngl 99 -ts 1,1 --rpc {a},{b} -fa on "
            + " ".join(f"-ot '{r}'" for r in rules) + " -n 1 -p hi -no-cnv -t 1 --no-warmup -lv 4 -lm none")
    req = parse_command(line, base=PlanRequest(device="h100", gpus=0)).request
    assert req.tensor_overrides == rules
    cmd = [exe, "-m", gguf, "-c", "1024", "-ngl", "99", "-ts", "1,1", "--rpc", f"{a},{b}", "-fa", "on",
           "-n", "1", "-p", "hi", "-no-cnv", "-t", "1", "--no-warmup", "-lv", "4", "-lm", "none"]
    # -lm none (no mmap): a mapped host buffer spans the file range of its tensors, not their bytes
    for r in rules:
        cmd += ["-ot", r]
    run = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=180, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-2000:]
    rep = parse_memory(run.stderr.splitlines())
    mem = make_plan(req).schemes[0].memory
    n_tensors = len(size_file_of(gguf))
    by_label = {d.device: d for d in mem.per_device}
    for addr in (a, b):
        printed = rep.model_mib[f"RPC0[{addr}]"] * (1 << 20)
        planned = by_label[f"RPC[{addr}]"].weights_bytes
        assert abs(printed - planned) <= 0.005 * (1 << 20) + 32 * n_tensors, (addr, printed, planned)
    host = sum(v for k, v in rep.model_mib.items() if k.startswith("CPU")) * (1 << 20)
    assert abs(host - mem.host.weights_bytes) <= 0.005 * (1 << 20) + 32 * n_tensors, rep.model_mib
    assert by_label[f"RPC[{a}]"].weights_bytes != by_label[f"RPC[{b}]"].weights_bytes


def size_file_of(path):
    from planner.gguf.model import model_from_gguf

    return size_file(model_from_gguf(path)).tensors


def test_planned_server_command_carries_the_overrides_main_gpu_and_split_mode(gguf):
    from planner.core.plan import PlanRequest
    from planner.engines.llamacpp.argv import ServerOptions, server_argv
    from planner.engines.registry import engine
    from planner.make_plan import make_plan

    argv = server_argv("llama-server", ServerOptions(model_file=gguf, ctx=4096, n_gpu_layers=99,
                                                     override_tensors=["blk\\.1\\.=CUDA1", "exps=CPU"],
                                                     main_gpu=1, split_mode="none"))
    assert argv[argv.index("-sm") + 1] == "none" and argv[argv.index("-mg") + 1] == "1"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-ot"] == ["blk\\.1\\.=CUDA1", "exps=CPU"]
    req = parse_command(f"llama-server -m {gguf} -c 4096 -ngl 99 -ot exps=CPU",
                        base=PlanRequest(device="h100", gpus=2)).request
    plan = make_plan(req)
    lines = engine(plan.engine).launch(plan, req, plan.schemes[0].id).lines
    server = next(line for line in lines if line.startswith("llama-server"))
    assert " -ot exps=CPU" in server and " -sm layer" in server
