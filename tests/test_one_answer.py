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
