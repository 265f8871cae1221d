"""One plan, one answer: what a plan says of where its figures come from, and that every path tells it
the same way (named profiles, text and JSON, errors that point to the right input)."""

from __future__ import annotations

import json

import pytest

from planner.cli import main
from planner.core.devices.profiles import resolve_device
from planner.core.plan import PlanRequest
from planner.make_plan import make_plan, with_host

R1 = "deepseek-r1"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- a named profile is that machine

def test_named_profiles_are_planned_with_their_own_figures(monkeypatch):
    monkeypatch.setenv("DQ_PLANNER_DETECT", "1")
    for device in ("h100", "rtx4090"):
        req = PlanRequest(model=R1, device=device, gpus=1, host_ram=512)
        assert with_host(req, None).host_probe is None        # no probe of this machine for a named GPU profile


def test_device_host_says_which_figures_are_this_machines(monkeypatch):
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    req = PlanRequest(model=R1, device="host", host_ram=768, schemes=["Q4_K_M"])
    profile = make_plan(req)
    host = resolve_device("host")
    assert profile.hardware.name == host.name and profile.hardware.source == "profile"
    # measured here (the probe's figures handed in, as planner.make_plan.with_host does with detection on)
    measured = make_plan(PlanRequest(model=R1, device="host", host_ram=768, schemes=["Q4_K_M"],
                                     host_probe=(host.bandwidth_gbs / 10, 1.0)))
    assert measured.hardware.name != host.name and measured.hardware.source == "measured here"
    note = next(n for n in measured.hardware.notes if "measured here" in n)
    assert f"{host.bandwidth_gbs / 10:.1f} GB/s" in note and host.name in note
    # a tenth of the bandwidth: the decode of a memory-bound CPU plan is several times slower
    assert measured.schemes[0].speed.decode_tps < profile.schemes[0].speed.decode_tps / 3


# ---------------------------------------------------------------- FP8 on a GPU without FP8 units

def test_fp8_on_a100_is_planned_weight_only_the_same_everywhere():
    from dataclasses import replace

    from planner.engines.compare import candidate, compare_deployments
    from planner.make_plan import candidates_from_specs

    req = PlanRequest(model=R1, engine="sglang", device="a100", nodes=2, schemes=["FP8"])
    plan = make_plan(req)
    sp = plan.schemes[0]
    note = next(n for n in sp.notes if n.startswith("no FP8 units on a100"))
    assert "weight-only" in note and plan.recommendation.scheme == "FP8"
    # --compare plans the same deployment: the same figures and the same words
    cand = candidates_from_specs(replace(req, schemes=None), ["sglang:FP8@2x8/a100"])[0]
    assert cand.scheme.speed.prefill_tps == sp.speed.prefill_tps
    assert note in compare_deployments([cand])[0].reasons
    # on H100 (FP8 units) the note is absent
    h100 = make_plan(replace(req, device="h100"))
    assert not any(n.startswith("no FP8 units") for n in h100.schemes[0].notes)


# ---------------------------------------------------------------- errors that help

def test_catalog_ids_are_case_insensitive_like_devices_and_schemes(capsys, monkeypatch):
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    code, out, _ = run(capsys, "--headless", "--json", "--model", "DeepSeek-R1", "--device", "H100",
                       "--scheme", "q4_k_m")
    doc = json.loads(out)
    assert code == 0 and doc["model"]["id"] == R1 and doc["schemes"][0]["id"] == "Q4_K_M"


@pytest.mark.parametrize("flag,typo,near", [
    ("--model", "deepseek-r2", "deepseek-r1"), ("--device", "h1000", "h100"), ("--scheme", "Q4_K_X", "Q4_K_M")])
def test_typos_get_the_nearest_ids_not_the_whole_list(capsys, monkeypatch, flag, typo, near):
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    code, _, err = run(capsys, "--headless", flag, typo)
    [line] = err.strip().splitlines()
    assert code == 2 and "did you mean" in line and near in line
    assert "deepseek-r1-distill-llama-70b" not in line and "mi300x" not in line and "IQ1_S" not in line


def test_a_hugging_face_repo_id_points_to_hf_and_the_catalog(capsys, monkeypatch):
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    code, _, err = run(capsys, "--headless", "--model", "deepseek-ai/DeepSeek-R1")
    assert code == 2 and "hf://deepseek-ai/DeepSeek-R1" in err and "--model deepseek-r1 " in err


def test_serve_print_command_needs_no_llama_cpp(capsys, monkeypatch, tmp_path):
    import shlex

    from planner.core import catalog as cat
    from planner.core.llamacpp.schemes import resolve_scheme
    from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
    from planner.gguf.writer import write_sparse_gguf

    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    monkeypatch.setenv("DQ_PLANNER_LLAMA_CPP", str(tmp_path))       # a folder without llama.cpp
    model = resolve_catalog_model(cat.resolve_model("deepseek-v2-lite"), None)
    path = tmp_path / "lite.gguf"
    scheme = resolve_scheme("BF16")
    write_sparse_gguf(path, model, types=size_scheme(model, scheme), file_type=scheme.base)
    code, out, err = run(capsys, "serve", "--model-file", str(path), "--device", "rtx4090", "--gpus", "1",
                         "--host-ram", "64", "--port", "9000", "--print-command")
    assert code == 0 and "no llama.cpp binaries" in err
    argv = shlex.split(out.strip())
    # the plan's placement: nothing fits the card alone, so the hybrid deployment's expert layers
    plan = make_plan(PlanRequest(model_file=str(path), device="rtx4090", gpus=1, host_ram=64))
    n = plan.schemes[0].n_cpu_moe
    assert n and argv[argv.index("--n-cpu-moe") + 1] == str(n)
    assert (argv[argv.index("-m") + 1], argv[argv.index("--port") + 1]) == (str(path), "9000")


# ---------------------------------------------------------------- text shows what JSON has

def _text(capsys, *argv: str) -> str:
    code, out, err = run(capsys, "--headless", *argv)
    assert code == 0, err
    return out


def test_max_context_and_speed_basis_in_text(capsys, monkeypatch):
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    args = ("--model", R1, "--scheme", "Q4_K_M", "--device", "h200", "--gpus", "8", "--ctx", "131072",
            "--prompt", "1024", "--depth", "4096")
    doc = json.loads(_text(capsys, *args, "--json", "--max-context"))
    s = doc["schemes"][0]
    text = _text(capsys, *args, "--max-context")
    header, _, row = text.split("\n\n")[1].splitlines()[:3]
    assert "max context" in header and f"{s['memory']['max_context']:,}" in row
    assert "prefill t/s (prompt 1024)" in header and "decode t/s (depth 4096)" in header
    assert f"{s['speed']['decode_tps']:.1f}" in row.split()
    # decode with the whole context cached, from the plan's own speed model
    plan = make_plan(PlanRequest(model=R1, schemes=["Q4_K_M"], device="h200", gpus=8, ctx=131072, prompt=1024,
                                 depth=4096))
    full = plan.schemes[0].speed.decode_tps_at(131072)
    assert "decode t/s (depth 131072)" in header and f"{full:.1f}" in row.split()
    assert full < s["speed"]["decode_tps"]


def test_depth_beyond_the_context_is_refused(capsys, monkeypatch):
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    code, _, err = run(capsys, "--headless", "--depth", "1000000", "--ctx", "131072")
    assert code == 2 and "--depth 1000000" in err and "131072" in err


def test_plans_say_why_speed_is_missing_and_how_rpc_devices_are_timed(capsys, monkeypatch):
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    ascend = make_plan(PlanRequest(model=R1, schemes=["Q4_K_M"], device="910b", gpus=16))
    assert ascend.schemes[0].speed is None
    assert any("no speed predicted" in n and "910b" in n and "bandwidth" in n for n in ascend.notes)
    rpc = PlanRequest(model=R1, schemes=["UD-Q2_K_XL"], device="h100", gpus=0, host_ram=512, n_cpu_moe="auto",
                      rpc=["10.0.0.2:50052=80G", "10.0.0.3:50052=80G"])
    plan = make_plan(rpc)
    h100 = resolve_device("h100")
    assert any("RPC[10.0.0.2:50052]" in n and h100.name in n and f"{h100.bandwidth_gbs:g} GB/s" in n
               for n in plan.notes)
    # an RPC-only plan is not "1 x 0 x" anything, in the launch commands or the recommendation
    from planner.engines.registry import engine
    from planner.render.recommendation import reasons

    lines = engine("llama.cpp").launch(plan, rpc, plan.recommendation.scheme).lines
    assert " x 0 x " not in lines[0] and "RPC devices" in lines[0]
    assert not any("0x " in r for r in reasons(plan.recommendation))


def test_detection_off_is_not_reported_as_nothing_detected(capsys, monkeypatch):
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    plan = make_plan(PlanRequest(model=R1, schemes=["Q4_K_M"]))
    assert not any("no accelerators detected" in n for n in plan.hardware.notes)
    assert any("detection is off" in n for n in plan.hardware.notes)


# ---------------------------------------------------------------- the README shows what the tool prints

def test_readme_sample_output_is_the_tools(capsys, monkeypatch):
    import shlex
    from pathlib import Path

    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("```\n$ ", 1)[1].split("\n```", 1)[0]
    cmd, _, shown = block.partition("\n")
    argv = shlex.split(cmd)
    assert argv[0] == "dq-planner"
    code, out, err = run(capsys, *argv[1:])
    assert code == 0, err
    assert out.rstrip("\n") == shown


def test_readme_crosscheck_count_is_the_catalogs():
    import re
    from pathlib import Path

    from planner.core import catalog as cat

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    m = re.search(r"plan \(all (\d+) models, every scheme", readme)
    assert m and int(m[1]) == len(cat.catalog())


# ---------------------------------------------------------------- accuracy shown once

def test_the_accuracy_column_shows_the_scores_the_recommendation_ranks(capsys, monkeypatch):
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    args = ("--engine", "vllm", "--model", "deepseek-r1-distill-qwen-32b", "--device", "h100", "--gpus", "1")
    text = _text(capsys, *args)
    rec = make_plan(PlanRequest(engine="vllm", model="deepseek-r1-distill-qwen-32b", device="h100",
                                gpus=1)).recommendation
    rows = {line.split()[0]: line for line in text.splitlines()[3:9] if line.strip()}
    for e in rec.ranked:
        assert e.score is not None and f"{e.score:.2f}" in rows[e.scheme].split()
        assert "unmeasured" not in rows[e.scheme]
    assert any(line.startswith("accuracy: ") for line in text.splitlines())
