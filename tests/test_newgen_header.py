"""dq-planner header: the GGUF llama-quantize would produce, full length and sparse, never replacing a file;
llama.cpp's llama-fit-params loads it (every tensor's shape checked) and places it over loopback RPC
devices exactly as the plan does."""

from __future__ import annotations

import os

import pytest

from llamacpp_support import assert_rpc_placement_matches, dq, fit_params_by_device, require_llama_cpp
from planner.core.catalog import catalog
from planner.core.plan import PlanRequest
from planner.core.llamacpp.schemes import resolve_scheme
from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
from planner.gguf.header import read_gguf
from planner.make_plan import make_plan
from test_memory_llamacpp import rpc_servers  # noqa: F401  (the fixture: four loopback rpc-servers)

MiB = 1 << 20


def test_header_is_the_planned_file_sparse(tmp_path):
    out = tmp_path / "q.gguf"
    r = dq("header", "--model", "deepseek-r1-0528-qwen3-8b", "--scheme", "Q4_K_M", "--output", out)
    assert r.returncode == 0, r.stderr
    model = resolve_catalog_model(catalog()["deepseek-r1-0528-qwen3-8b"], None)
    plan = size_scheme(model, resolve_scheme("Q4_K_M"))
    h = read_gguf(out)
    assert [(t.name, t.type_name, t.bytes) for t in h.tensors] == [(t.name, t.type, t.bytes) for t in plan.tensors]
    st = os.stat(out)
    # full length: the header then every tensor at its offset; the data is a hole
    assert st.st_size == max(t.offset + t.bytes for t in h.tensors) and st.st_size > plan.size_bytes
    assert st.st_blocks * 512 < 64 * MiB
    assert h.metadata["general.file_type"] == int(resolve_scheme("Q4_K_M").ftype)


def test_header_never_replaces_a_file(tmp_path):
    out = tmp_path / "x.gguf"
    out.write_bytes(b"keep")
    r = dq("header", "--model", "deepseek-v3.1-terminus", "--scheme", "Q2_K", "--output", out)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == b"keep"
    assert [p.name for p in tmp_path.iterdir()] == ["x.gguf"]      # no temporary left behind


def test_header_refuses_what_llama_quantize_refuses(tmp_path):
    out = tmp_path / "v2l.gguf"
    r = dq("header", "--model", "deepseek-v2-lite", "--scheme", "Q1_0", "--output", out)
    assert r.returncode == 2 and "no tensor type fallback is defined for type q1_0" in r.stderr
    assert not out.exists()
    r = dq("header", "--model", "deepseek-r1-0528-qwen3-8b", "--scheme", "DQ3_K_M", "--output", out)
    assert r.returncode == 2 and not out.exists()


CASES = [("deepseek-r1-0528-qwen3-8b", "Q4_K_M", None), ("deepseek-v3.1-terminus", "Q4_K_M", "mla"),
         ("deepseek-v3.1-terminus", "MXFP4_MOE", "mla")]


@pytest.mark.parametrize("mid,sid,layout", CASES)
def test_llama_fit_params_loads_the_header(rpc_servers, tmp_path, mid, sid, layout):  # noqa: F811
    require_llama_cpp("llama-fit-params")
    out = tmp_path / f"{mid}-{sid}.gguf"
    args = ["header", "--model", mid, "--scheme", sid, "--output", out] + (["--layout", layout] if layout else [])
    r = dq(*args)
    assert r.returncode == 0, r.stderr
    split = "3,1,2,1"
    theirs = fit_params_by_device(out, split, rpc_servers)
    plan = make_plan(PlanRequest(model=mid, device="h100", gpus=1, ngl=None, schemes=[sid], ctx=32768,
                                 layout=layout, tensor_split=[float(x) for x in split.split(",")] + [0.0],
                                 rpc=list(rpc_servers)))
    assert_rpc_placement_matches(plan.scheme(sid).memory, theirs, 4)
