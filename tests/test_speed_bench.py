"""`dq-planner bench` against the real llama-bench, and the published runs of tests/fixtures/speed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from planner.core.plan import PlanRequest
from planner.make_plan import make_plan

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "tests/fixtures/speed/published.toml"


def test_bench_predicts_and_measures(tiny_gguf, tmp_path):
    from llamacpp_support import require_llama_cpp

    require_llama_cpp("llama-bench")
    src = tiny_gguf("qwen2")
    env = {"XDG_CACHE_HOME": str(tmp_path), "DQ_PLANNER_DETECT": "0", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "planner.cli", "bench", "--model-file", str(src), "--threads", "1",
                        "--repetitions", "1", "--prompt", "64", "--gen", "16", "--depth", "128", "--ctx", "1024",
                        "--host-ram", "8", "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [x["test"] for x in d["rows"]] == ["pp64", "tg16", "pp64 @ d128", "tg16 @ d128"]
    for x in d["rows"]:
        assert x["measured_tps"] > 0 and x["predicted_tps"] > 0
    assert d["host_probe"]["bandwidth_gbs"] > 0
    # the probe was cached where XDG_CACHE_HOME says
    assert (tmp_path / "dq-planner" / "host-probe.json").is_file()


def test_bench_needs_a_model_file():
    r = subprocess.run([sys.executable, "-m", "planner.cli", "bench", "--device", "h100"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def _runs():
    return tomllib.loads(PUBLISHED.read_text())["run"]


def test_published_runs_are_sourced_and_plannable():
    runs = _runs()
    assert len(runs) >= 15
    assert len({r["id"] for r in runs}) == len(runs)
    for run in runs:
        assert run["source"].startswith("https://") and run["verbatim"].strip()
        assert run["metric"] in ("decode", "prefill") and run["tps"] > 0
        kw = dict(run["request"])
        if "host_probe" in kw:
            kw["host_probe"] = tuple(kw["host_probe"])
        if kw.get("device", "").endswith(".toml"):
            kw["device"] = str(ROOT / kw["device"])
        sp = make_plan(PlanRequest(**kw)).scheme(kw["schemes"][0])
        assert sp.speed is not None and sp.speed.decode_tps > 0
    # a mainline GPU run's build date places it before or after the MoE decode rework (bench_speed._era)
    for run in runs:
        if run["engine"] == "llama.cpp" and run["request"].get("device") != "host":
            assert re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", run.get("build_date", "")), run["id"]
    # the forks and other engines are kept apart from mainline llama.cpp
    assert {r["engine"] for r in runs} >= {"llama.cpp", "ik_llama.cpp"}
