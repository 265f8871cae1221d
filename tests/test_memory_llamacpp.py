"""The memory model against the real llama.cpp.

- Real runs of small generated models (deepseek2 MLA, qwen2, llama) on the CPU: the KV cache equals
  llama.cpp's "llama_kv_cache: size" line (K and V, cells, sequences) at several contexts, cache types
  and slot counts; the model buffer equals the planned weights; the compute buffer is within 10%.
- Full scale without weights or GPUs: a sparse GGUF carrying DeepSeek-R1's real header, placed over
  four loopback RPC devices by llama-fit-params (even and uneven --tensor-split): per-device weights
  and KV cache equal the plan's.
"""

from __future__ import annotations

import subprocess

import pytest
from llamacpp_support import assert_rpc_placement_matches, fit_params_by_device, require_llama_cpp
from llamacpp_support import rpc_servers as start_rpc_servers

from planner.core.catalog import catalog
from planner.core.plan import PlanRequest
from planner.make_plan import make_plan
from planner.core.llamacpp.schemes import resolve_scheme
from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
from planner.engines.llamacpp.logs import parse_memory, shows_as_mib
from planner.gguf.writer import write_sparse_gguf

MiB = 1 << 20


def _binary(tool: str) -> str:
    return str(require_llama_cpp(tool).binary(tool))


RUNS = [
    # kind, ctx, cache type (K = V), parallel slots, flash attention
    ("deepseek2-mla", 2048, "f16", 1, "on"),
    ("deepseek2-mla", 3000, "q8_0", 1, "on"),
    ("deepseek2-mla", 4096, "f16", 2, "off"),
    ("qwen2", 1024, "f16", 1, "off"),
    ("qwen2", 3000, "q8_0", 3, "on"),
    ("qwen2", 4096, "q4_0", 1, "on"),
    ("llama", 2048, "f16", 4, "on"),
    ("llama", 4096, "f16", 1, "off"),
]


@pytest.mark.parametrize("kind,ctx,ctype,np_,fa", RUNS)
def test_real_run_matches_plan(tiny_gguf, kind, ctx, ctype, np_, fa):
    exe = _binary("llama-completion")
    path = str(tiny_gguf(kind))
    cmd = [exe, "-m", path, "-c", str(ctx), "-n", "1", "-p", "hi", "-no-cnv", "-lv", "4", "-t", "1",
           "--no-warmup", "-np", str(np_), "-ctk", ctype, "-ctv", ctype, "-fa", fa, "-ngl", "0"]
    # On a loaded machine llama.cpp's log occasionally lacks its compute-buffer line (seen about once in a
    # hundred runs, never reproduced alone); such a log is incomplete, not a measurement: run it again.
    for _ in range(3):
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=120,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr[-2000:]
        rep = parse_memory(r.stderr.splitlines())
        if "CPU" in rep.compute_mib:
            break
    assert "CPU" in rep.compute_mib, r.stderr[-4000:]

    plan = make_plan(PlanRequest(model_file=path, device="h100", gpus=1, ngl=0, ctx=ctx, parallel=np_,
                                 cache_type_k=ctype, cache_type_v=ctype, flash_attn=fa))
    mem = plan.schemes[0].memory
    host = mem.host
    # KV cache: llama.cpp's own line, exactly (bytes shown with two decimals)
    assert rep.kv is not None
    assert shows_as_mib(mem.kv_cache_bytes, rep.kv.mib)
    assert rep.kv.cells * (rep.kv.seqs if np_ > 1 else 1) == mem.n_ctx
    assert rep.kv.seqs == np_
    # weights: the mapped model buffer holds every tensor (plus at most 31 bytes of alignment each)
    n_tensors = len(plan.schemes[0].tensors)
    mapped = rep.model_mib["CPU_Mapped"] * MiB
    assert abs(mapped - host.weights_bytes) <= 0.005 * MiB + 32 * n_tensors
    # compute buffer: the model within 10% of what llama.cpp reserved
    measured = rep.compute_mib["CPU"] * MiB
    assert abs(host.compute_bytes - measured) / measured < 0.10, (host.compute_bytes / MiB, measured / MiB)


@pytest.fixture(scope="module")
def rpc_servers():
    with start_rpc_servers(require_llama_cpp("rpc-server"), 4) as addrs:
        yield addrs


@pytest.fixture(scope="module")
def r1_sparse(tmp_path_factory):
    model = resolve_catalog_model(catalog()["deepseek-r1"], "mla")
    plan = size_scheme(model, resolve_scheme("Q4_K_M"))
    path = tmp_path_factory.mktemp("r1") / "r1-q4_k_m.gguf"
    write_sparse_gguf(path, model, types=plan)
    return str(path)


@pytest.mark.parametrize("split", ["1,1,1,1", "3,1,2,1"])
def test_full_scale_per_device_weights_and_kv_equal_llama_fit_params(rpc_servers, r1_sparse, split):
    theirs = fit_params_by_device(r1_sparse, split, rpc_servers)
    plan = make_plan(PlanRequest(device="h100", gpus=1, ngl=None, schemes=["Q4_K_M"], ctx=32768,
                                 tensor_split=[float(x) for x in split.split(",")] + [0.0],
                                 rpc=list(rpc_servers)))
    mem = plan.scheme("Q4_K_M").memory
    assert_rpc_placement_matches(mem, theirs, 4)
    # the local GPU got a zero share: nothing placed there
    assert mem.per_device[-1].weights_bytes == 0
