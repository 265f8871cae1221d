"""The llama.cpp output parsers, on output captured from the real binaries (tests/fixtures/llamacpp/,
re-captured by its capture.py). No binaries are needed here."""

from __future__ import annotations

import io

import pytest

from llamacpp_support import FIXTURES
from planner.engines.llamacpp.devices import parse_list_devices
from planner.engines.llamacpp.logs import (QuantizeLineParser, mib_to_bytes_range, parse_fit_params, parse_memory,
                                           parse_quantize, quantize_error, shows_as_mib)
from planner.engines.llamacpp.progress import Progress
from planner.engines.llamacpp.server import compare, device_key, measured_devices


def lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text(errors="replace").splitlines()


def test_dry_run_lines():
    log = parse_quantize(lines("quantize_dry_deepseek2-mla_Q4_K_M.log"))
    assert log.dry_run
    assert len(log.tensors) == 52 and [t.index for t in log.tensors] == list(range(1, 53))
    assert all(t.total == 52 for t in log.tensors)
    first = log.tensors[0]
    assert (first.name, first.ne, first.src_type, first.type) == ("output.weight", (256, 384, 1, 1), "bf16", "q6_K")
    assert (first.src_mib, first.mib, first.converted) == (0.19, 0.08, True)
    t = log.types()
    assert t["output_norm.weight"] == "f32"                      # copied: "size = 0.001 MiB"
    assert t["blk.2.ffn_down_exps.weight"] == "q6_K"
    assert t["blk.2.attn_q_b.weight"] == "f16"                   # 80-wide rows: f16 fallback
    exps = next(x for x in log.tensors if x.name == "blk.2.ffn_down_exps.weight")
    assert exps.ne == (256, 256, 4, 1) and exps.n_elements == 256 * 256 * 4
    assert log.fallbacks["blk.0.attn_k_b.weight"] == ("q4_K", "q5_0")
    assert log.fallbacks["blk.1.attn_q_b.weight"] == ("q4_K", "f16")
    assert len(log.fallbacks) == 7
    assert (log.model_mib, log.quant_mib) == (6.50, 2.11)
    assert not log.needs_imatrix and not log.errors


def test_dry_run_that_needs_an_imatrix():
    log = parse_quantize(lines("quantize_dry_deepseek2-mla_IQ2_XXS.log"))
    assert log.dry_run and log.needs_imatrix
    assert log.types()["blk.1.ffn_up_exps.weight"] == "iq2_xxs"
    assert log.types()["token_embd.weight"] == "q2_K"


def test_real_run_lines_and_overrides():
    log = parse_quantize(lines("quantize_deepseek2-mla_Q4_K_M.log"))
    assert not log.dry_run and len(log.tensors) == 52 and log.quant_mib == 2.11
    dry = parse_quantize(lines("quantize_dry_deepseek2-mla_Q4_K_M.log"))
    assert log.types() == dry.types()
    rules = parse_quantize(lines("quantize_deepseek2-mla_Q2_K_rules.log"))
    assert rules.overrides["output.weight"] == ("q2_K", "q8_0")
    assert rules.overrides["blk.1.ffn_down_exps.weight"] == ("q2_K", "q8_0")
    assert rules.types()["blk.2.ffn_down_exps.weight"] == "q8_0"
    assert rules.types()["blk.0.ffn_down.weight"] == "q4_0"      # q3_K fell back (320-wide rows)


def test_tensor_line_interrupted_by_imatrix_output():
    # "converting to q5_K .. " is followed by the imatrix loader's lines before "size = ..."
    log = parse_quantize(lines("quantize_deepseek2-mla_IQ2_XXS_imatrix.log"))
    assert len(log.tensors) == 52
    t = log.types()
    assert t["output.weight"] == "q5_K" and t["token_embd.weight"] == "q2_K"
    assert t["blk.1.ffn_gate_exps.weight"] == "iq2_xxs"
    out = next(x for x in log.tensors if x.name == "output.weight")
    assert (out.src_mib, out.mib) == (0.19, 0.06)


def test_incremental_feed_reports_each_tensor_once():
    p = QuantizeLineParser()
    done = [t.name for line in lines("quantize_deepseek2-mla_Q4_K_M.log") if (t := p.feed(line)) is not None]
    assert len(done) == 52 and len(set(done)) == 52


@pytest.mark.parametrize("fixture, error, n_done", [
    ("quantize_error_truncated.log",
     "tensor 'token_embd.weight' data is not within the file bounds, model is corrupted or incomplete", 0),
    ("quantize_error_nan.log", "tensor 'blk.2.ffn_up_exps.weight' has invalid data", 50),
    ("quantize_error_write.log", "basic_ios::clear: iostream error", 30),
    ("quantize_error_needs_imatrix.log", "this quantization requires an imatrix!", 0),
])
def test_quantize_errors(fixture, error, n_done):
    ls = lines(fixture)
    assert quantize_error(ls) == error
    assert len(parse_quantize(ls).tensors) == n_done


def test_memory_lines_cpu():
    r = parse_memory(lines("server_cpu.log"))
    assert r.model_mib == {"CPU_Mapped": 6.50}
    assert r.kv_mib == {"CPU": 7.50}
    assert r.compute_mib == {"CPU": 9.51}
    assert r.output_mib == {"CPU": 0.0}
    assert (r.kv.cells, r.kv.layers, r.kv.seqs, r.kv.k_type, r.kv.k_mib, r.kv.v_type, r.kv.v_mib) == (
        4096, 3, 1, "f16", 7.50, "f16", 0.0)
    assert r.file_mib == 6.50 and r.n_ctx == 4096
    [host] = r.breakdown
    assert (host.name, host.self_mib, host.model_mib, host.context_mib, host.compute_mib) == ("Host", 23, 6, 7, 9)


def test_memory_lines_rpc_and_breakdown():
    r = parse_memory(lines("server_rpc.log"))
    assert r.model_mib == {"CPU_Mapped": 0.19, "RPC0[127.0.0.1:42853]": 6.12, "RPC0[127.0.0.1:48903]": 0.19}
    assert r.kv_mib == {"RPC0[127.0.0.1:42853]": 7.50}
    assert r.compute_mib == {"RPC0[127.0.0.1:42853]": 27.04, "RPC0[127.0.0.1:48903]": 0.01, "CPU": 21.05}
    rows = {device_key(b.name): b for b in r.breakdown}
    assert set(rows) == {"RPC[127.0.0.1:42853]", "RPC[127.0.0.1:48903]", "Host"}
    a = rows["RPC[127.0.0.1:42853]"]
    assert (a.total_mib, a.free_mib, a.self_mib, a.model_mib, a.context_mib, a.compute_mib, a.unaccounted_mib) == (
        24105, 24105, 40, 6, 7, 27, -40)
    m = measured_devices(r)
    assert m["RPC[127.0.0.1:42853]"].weights_mib == 6.12 and m["Host"].compute_mib == 21.05


def test_memory_lines_of_older_builds():
    old = [
        "llm_load_tensors:        CPU buffer size =   308.23 MiB",   # not this build's wording: ignored
        "llama_kv_cache_init:      CUDA0 KV buffer size =   540.00 MiB",
        "llama_new_context_with_model: KV self size  = 1080.00 MiB, K (f16):  540.00 MiB, V (f16):  540.00 MiB",
        "llama_new_context_with_model:      CUDA0 compute buffer size =   164.01 MiB",
        "llama_kv_cache_unified: size = 2048.00 MiB (  8192 cells,  32 layers,  1 seqs), K (f16): 1024.00 MiB, V (f16): 1024.00 MiB",
    ]
    r = parse_memory(old)
    assert r.kv_mib == {"CUDA0": 540.0} and r.compute_mib == {"CUDA0": 164.01}
    assert r.kv is not None and r.kv.k_mib == 540.0 and r.kv.v_mib == 540.0


def test_fit_params():
    f = parse_fit_params(lines("fit_params.log"))
    assert f.args == ["-c", "4096", "-ngl", "-1"]
    p = parse_fit_params(lines("fit_params_print.log"))
    assert [(d.name, d.model_mib, d.context_mib, d.compute_mib) for d in p.devices] == [("Host", 6, 7, 9)]
    rpc = parse_fit_params(lines("fit_params_print_rpc.log"))
    assert [(d.name, d.model_mib, d.context_mib, d.compute_mib) for d in rpc.devices] == [
        ("RPC0", 3, 5, 27), ("RPC1", 2, 2, 24), ("Host", 0, 0, 21)]


def test_list_devices():
    devs = parse_list_devices((FIXTURES / "list_devices_rpc.log").read_text())
    assert [(d.name, d.label, d.total_bytes) for d in devs] == [
        ("RPC0", "RPC[127.0.0.1:42853]", 24105 << 20), ("RPC1", "RPC[127.0.0.1:48903]", 24105 << 20)]


def test_device_keys():
    assert device_key("RPC0[10.0.0.2:50052]") == "RPC[10.0.0.2:50052]"
    assert device_key("RPC3 (10.0.0.2:50052)") == "RPC[10.0.0.2:50052]"
    assert device_key("RPC[10.0.0.2:50052]") == "RPC[10.0.0.2:50052]"
    for host in ("CPU", "CPU_Mapped", "CPU_REPACK", "CUDA_Host", "Host"):
        assert device_key(host) == "Host"
    assert device_key("CUDA1 (H100 80GB HBM3)") == "CUDA1" and device_key("CUDA0") == "CUDA0"


def test_compare_planned_with_measured():
    from planner.core.plan import DeviceMemory, MemoryPlan

    r = parse_memory(lines("server_rpc.log"))
    a = DeviceMemory("RPC[127.0.0.1:42853]", weights_bytes=6_417_408, kv_bytes=7_864_320, compute_bytes=25 << 20)
    b = DeviceMemory("RPC[127.0.0.1:48903]", weights_bytes=196_608)
    host = DeviceMemory("Host", weights_bytes=196_608, compute_bytes=21 << 20, overhead_bytes=1536)
    mem = MemoryPlan(kv_cache_bytes=7_864_320, compute_bytes=0, host_bytes=0, per_device=[a, b], host=host)
    rows = {(c.device, c.component): c for c in compare(mem, r)}
    assert rows[("RPC[127.0.0.1:42853]", "weights")].exact           # 6417408 B prints as 6.12 MiB
    assert rows[("RPC[127.0.0.1:42853]", "kv")].exact
    c = rows[("RPC[127.0.0.1:42853]", "compute")]
    assert not c.exact and c.diff_mib == pytest.approx(25 - 27.04)
    assert rows[("Host", "output")].exact
    assert ("RPC[127.0.0.1:48903]", "kv") not in rows                 # neither planned nor measured


def test_mib_rounding_helpers():
    assert shows_as_mib(6_417_408, 6.12) and not shows_as_mib(6_417_408, 6.13)
    lo, hi = mib_to_bytes_range(0.19, 2)
    assert shows_as_mib(lo, 0.19) and shows_as_mib(hi, 0.19)
    assert not shows_as_mib(lo - 1, 0.19) and not shows_as_mib(hi + 1, 0.19)


def test_progress_bar_and_plain_lines():
    now = [0.0]
    tty = io.StringIO()
    p = Progress(1000, "quantize Q4_K_M", stream=tty, tty=True, clock=lambda: now[0])
    now[0] = 10.0
    p.update(250, "blk.0.ffn_up.weight")
    assert p.eta() == pytest.approx(30.0)
    assert "[#######-----------------------]  25.0% 00:10 ETA 00:30 blk.0.ffn_up.weight" in tty.getvalue()
    p.close()
    plain = io.StringIO()
    q = Progress(1000, "quantize", stream=plain, tty=False, clock=lambda: now[0])
    for i in range(1, 101):
        now[0] = 10.0 + i
        q.update(10 * i)
    out = plain.getvalue().splitlines()
    assert len(out) == 10 and "\r" not in plain.getvalue()       # one line per 10%
    assert out[0] == "quantize  10% (10 tensors, 00:10 elapsed, ETA 01:30)"   # started at t=10
    assert out[-1].startswith("quantize 100% (100 tensors")
