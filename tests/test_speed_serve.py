"""dq-planner serve's speed check: llama-server's own /completion timings (captured from a real run of a
tiny generated qwen2 on llama.cpp 11434, tests/fixtures/speed/llama-server/) parsed into tokens/s, and a
real serve run emitting the `speed` event with the plan's prediction beside the measurement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamacpp_support import dq, free_port, processes_using, require_llama_cpp
from planner.engines.llamacpp.server import Timing, compare_speed, parse_timings, probe_tokens, render_speed
from planner.errors import RunError
from planner.events import SCHEMA

FIX = Path(__file__).parent / "fixtures/speed/llama-server"


def test_parse_captured_completion_timings():
    doc = json.loads((FIX / "completion-tiny-qwen2.json").read_text())
    t = parse_timings(doc)
    # the request: 128 prompt token ids, 16 generated (ignore_eos), no cached prompt
    assert (t.prompt_n, t.predicted_n, t.cache_n) == (128, 16, 0)
    assert doc["tokens_predicted"] == 16 and doc["tokens_evaluated"] == 128
    assert (t.prompt_ms, t.predicted_ms) == (260.645, 11.559)
    # tokens/s from the counts and milliseconds equal llama-server's own per-second figures: 128 tokens
    # in 260.645 ms; 15 decode steps in 11.559 ms (the first of the 16 tokens comes with the prompt)
    assert t.prefill_tps == pytest.approx(doc["timings"]["prompt_per_second"], rel=1e-12)
    assert t.decode_tps == pytest.approx(doc["timings"]["predicted_per_second"], rel=1e-12)
    assert t.prefill_tps == pytest.approx(491.089, abs=1e-3) and t.decode_tps == pytest.approx(1297.690, abs=1e-3)


def test_no_timings_is_a_run_error():
    with pytest.raises(RunError, match="no timings"):
        parse_timings({"content": "x"})
    with pytest.raises(RunError):
        parse_timings({"timings": {"prompt_n": 3}})


def test_compare_takes_the_median_request():
    ts = [Timing(512, 1000.0, 33, 400.0), Timing(512, 4000.0, 33, 3200.0), Timing(512, 1280.0, 33, 320.0)]
    c = compare_speed(ts, 600.0, 90.0, "Host")
    # prefill 512, 128, 400 tok/s -> 400; decode (32 steps) 80, 10, 100 -> 80
    assert (c.measured_prefill_tps, c.measured_decode_tps) == (400.0, 80.0)
    assert c.gen_tokens == 33
    ev = c.to_event()
    assert set(ev) == set(SCHEMA["speed"])
    assert ev["predicted_decode_tps"] == 90.0 and ev["requests"] == 3
    assert "+12.5%" in render_speed(c)          # decode: (90 - 80) / 80
    assert "+50.0%" in render_speed(c)          # prefill: (600 - 400) / 400


def test_probe_tokens_are_exact_ids_inside_the_vocabulary():
    toks = probe_tokens(512, 32000)
    assert len(toks) == 512 and min(toks) >= 100 and max(toks) < 32000 - 100
    assert len(set(toks)) == 512                 # no repeats to be served from a cache
    small = probe_tokens(128, 384)
    assert min(small) >= 96 and max(small) < 384 - 96


def test_captured_serve_events_carry_speed():
    ev = [json.loads(line) for line in (FIX / "serve-tiny-qwen2.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in ev]
    assert kinds == ["started", "ready", "measured", "speed", "measured", "done"]
    sp = ev[3]
    assert set(sp) - {"event"} == set(SCHEMA["speed"])
    assert (sp["prompt_tokens"], sp["gen_tokens"], sp["requests"]) == (128, 16, 3)


def test_serve_measures_speed(tiny_gguf, tmp_path):
    require_llama_cpp("llama-server")
    model = tiny_gguf("qwen2")
    port = free_port()
    r = dq("serve", "--model-file", str(model), "--ctx", "1024", "--prompt", "64", "--gen", "8",
           "--speed-requests", "2", "--port", str(port), "--events", "jsonl", timeout=300)
    assert r.returncode == 0, r.stderr
    ev = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert [e["event"] for e in ev] == ["started", "ready", "measured", "speed", "measured", "done"]
    sp = ev[3]
    assert (sp["prompt_tokens"], sp["gen_tokens"], sp["requests"]) == (64, 8, 2)
    assert sp["measured_prefill_tps"] > 0 and sp["measured_decode_tps"] > 0
    # CPU-only: the host's prediction (its bandwidth probe) is always there
    assert sp["predicted_prefill_tps"] > 0 and sp["predicted_decode_tps"] > 0
    assert "speed (median of 2 requests)" in r.stderr
    assert processes_using(model) == []
