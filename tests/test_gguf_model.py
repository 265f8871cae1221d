"""planner.gguf.model: Hparams, layout and tensor types from GGUF headers."""

from __future__ import annotations

import shutil
import subprocess

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from planner.core.catalog import catalog
from planner.core.plan import PlanRequest
from planner.make_plan import make_plan
from planner.core.llamacpp.schemes import resolve_scheme
from planner.core.llamacpp.sizing import resolve_catalog_model, size_file, size_scheme
from planner.errors import PlannerError
from planner.gguf.header import read_gguf
from planner.gguf.model import layer_of, model_from_gguf
from planner.gguf.writer import write_gguf, write_sparse_gguf
from tiny_models import TINY_KINDS, tiny_model


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_round_trip_tiny(tiny_gguf, kind):
    src = tiny_model(kind)
    m = model_from_gguf(str(tiny_gguf(kind)))
    assert m.hparams == src.hparams
    assert m.layout == src.layout
    assert [(t.name, t.shape, t.src_type, t.layer) for t in m.tensors] == \
        [(t.name, t.shape, t.src_type, t.layer) for t in src.tensors]
    assert m.file_scheme == "BF16" and m.file_path == str(tiny_gguf(kind))
    assert m.name == f"tiny-{kind}" and m.id == f"{kind}-bf16"
    assert m.metadata["tokenizer.ggml.tokens"]["length"] == src.hparams.n_vocab
    assert size_file(m).size_bytes == read_gguf(tiny_gguf(kind)).tensor_bytes


def test_round_trip_f16_and_mixed_types(tmp_path):
    src = tiny_model("llama", T.F16)
    types = {"blk.0.ffn_up.weight": "q8_0", "blk.3.ffn_down.weight": "q6_K", "token_embd.weight": "q4_0"}
    p = write_gguf(tmp_path / "m.gguf", src, types=types, file_type="Q8_0")[0]
    m = model_from_gguf(str(p))
    assert m.hparams == src.hparams and m.file_scheme == "Q8_0"
    got = {t.name: t.src_type for t in m.tensors}
    assert got["blk.0.ffn_up.weight"] == T.Q8_0 and got["blk.3.ffn_down.weight"] == T.Q6_K
    assert got["token_embd.weight"] == T.Q4_0 and got["blk.1.ffn_up.weight"] == T.F16


@pytest.mark.parametrize("model_id,layout", [("deepseek-r1", "mla"), ("deepseek-r1", "legacy"),
                                             ("deepseek-r1-distill-llama-8b", None)])
def test_round_trip_full_scale_headers(tmp_path, model_id, layout):
    src = resolve_catalog_model(catalog()[model_id], layout)
    plan = size_scheme(src, resolve_scheme("Q4_K_M"))
    path = write_sparse_gguf(tmp_path / "m.gguf", src, types=plan)
    m = model_from_gguf(str(path))
    assert m.hparams == src.hparams and m.layout == src.layout and m.file_scheme == "Q4_K_M"
    assert size_file(m).size_bytes == plan.size_bytes
    assert [t.name for t in m.tensors] == [t.name for t in src.tensors]


def test_quantized_file_and_plan(tiny_gguf, llama_cpp, tmp_path):
    out = tmp_path / "q.gguf"
    r = subprocess.run([str(llama_cpp.binary("llama-quantize")), str(tiny_gguf("qwen2")), str(out), "Q4_K_S", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    m = model_from_gguf(str(out))
    assert m.file_scheme == "Q4_K_S" and m.hparams == tiny_model("qwen2").hparams
    # the types the file records are the plan's types for Q4_K_S
    plan = size_scheme(tiny_model("qwen2"), resolve_scheme("Q4_K_S"))
    assert size_file(m).type_bytes == plan.type_bytes and size_file(m).size_bytes == plan.size_bytes
    # --model-file in make_plan: the file's own plan first
    p = make_plan(PlanRequest(model_file=str(out), schemes=["Q8_0"]))
    assert [s.id for s in p.schemes] == ["Q4_K_S", "Q8_0"]
    assert p.schemes[0].size_bytes == plan.size_bytes and p.model.architecture == "qwen2"


def test_first_shard_only_completes_the_model(tiny_gguf, llama_cpp, tmp_path):
    """A Q3_K_M model split in 3; only shard 1 present: missing tensors typed by Q3_K_M's rules."""
    q = tmp_path / "q.gguf"
    quant = str(llama_cpp.binary("llama-quantize"))
    assert subprocess.run([quant, str(tiny_gguf("deepseek2-mla")), str(q), "Q3_K_M", "1"],
                          capture_output=True, timeout=120).returncode == 0
    split = str(llama_cpp.binary("llama-gguf-split"))
    assert subprocess.run([split, "--split", "--split-max-tensors", "20", str(q), str(tmp_path / "s")],
                          capture_output=True, timeout=120).returncode == 0
    full = model_from_gguf(str(tmp_path / "s-00003-of-00003.gguf"))
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(tmp_path / "s-00001-of-00003.gguf", only)
    part = model_from_gguf(str(only / "s-00001-of-00003.gguf"))
    assert part.hparams == full.hparams == tiny_model("deepseek2-mla").hparams
    assert [(t.name, t.src_type) for t in sorted(part.tensors, key=lambda t: t.name)] == \
        [(t.name, t.src_type) for t in sorted(full.tensors, key=lambda t: t.name)]
    assert "1 of 3 shards read; 32 tensors of the missing shards typed by Q3_K_M's rules" in part.source
    assert size_file(part).size_bytes == size_file(full).size_bytes == read_gguf(q).tensor_bytes


def test_missing_first_shard(tmp_path):
    paths = write_gguf(tmp_path / "m.gguf", tiny_model("qwen2-tied"), split_max_tensors=20)
    paths[0].unlink()
    with pytest.raises(PlannerError, match="no general.architecture \\(the first shard, which holds the metadata, "
                                           "is missing\\)"):
        model_from_gguf(str(paths[1]))


def _minimal(path, arch: str, **keys):
    w = gguf.GGUFWriter(path, arch)
    for k, v in keys.items():
        w.add_uint32(k.format(arch=arch), v)
    w.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_unsupported_and_incomplete_metadata(tmp_path):
    p = tmp_path / "g.gguf"
    _minimal(p, "gemma3")
    from planner.core.catalog import ARCHITECTURES
    from planner.errors import choices
    with pytest.raises(PlannerError, match=f"architecture 'gemma3' is not supported; supported: {choices(ARCHITECTURES)}$"):
        model_from_gguf(str(p))
    q = tmp_path / "l.gguf"
    _minimal(q, "llama", **{"{arch}.embedding_length": 32, "{arch}.attention.head_count": 4})
    with pytest.raises(PlannerError, match="GGUF metadata is missing 'llama.block_count'"):
        model_from_gguf(str(q))


def test_layer_of():
    assert layer_of("blk.12.ffn_down_exps.weight") == 12 and layer_of("output.weight") is None
