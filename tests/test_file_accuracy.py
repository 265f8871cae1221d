"""A GGUF file whose tensor types are exactly a catalog scheme's (same architecture and shapes) carries
that scheme's measured accuracy, in the plan, its ranking and JSON alike; a file that differs in any one
tensor's type, or that names no catalog model of its shape, carries none."""

from __future__ import annotations

import json

import pytest

from planner.cli import main
from planner.core import catalog as cat
from planner.core.accuracy.scores import scheme_scores
from planner.core.llamacpp.schemes import resolve_scheme
from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
from planner.core.plan import PlanRequest
from planner.gguf.writer import write_sparse_gguf
from planner.make_plan import make_plan


def header(folder, model_id: str, scheme_id: str, *, change: int | None = None, name: str | None = None) -> str:
    """`dq-planner header`'s file of (model, scheme); `change`: that tensor's type set to another one;
    `name`: another general.name."""
    model = resolve_catalog_model(cat.resolve_model(model_id), None)
    if name is not None:
        model.name = name
    scheme = resolve_scheme(scheme_id)
    plan = size_scheme(model, scheme)
    types = {t.name: t.type for t in plan.tensors}
    if change is not None:
        t = plan.tensors[change]
        types[t.name] = "q8_0" if t.type != "q8_0" else "f16"
    path = folder / f"{model_id}-{scheme_id}-{change}-{name}.gguf"
    write_sparse_gguf(path, model, types=types, file_type=scheme.base)
    return str(path)


CASES = [("deepseek-r1-distill-qwen-32b", "Q4_K_M"), ("deepseek-r1-distill-qwen-32b", "Q8_0"),
         ("deepseek-r1", "DQ3_K_M"), ("deepseek-r1", "UD-Q2_K_XL")]


@pytest.mark.parametrize("model_id,scheme_id", CASES)
def test_a_file_equal_to_a_catalog_scheme_carries_its_accuracy(tmp_path, model_id, scheme_id):
    measured = scheme_scores(model_id, scheme_id, "general").accuracy
    assert measured is not None and measured.weighted_avg is not None
    plan = make_plan(PlanRequest(model_file=header(tmp_path, model_id, scheme_id), device="h200", gpus=8))
    sp = plan.schemes[0]
    assert sp.kind == "file" and sp.measured_as == (model_id, scheme_id)
    assert sp.accuracy is not None and sp.accuracy.weighted_avg == measured.weighted_avg
    assert any(scheme_id in n and "measured accuracy" in n for n in sp.notes)
    # the recommendation ranks it by that score
    assert plan.recommendation is not None and plan.recommendation.scheme == sp.id
    assert plan.recommendation.ranked[0].score is not None


@pytest.mark.parametrize("model_id,scheme_id", CASES[:1] + CASES[2:3])
def test_one_tensor_of_another_type_is_not_the_scheme(tmp_path, model_id, scheme_id):
    model = resolve_catalog_model(cat.resolve_model(model_id), None)
    for i in (0, len(model.tensors) // 2, len(model.tensors) - 1):
        plan = make_plan(PlanRequest(model_file=header(tmp_path, model_id, scheme_id, change=i), device="h200",
                                     gpus=8))
        sp = plan.schemes[0]
        assert sp.measured_as is None and sp.accuracy is None, i


def test_a_file_that_names_no_model_of_its_shape_is_unmeasured(tmp_path):
    # R1, R1-0528, V3 and V3-0324 have one shape: only the file's name tells them apart
    plan = make_plan(PlanRequest(model_file=header(tmp_path, "deepseek-r1", "DQ3_K_M", name="my-model"),
                                 device="h200", gpus=8))
    assert plan.schemes[0].measured_as is None and plan.schemes[0].accuracy is None
    v3 = make_plan(PlanRequest(model_file=header(tmp_path, "deepseek-r1", "DQ3_K_M", name="DeepSeek V3 0324"),
                               device="h200", gpus=8))
    assert v3.schemes[0].measured_as == ("deepseek-v3-0324", "DQ3_K_M")
    assert v3.schemes[0].accuracy.weighted_avg == scheme_scores("deepseek-v3-0324", "DQ3_K_M").accuracy.weighted_avg


def test_json_carries_the_files_accuracy(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    path = header(tmp_path, "deepseek-r1-distill-qwen-32b", "Q4_K_M")
    assert main(["--headless", "--json", "--model-file", path, "--device", "h100", "--gpus", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    s = doc["schemes"][0]
    want = scheme_scores("deepseek-r1-distill-qwen-32b", "Q4_K_M").accuracy.weighted_avg
    assert s["accuracy"]["weighted_avg"] == want
    assert main(["--headless", "--model-file", path, "--device", "h100", "--gpus", "1"]) == 0
    out = capsys.readouterr().out
    assert "no published general score" not in out and f"{want:.2f}" in out


def test_a_split_file_with_shards_missing_is_not_matched(tmp_path):
    from dataclasses import replace

    from planner.core.llamacpp.file_schemes import catalog_scheme_of
    from planner.gguf.model import model_from_gguf

    model = model_from_gguf(header(tmp_path, "deepseek-r1-distill-qwen-32b", "Q4_K_M"))
    assert catalog_scheme_of(model) is not None
    # the tensors of missing shards typed by the file's ftype rules are a prediction, not the file's types
    assert catalog_scheme_of(replace(model, predicted_tensors=12)) is None
