"""`dq-planner bench` against the real llama-bench, and the published runs of tests/fixtures/speed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from planner.core.plan import PlanRequest
from planner.make_plan import make_plan

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "tests/fixtures/speed/published.toml"


BENCH = ["--threads", "1", "--repetitions", "1", "--prompt", "64", "--gen", "16", "--depth", "128", "--ctx", "1024",
         "--host-ram", "8", "--json"]


def _bench_env(cache: Path) -> dict:
    return {"XDG_CACHE_HOME": str(cache), "DQ_PLANNER_DETECT": "0", "PATH": "/usr/bin:/bin"}


def _bandwidth_model_tps(src: Path, host_probe: dict) -> dict[str, float]:
    """The rows' predictions of the plan without measured kernels: the host's bandwidth and FLOPS as
    the probe measured them, the speed factors for every type (what a probe that measured nothing leaves)."""
    req = PlanRequest(model_file=str(src), device="host", host_ram=8, ctx=1024, prompt=64,
                      host_probe=(host_probe["bandwidth_gbs"], host_probe["tflops"]))
    out = {}
    for d in (0, 128):
        sp = make_plan(replace(req, depth=d)).schemes[0]
        out["pp64" + (f" @ d{d}" if d else "")] = sp.speed.prefill_tps
        sp = make_plan(replace(req, depth=d + 8)).schemes[0]
        out["tg16" + (f" @ d{d}" if d else "")] = sp.speed.decode_tps
    return out


def test_bench_predicts_and_measures(tiny_gguf, tmp_path):
    from llamacpp_support import require_llama_cpp

    require_llama_cpp("llama-bench")
    src = tiny_gguf("qwen2")
    r = subprocess.run([sys.executable, "-m", "planner.cli", "bench", "--model-file", str(src)] + BENCH,
                       capture_output=True, text=True, env=_bench_env(tmp_path), timeout=600)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [x["test"] for x in d["rows"]] == ["pp64", "tg16", "pp64 @ d128", "tg16 @ d128"]
    for x in d["rows"]:
        assert x["measured_tps"] > 0 and x["predicted_tps"] > 0
    assert d["host_probe"]["bandwidth_gbs"] > 0
    # the probe measured what this file's plan reads: its bf16 matrices, GQA attention; and said so on stderr
    assert d["host_probe"]["kernel_types"] == ["bf16"] and d["host_probe"]["attention"] == ["gqa"]
    assert d["notes"] == []
    assert "kernel probe 1/2: bf16 decode and prefill" in r.stderr
    assert "kernel probe 2/2: gqa decode attention" in r.stderr
    # the measured kernels, not the bandwidth model, made the prediction
    model = _bandwidth_model_tps(src, d["host_probe"])
    assert any(abs(x["predicted_tps"] / model[x["test"]] - 1) > 1e-3 for x in d["rows"])
    # the probes were cached where XDG_CACHE_HOME says
    assert (tmp_path / "dq-planner" / "host-probe.json").is_file()
    cached = json.loads((tmp_path / "dq-planner" / "host-kernels.json").read_text())
    assert set(cached["kernels"]) == {"bf16"} and set(cached["attention"]) == {"gqa"}


def test_bench_falls_back_when_the_kernel_probe_runs_past_its_limit(tiny_gguf, tmp_path):
    """A kernel probe stopped by its time limit (a real one: the child is killed) measured nothing here:
    the bench still runs, predicts every row from the bandwidth model, and says why."""
    from llamacpp_support import require_llama_cpp

    require_llama_cpp("llama-bench")
    src = tiny_gguf("qwen2")
    r = subprocess.run([sys.executable, "-m", "planner.cli", "bench", "--model-file", str(src), "--probe-timeout",
                        "1"] + BENCH, capture_output=True, text=True, env=_bench_env(tmp_path), timeout=600)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["host_probe"]["kernel_types"] == [] and d["host_probe"]["attention"] == []
    assert len(d["notes"]) == 1 and "ran past its 1 s limit" in d["notes"][0]
    assert "bf16, gqa attention not measured" in d["notes"][0]
    model = _bandwidth_model_tps(src, d["host_probe"])
    assert len(d["rows"]) == 4
    for x in d["rows"]:
        assert x["measured_tps"] > 0 and x["predicted_tps"] == pytest.approx(model[x["test"]], rel=1e-3)
    assert not (tmp_path / "dq-planner" / "host-kernels.json").exists()
    assert not _probe_children()


def _probe_children(of: int | None = None) -> list:
    import os

    import psutil

    kids = psutil.Process(of or os.getpid()).children(recursive=True)
    out = []
    for k in kids:
        try:
            if "planner.hardware.kernel_probe" in " ".join(k.cmdline()) and k.status() != psutil.STATUS_ZOMBIE:
                out.append(k)
        except psutil.Error:
            pass
    return out


def test_bench_falls_back_when_the_kernel_probe_is_killed(tiny_gguf, tmp_path):
    """The kernel probe killed by someone else (SIGKILL, as the OOM killer does) while measuring: the
    bench keeps what it had measured (nothing yet), predicts from the bandwidth model and notes it."""
    import signal
    import time

    from llamacpp_support import require_llama_cpp

    require_llama_cpp("llama-bench")
    src = tiny_gguf("qwen2")
    p = subprocess.Popen([sys.executable, "-m", "planner.cli", "bench", "--model-file", str(src)] + BENCH,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_bench_env(tmp_path))
    try:
        deadline = time.monotonic() + 120
        probe = []
        while not probe and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
            probe = _probe_children(p.pid)
        assert probe, "the kernel probe never started"
        probe[0].send_signal(signal.SIGKILL)
        out, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    d = json.loads(out)
    assert len(d["notes"]) == 1 and "was stopped by SIGKILL" in d["notes"][0]
    assert "bf16, gqa attention not measured" in d["notes"][0]
    model = _bandwidth_model_tps(src, d["host_probe"])
    for x in d["rows"]:
        assert x["predicted_tps"] == pytest.approx(model[x["test"]], rel=1e-3)


def test_kernel_probe_keeps_what_it_measured_before_it_was_killed(tmp_path):
    """Killed after its first step (q8_0's kernels), the probe's result keeps that step's real figures
    and names the steps it never reached; a probe that cannot load ggml at all measures nothing and says
    why; the child never outlives the call."""
    import signal

    from llamacpp_support import require_llama_cpp

    from planner.hardware.host import ProbeScope, probe_host_kernels

    lc = require_llama_cpp("llama-bench")
    scope = ProbeScope(("q8_0", "q4_K"), ("q4_K",), ("mla",))
    assert scope.wanted() == ["q8_0", "q4_K", "q4_K experts (ubatch)", "q4_K experts (decode)", "mla attention"]
    seen = []

    class KillAtStep2:
        def write(self, line):
            seen.append(line)
            if line.startswith("kernel probe 2/"):
                for k in _probe_children():
                    k.send_signal(signal.SIGKILL)

        def flush(self):
            pass

    res = probe_host_kernels(1, lc.folders, scope, progress=KillAtStep2())
    assert res.stopped == "was stopped by SIGKILL"                # by someone else: no crash message
    assert set(res.kernels.types) == {"q8_0"} and res.kernels.attention == {}
    assert 1e8 < res.kernels.types["q8_0"].decode_bytes_per_s < 1e12
    assert res.missing == scope.wanted()[1:]
    assert seen[0].startswith("kernel probe 1/5: q8_0 decode and prefill")
    assert not _probe_children()

    res = probe_host_kernels(1, [tmp_path], scope)
    assert res.kernels is None and res.missing == scope.wanted()
    assert "libggml-base / libggml-cpu not found" in res.stopped


def test_a_probe_of_every_type_is_asked_for_by_name(tmp_path):
    """The probe command measures nothing it was not asked for: without --types or --all-types it
    refuses to start (exit 2, before loading ggml), and bench's full probe is --all-kernel-types."""
    from planner.hardware.host import ProbeScope

    r = subprocess.run([sys.executable, "-m", "planner.hardware.kernel_probe", "1", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--types" in r.stderr and r.stdout == ""
    r = subprocess.run([sys.executable, "-m", "planner.hardware.kernel_probe", "1", "--types", "q4_K,q9_K",
                        str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip() == "kernel probe: unknown types q9_K"
    every = ProbeScope(every=True).wanted()
    assert len(every) == 23 * 3 + 2 and every[-2:] == ["mla attention", "gqa attention"]
    r = subprocess.run([sys.executable, "-m", "planner.cli", "bench", "--help"], capture_output=True, text=True)
    assert "--all-kernel-types" in r.stdout and "--probe-timeout" in r.stdout


def test_probe_scope_is_what_the_plan_reads(tiny_gguf):
    """The probe's scope of a plan: its matrices' types (the most bytes first, f32 as f16; norms and the
    embedding rows left out), its routed experts' types, its attention class and its layers' kind."""
    from planner.commands.bench import probe_scope

    r1 = probe_scope(PlanRequest(model="deepseek-r1", schemes=["Q4_K_M"], device="host", host_ram=1024))
    assert r1.types == ("q4_K", "q6_K", "f16", "q5_0")          # attn_k_b: q5_0; the router: f32
    assert set(r1.expert_types) == {"q4_K", "q6_K"}
    assert r1.attention == ("mla",) and r1.layers == ("mla",)
    legacy = probe_scope(PlanRequest(model="deepseek-r1", schemes=["Q4_K_M"], device="host", host_ram=1024,
                                     kv_mode="legacy"))
    assert legacy.attention == ("gqa",) and legacy.layers == ("mla",)
    q = probe_scope(PlanRequest(model_file=str(tiny_gguf("qwen2")), device="host", host_ram=8))
    assert q.types == ("bf16",) and q.expert_types == () and q.attention == ("gqa",) and q.layers == ("gqa",)


def test_the_suite_uses_its_own_cache_folder():
    """The tests (and every process they start) read and write their own cache and config folders,
    never those of the user running them."""
    import os

    home = Path.home().resolve()
    code = "from planner.hardware.host import _cache_file; import os; print(_cache_file()); print(os.environ['XDG_CONFIG_HOME'])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for line in r.stdout.split():
        assert home not in Path(line).resolve().parents
        assert Path(line).resolve().is_relative_to(Path(os.environ["XDG_CACHE_HOME"]).resolve().parent)


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
