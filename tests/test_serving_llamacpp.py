"""llama-server with N slots under concurrency (planner/core/llamacpp/serving.py): the slots that hold a
request, the batched decode step (weights once, math per token, the experts a batch touches), the
closed-loop figures, the unified cache in memory and in the launch line, and llama-batched-bench's output
read from a captured real run."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from planner.core.llamacpp.memory import MemoryOptions, padded_ctx, plan_memory
from planner.core.llamacpp.serving import concurrency_curve, max_concurrency, step_seconds
from planner.core.llamacpp.speed import decode_step, expert_share, prefill_seconds
from planner.core.plan import PlanRequest
from planner.engines.llamacpp.batched_bench import batched_bench_argv, parse_batched_bench
from planner.engines.llamacpp.command_line import parse_command
from planner.engines.registry import engine
from planner.errors import PlannerError
from planner.make_plan import make_plan

FIXTURES = Path(__file__).parent / "fixtures" / "serving_llamacpp"
# a CPU host of given figures (no probe): the roofline's two sides are the bandwidth and the FLOPS
HOST = dict(device="host", host_ram=512, host_bandwidth=100.0)


def _plan(**kw):
    req = PlanRequest(**{**HOST, **kw})
    return req, make_plan(req).schemes[0]


def test_slots_hold_requests_that_fit_their_cells():
    # -np 4 over 8192 cells: 2048 cells a slot; one request of 2049 tokens fits none of them
    assert padded_ctx(8192, 4) == (8192, 2048)
    assert max_concurrency(8192, 4, False, 1536, 512) == 4
    assert max_concurrency(8192, 4, False, 1537, 512) == 0
    # unified: the slots share pad(8192) cells: 8 requests of 1000 tokens, but only as many as the slots
    assert max_concurrency(8192, 16, True, 600, 400) == 8
    assert max_concurrency(8192, 4, True, 600, 400) == 4
    assert max_concurrency(8192, 16, True, 2500, 500) == 2
    assert concurrency_curve(12) == [1, 2, 4, 8, 12] and concurrency_curve(8) == [1, 2, 4, 8]


def test_unified_cache_is_one_stream_of_ctx_cells_with_every_slots_logits():
    req, sp = _plan(model="deepseek-r1-distill-qwen-1.5b", schemes=["Q8_0"], ctx=8192, parallel=4,
                    kv_unified=True)
    _, one = _plan(model="deepseek-r1-distill-qwen-1.5b", schemes=["Q8_0"], ctx=8192, parallel=1)
    _, split = _plan(model="deepseek-r1-distill-qwen-1.5b", schemes=["Q8_0"], ctx=8192, parallel=4)
    u, o, s = sp.memory, one.memory, split.memory
    assert u.kv_cache_bytes == o.kv_cache_bytes == s.kv_cache_bytes       # 8192 cells either way
    assert u.compute_bytes == o.compute_bytes                            # one sequence over every cell
    assert u.compute_bytes > s.compute_bytes                             # the split's mask spans 2048 cells
    n_vocab = 151936
    assert u.host.overhead_bytes - o.host.overhead_bytes == 3 * n_vocab * 4   # 4 slots' logits
    # the unified slots hold 8 requests of 1024 tokens; the split slots 2048 cells each: 4
    assert (sp.serving.max_concurrency, split.serving.max_concurrency) == (4, 4)
    _, big = _plan(model="deepseek-r1-distill-qwen-1.5b", schemes=["Q8_0"], ctx=8192, parallel=4,
                   prompt=3000, gen_tokens=1000, kv_unified=True)
    assert big.serving.max_concurrency == 2
    _, none = _plan(model="deepseek-r1-distill-qwen-1.5b", schemes=["Q8_0"], ctx=8192, parallel=4,
                    prompt=3000, gen_tokens=1000)
    assert none.serving is None                                           # 4000 tokens > 2048 cells a slot


def test_launch_line_carries_the_slots_and_the_unified_cache_and_reads_back():
    req, _ = _plan(model="deepseek-r1-distill-qwen-1.5b", schemes=["Q8_0"], ctx=8192, parallel=4, kv_unified=True)
    plan = make_plan(req)
    line = next(x for x in engine("llama.cpp").launch(plan, req, "Q8_0").lines if x.startswith("llama-server "))
    argv = shlex.split(line)
    assert argv[argv.index("-np") + 1] == "4" and "--kv-unified" in argv and "--no-kv-unified" not in argv
    back = parse_command(line.replace(argv[argv.index("-m") + 1], "x.gguf")).request
    assert (back.parallel, back.kv_unified, back.ctx) == (4, True, 8192)
    split = shlex.split(next(x for x in engine("llama.cpp").launch(plan, replace(req, kv_unified=False), "Q8_0").lines
                             if x.startswith("llama-server ")))
    assert "--no-kv-unified" in split
    assert parse_command("llama-server -m x.gguf -np 4 -kvu -no-kvu").request.kv_unified is False


def test_batch_one_step_is_the_single_stream_decode():
    for kw in (dict(model="deepseek-r1-distill-qwen-7b", schemes=["Q4_K_M"], depth=3000),
               dict(model="deepseek-v2-lite", schemes=["Q4_K_M"], depth=100),
               dict(model="deepseek-r1", schemes=["Q4_K_M"], device="h200", gpus=8, depth=2000)):
        req = PlanRequest(**{**HOST, **kw})
        sp = make_plan(req).schemes[0]
        assert step_seconds(sp.speed.layout, 1, req.depth) == pytest.approx(1 / sp.speed.decode_tps, rel=1e-12)
        assert prefill_seconds(sp.speed.layout, req.prompt, req.depth) == \
            pytest.approx(req.prompt / sp.speed.prefill_tps, rel=1e-12)


def test_prompts_of_several_sequences_attend_to_their_own_tokens():
    # one ubatch per prompt (-ub = the prompt): B prompts cost B single prefills, to the rounding
    _, sp = _plan(model="deepseek-r1-distill-qwen-7b", schemes=["Q4_K_M"], ubatch=256, prompt=256)
    lay = sp.speed.layout
    one = prefill_seconds(lay, 256)
    assert prefill_seconds(lay, 256, 0, sequences=4) == pytest.approx(4 * one, rel=1e-12)
    # ubatches of 512 hold two prompts each: the weights are read half as often, and the attention is
    # each token's own sequence (not the 512 tokens before it in the batch)
    _, big = _plan(model="deepseek-r1-distill-qwen-7b", schemes=["Q4_K_M"], ubatch=512, prompt=256)
    lay = big.speed.layout
    assert prefill_seconds(lay, 256, 0, sequences=4) < prefill_seconds(lay, 512, 0, sequences=2)
    with pytest.raises(PlannerError):
        prefill_seconds(lay, 256, 0, sequences=0)


def test_a_batch_reads_the_weights_once_and_computes_every_token():
    dense = dict(model="deepseek-r1-distill-qwen-7b", schemes=["Q8_0"])
    # 100 GB/s, FLOPS of a GPU: memory-bound at every batch, the step is flat (depth 0: no cache to read)
    _, fast = _plan(**dense, host_probe=(100.0, 1000.0))
    lay = fast.speed.layout
    assert step_seconds(lay, 8, 0) / step_seconds(lay, 1, 0) == pytest.approx(1.0, abs=2e-3)
    # 0.01 TFLOPS: compute-bound, every token's math: the step is linear in the batch
    _, slow = _plan(**dense, host_probe=(100.0, 0.01))
    lay = slow.speed.layout
    s1, s2, s4, s8 = (step_seconds(lay, b, 0) for b in (1, 2, 4, 8))
    assert s8 - s4 == pytest.approx(2 * (s4 - s2), rel=1e-6)                # a + c x batch
    assert s8 / s1 == pytest.approx(8.0, rel=0.03)
    # each sequence reads its own cache: at depth d, b sequences read b x d rows
    _, mid = _plan(**dense)
    lay = mid.speed.layout
    _, _, per_ctx = decode_step(lay, 1, 0)
    assert step_seconds(lay, 4, 1000) - step_seconds(lay, 4, 0) == pytest.approx(4 * 1000 * per_ctx, rel=1e-9)


def test_a_moe_batch_reads_the_experts_it_touches():
    assert expert_share(8 / 256, 1) == pytest.approx(1 / 32)
    assert expert_share(8 / 256, 32) == pytest.approx(1 - (31 / 32) ** 32)          # 0.638
    assert expert_share(6 / 64, 16) == pytest.approx(1 - (58 / 64) ** 16)
    with pytest.raises(PlannerError):
        expert_share(0.5, 0)
    req, sp = _plan(model="deepseek-v2-lite", schemes=["Q4_K_M"], host_probe=(100.0, 1000.0))
    lay = sp.speed.layout
    experts = sum(t.bytes for t in sp.tensors if "_exps." in t.name)
    embd_row = next(t.bytes / t.shape[1] for t in sp.tensors if t.name == "token_embd.weight")
    _, b1, _ = decode_step(lay, 1, 0)
    _, b8, _ = decode_step(lay, 8, 0)
    grown = sum(b8.values()) - sum(b1.values())
    assert grown == pytest.approx(experts * (expert_share(6 / 64, 8) - 6 / 64) + 7 * embd_row, rel=1e-6)
    # sequences fed the same tokens (llama-batched-bench) route alike: one token's experts
    _, same, _ = decode_step(lay, 8, 0, expert_batch=1)
    assert sum(same.values()) - sum(b1.values()) == pytest.approx(7 * embd_row, rel=1e-6)


def test_closed_loop_figures_obey_littles_law_and_queue_beyond_the_slots():
    _, sp = _plan(model="deepseek-r1-distill-qwen-7b", schemes=["Q4_K_M"], ctx=16384, parallel=4,
                  concurrency=4, prompt=512, gen_tokens=256)
    s = sp.serving
    assert s.max_concurrency == 4 and [p.concurrency for p in s.curve] == [1, 2, 4]
    lay = sp.speed.layout
    pre = prefill_seconds(lay, 512)
    step = step_seconds(lay, 4, 512 + 128)
    assert s.requests_per_s == pytest.approx(1 / (pre + 255 * step / 4), rel=1e-9)
    assert s.output_tps == pytest.approx(256 * s.requests_per_s, rel=1e-9)
    # a request's time in the server: concurrency / rate = TTFT + 255 later tokens
    assert s.ttft_s + 255 * s.tpot_s == pytest.approx(4 / s.requests_per_s, rel=1e-9)
    assert s.ttft_s == pytest.approx(pre + step / 2, rel=1e-9)
    one = s.curve[0]
    assert one.ttft_s == pytest.approx(pre) and one.tpot_s == pytest.approx(step_seconds(lay, 1, 640), rel=1e-9)
    # per user slower, all together faster
    assert s.curve[0].tpot_s < s.curve[1].tpot_s < s.curve[2].tpot_s
    assert s.curve[0].output_tps < s.curve[1].output_tps < s.curve[2].output_tps
    assert (s.saturation.concurrency, s.saturation.requests_per_s) == (4, s.requests_per_s)
    # 12 clients on 4 slots: the same rate, 8 requests queued ahead of each new one's slot
    _, over = _plan(model="deepseek-r1-distill-qwen-7b", schemes=["Q4_K_M"], ctx=16384, parallel=4,
                    concurrency=12, prompt=512, gen_tokens=256)
    o = over.serving
    assert o.requests_per_s == pytest.approx(s.requests_per_s) and o.tpot_s == pytest.approx(s.tpot_s)
    assert o.ttft_s - s.ttft_s == pytest.approx(8 / s.requests_per_s, rel=1e-9)
    assert o.bound == s.bound == "CPU0" and o.max_concurrency == 4       # the step of 4 slots, on the host


def test_json_carries_the_serving_figures():
    req, sp = _plan(model="deepseek-r1-distill-qwen-1.5b", schemes=["Q4_K_M"], ctx=8192, parallel=2,
                    concurrency=2, gen_tokens=128)
    doc = make_plan(req).to_dict()["schemes"][0]["serving"]
    assert (doc["concurrency"], doc["prompt_tokens"], doc["gen_tokens"], doc["max_concurrency"]) == (2, 512, 128, 2)
    assert doc["tpot_s"] == pytest.approx(sp.serving.tpot_s, rel=1e-5)
    assert doc["saturation"]["concurrency"] == 2 and len(doc["curve"]) == 2


# ------------------------------------------------------------------ llama-batched-bench's output
def test_batched_bench_output_is_read_from_a_real_run():
    run = parse_batched_bench((FIXTURES / "batched-bench-qwen2-q4_k_m.txt").read_text())
    # -c 2048 -b 2048 -ub 512 -npp 128 -ntg 64 -npl 1,2,4,8 (bench/bench_serving_llamacpp.py)
    assert (run.settings["n_kv_max"], run.settings["n_batch"], run.settings["n_ubatch"]) == (2048, 2048, 512)
    assert [c.pl for c in run.cases] == [1, 2, 4, 8]
    c = run.case(128, 64, 8)
    assert (c.pp, c.tg, c.n_kv) == (128, 64, 8 * 192)
    assert c.speed_tg == pytest.approx(8 * 64 / c.t_tg, rel=5e-3)
    assert c.speed_pp == pytest.approx(8 * 128 / c.t_pp, rel=5e-3)
    assert c.step_s == pytest.approx(c.t_tg / 64)
    jl = parse_batched_bench((FIXTURES / "batched-bench-qwen2-q4_k_m.jsonl").read_text())
    assert [c.pl for c in jl.cases] == [1, 2, 4, 8] and jl.settings["n_kv_max"] == 2048
    assert all(x.speed_tg == pytest.approx(x.pl * x.tg / x.t_tg, rel=1e-4) for x in jl.cases)
    with pytest.raises(PlannerError, match="no result rows"):
        parse_batched_bench("main: n_kv_max = 5120, n_batch = 2048, n_ubatch = 512, flash_attn = -1, is_pp_shared = 0")
    with pytest.raises(PlannerError, match="malformed"):
        parse_batched_bench('{"pp": 1, "tg": 1, "pl": 0, "n_kv": 2, "t_pp": 1, "speed_pp": 1, "t_tg": 1, "speed_tg": 1}')
    argv = batched_bench_argv("llama-batched-bench", "m.gguf", ctx=5120, prompts=[128], gens=[32],
                              sequences=[1, 2, 4, 8], threads=2)
    assert argv[argv.index("-npl") + 1] == "1,2,4,8" and "--no-kv-unified" in argv and "-ngl" in argv
    with pytest.raises(PlannerError):
        batched_bench_argv("x", "m.gguf", ctx=1, prompts=[0], gens=[1], sequences=[1])
