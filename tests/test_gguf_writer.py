"""planner.gguf.writer: the files it writes are what llama.cpp's converter writes, and llama.cpp loads them."""

from __future__ import annotations

import os
import re
import subprocess

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from planner.core.llamacpp.architectures import enumerate_tensors
from planner.core.catalog import catalog
from planner.core.ggml.tensor_types import tensor_bytes, type_name
from planner.core.llamacpp.schemes import resolve_scheme
from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
from planner.errors import PlannerError
from planner.gguf.header import read_gguf
from planner.gguf.writer import model_from_hparams, spm_vocab, write_gguf, write_sparse_gguf
from llamacpp_support import run_logged
from tiny_models import TINY_KINDS, tiny_deepseek2_hparams, tiny_hparams, tiny_model


def _field(reader: gguf.GGUFReader, key: str):
    f = reader.fields[key]
    return f.contents()


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_tiny_file_matches_the_converters_tensor_list(tiny_gguf, kind):
    """gguf's own reader sees exactly enumerate_tensors' names, ggml shapes and source types."""
    hp, layout = tiny_hparams(kind)
    expected = enumerate_tensors(hp, layout, T.BF16)
    r = gguf.GGUFReader(tiny_gguf(kind))
    got = [(t.name, tuple(int(d) for d in t.shape), t.tensor_type) for t in r.tensors]
    assert got == [(s.name, s.shape, s.src_type) for s in expected]
    assert _field(r, "general.architecture") == hp.arch
    assert _field(r, "general.file_type") == int(gguf.LlamaFileType.MOSTLY_BF16)
    assert _field(r, "tokenizer.ggml.model") == "llama"
    assert len(_field(r, "tokenizer.ggml.tokens")) == hp.n_vocab
    assert _field(r, f"{hp.arch}.block_count") == hp.n_layer


def test_deepseek2_layouts_write_the_converters_head_keys(tiny_gguf):
    mla = gguf.GGUFReader(tiny_gguf("deepseek2-mla"))
    legacy = gguf.GGUFReader(tiny_gguf("deepseek2-legacy"))
    # MLA: MQA view (1 kv head, K = kv_lora + rope, V = kv_lora) plus the per-head _mla sizes
    assert _field(mla, "deepseek2.attention.head_count_kv") == 1
    assert _field(mla, "deepseek2.attention.key_length") == 256 + 64
    assert _field(mla, "deepseek2.attention.value_length") == 256
    assert _field(mla, "deepseek2.attention.key_length_mla") == 128 + 64
    assert _field(mla, "deepseek2.attention.value_length_mla") == 128
    # legacy: MHA head sizes, no _mla keys
    assert _field(legacy, "deepseek2.attention.head_count_kv") == 2
    assert _field(legacy, "deepseek2.attention.key_length") == 192
    assert _field(legacy, "deepseek2.attention.value_length") == 128
    assert "deepseek2.attention.key_length_mla" not in legacy.fields
    assert {t.name for t in mla.tensors if "attn_k_b" in t.name} == {f"blk.{i}.attn_k_b.weight" for i in range(3)}
    assert not any("attn_kv_b" in t.name for t in mla.tensors)
    assert {t.name for t in legacy.tensors if "attn_kv_b" in t.name} == {f"blk.{i}.attn_kv_b.weight" for i in range(3)}


def test_tiny_dimensions_exercise_block_size_fallbacks():
    """Rows that take K-quants (256), that need 32-blocks (128, 320, 384) and that need f16 (80, 432)."""
    rows = {}
    for kind in TINY_KINDS:
        for t in tiny_model(kind).tensors:
            if len(t.shape) >= 2:
                rows.setdefault(t.shape[0], set()).add(t.name.split(".")[-2])
    assert {"attn_k_b"} <= rows[128]
    assert {"ffn_down"} <= rows[320] and {"attn_q"} <= rows[320]      # deepseek2 dense ffn_down; qwen2-tied
    assert {"ffn_down"} <= rows[384]
    assert {"attn_q_b"} == rows[80]
    assert {"ffn_down"} == rows[432]
    assert {"ffn_down_exps", "ffn_down_shexp", "attn_v_b", "attn_kv_b", "attn_output"} <= rows[256]
    assert all(n % 32 for n in (80, 432)) and all(n % 256 and not n % 32 for n in (128, 320, 384))


def test_spm_vocab():
    tokens, scores, types = spm_vocab(300)
    assert tokens[:4] == ["<unk>", "<s>", "</s>", "<0x00>"] and tokens[258] == "<0xFF>"
    assert len(tokens) == len(set(tokens)) == len(scores) == len(types) == 300
    assert types[:4] == [2, 3, 3, 6] and types[259] == 1
    with pytest.raises(PlannerError, match="at least 259"):
        spm_vocab(100)


def test_per_tensor_types_and_values(tmp_path):
    model = tiny_model("llama")
    types = {"blk.0.ffn_up.weight": "q8_0", "blk.0.ffn_gate.weight": T.F32, "blk.1.ffn_up.weight": "q4_K",
             "blk.1.attn_q.weight": "f16"}
    path = write_gguf(tmp_path / "m.gguf", model, types=types)[0]
    r = gguf.GGUFReader(path)
    by = {t.name: t for t in r.tensors}
    assert {n: type_name(by[n].tensor_type) for n in types} == {
        "blk.0.ffn_up.weight": "q8_0", "blk.0.ffn_gate.weight": "f32", "blk.1.ffn_up.weight": "q4_K",
        "blk.1.attn_q.weight": "f16"}
    assert by["blk.2.ffn_up.weight"].tensor_type == T.BF16
    for t in model.tensors:
        ty = by[t.name].tensor_type
        assert int(by[t.name].n_bytes) == tensor_bytes(t.shape, ty)
    # random values: f32 exact, q8_0 within its step; norms are ones; K-quants (not made by gguf) are zero blocks
    f32 = np.asarray(by["blk.0.ffn_gate.weight"].data)
    q8 = gguf.quants.dequantize(by["blk.0.ffn_up.weight"].data, T.Q8_0)
    assert f32.shape == (512, 256) and 0.03 < float(f32.std()) < 0.1    # std 1/sqrt(256) = 0.0625
    assert q8.shape == (512, 256) and 0.03 < float(q8.std()) < 0.1
    assert np.all(np.asarray(by["blk.0.attn_norm.weight"].data) == 1.0)
    assert not np.asarray(by["blk.1.ffn_up.weight"].data).any()
    # the file type: the type holding most weight bytes (bf16 here)
    assert r.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_BF16)


def test_types_errors(tmp_path):
    model = tiny_model("deepseek2-mla")
    with pytest.raises(PlannerError, match="no tensor named 'nope.weight'"):
        write_gguf(tmp_path / "a.gguf", model, types={"nope.weight": "q8_0"})
    with pytest.raises(PlannerError, match="blk.0.attn_k_b.weight: rows of 128 elements are not whole q4_K blocks"):
        write_gguf(tmp_path / "b.gguf", model, types={"blk.0.attn_k_b.weight": "q4_K"})
    with pytest.raises(PlannerError, match="unknown tensor type 'q9_9'"):
        write_gguf(tmp_path / "c.gguf", model, types={"blk.0.attn_k_b.weight": "q9_9"})
    with pytest.raises(PlannerError, match="2 types given for 52 tensors"):
        write_gguf(tmp_path / "d.gguf", model, types=[T.F16, T.F16])
    assert sorted(os.listdir(tmp_path)) == []           # nothing half-written, no temporary folders left


def test_no_overwrite(tmp_path):
    p = tmp_path / "m.gguf"
    write_gguf(p, tiny_model("qwen2-tied"))
    before = p.read_bytes()
    with pytest.raises(PlannerError, match="exists; not overwriting"):
        write_gguf(p, tiny_model("qwen2-tied"), seed=1)
    assert p.read_bytes() == before
    write_gguf(p, tiny_model("qwen2-tied"), seed=1, overwrite=True)
    assert p.read_bytes() != before
    assert sorted(os.listdir(tmp_path)) == ["m.gguf"]


def test_split_writing(tmp_path):
    model = tiny_model("deepseek2-mla")
    paths = write_gguf(tmp_path / "m.gguf", model, split_max_tensors=20)
    assert [p.name for p in paths] == ["m-00001-of-00003.gguf", "m-00002-of-00003.gguf", "m-00003-of-00003.gguf"]
    first = gguf.GGUFReader(paths[0])
    assert first.fields["split.count"].contents() == 3 and first.fields["split.tensors.count"].contents() == 52
    later = gguf.GGUFReader(paths[1]).fields
    assert {k for k in later if not k.startswith("GGUF.")} == {"split.no", "split.count", "split.tensors.count"}
    h = read_gguf(paths[0])
    assert [t.name for t in h.tensors] == [t.name for t in model.tensors]


def _run_completion(llama_cpp, path) -> str:
    r = run_logged([str(llama_cpp.binary("llama-completion")), "-m", str(path), "-p", "hi", "-n", "1", "-no-cnv",
                    "-c", "256", "-t", "1", "--temp", "0", "-lv", "4"], needs=r"llama_kv_cache: size =")
    return r.stdout + r.stderr


def _info(log: str, key: str) -> str:
    m = re.search(rf"print_info: {re.escape(key)}\s+= (.+)", log)
    assert m, key
    return m.group(1).strip()


def _kv_mib(log: str) -> tuple[float, float]:
    m = re.search(r"K \(f16\):\s+([\d.]+) MiB, V \(f16\):\s+([\d.]+) MiB", log)
    assert m
    return float(m.group(1)), float(m.group(2))


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_llama_cpp_loads_the_tiny_models(tiny_gguf, llama_cpp, kind):
    hp, layout = tiny_hparams(kind)
    log = _run_completion(llama_cpp, tiny_gguf(kind))
    assert _info(log, "arch") == hp.arch
    assert _info(log, "vocab type") == "SPM"
    assert _info(log, "n_vocab") == str(hp.n_vocab)
    assert _info(log, "n_layer") == str(hp.n_layer)
    assert _info(log, "file type") == "BF16"
    k, v = _kv_mib(log)
    cells = 256
    if layout == "mla":        # latent K only: (kv_lora + rope) per token per layer
        assert _info(log, "n_head_kv") == "1" and _info(log, "n_embd_head_k_mla") == "192"
        assert (k, v) == (round(cells * hp.n_layer * (256 + 64) * 2 / 2**20, 2), 0.0)
    elif layout == "legacy":   # MHA: n_head * (192 + 128)
        assert _info(log, "n_head_kv") == "2" and _info(log, "n_embd_head_k") == "192"
        assert (k, v) == (round(cells * hp.n_layer * 2 * 192 * 2 / 2**20, 2), round(cells * hp.n_layer * 2 * 128 * 2 / 2**20, 2))
    else:
        assert _info(log, "n_head_kv") == str(hp.n_head_kv)
        assert (k, v) == (round(cells * hp.n_layer * hp.n_head_kv * 64 * 2 / 2**20, 2),) * 2


def test_llama_cpp_loads_a_split_model(tmp_path, llama_cpp):
    model = tiny_model("qwen2")
    paths = write_gguf(tmp_path / "m.gguf", model, split_max_tensors=16)
    assert len(model.tensors) == 51 and len(paths) == 4
    log = _run_completion(llama_cpp, paths[0])
    assert _info(log, "arch") == "qwen2"


@pytest.mark.parametrize("kind", ["deepseek2-mla", "deepseek2-legacy"])
def test_llama_quantize_quantizes_the_tiny_models_as_planned(tmp_path, tiny_gguf, llama_cpp, kind):
    """The writer's metadata gives llama-quantize the hparams the planner assumes (n_gqa, n_layer, experts)."""
    out = tmp_path / "q.gguf"
    r = subprocess.run([str(llama_cpp.binary("llama-quantize")), str(tiny_gguf(kind)), str(out), "Q3_K_M", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    plan = size_scheme(tiny_model(kind), resolve_scheme("Q3_K_M"))
    actual = {t.name: (type_name(t.type), t.bytes) for t in read_gguf(out).tensors}
    assert {p.name: (p.type, p.bytes) for p in plan.tensors} == actual


def test_sparse_full_scale_file(tmp_path, llama_cpp):
    """DeepSeek-R1 Q4_K_M (MLA layout) as a sparse file: real size, no disk, llama.cpp's own estimate."""
    model = resolve_catalog_model(catalog()["deepseek-r1"], "mla")
    plan = size_scheme(model, resolve_scheme("Q4_K_M"))
    path = write_sparse_gguf(tmp_path / "r1.gguf", model, types=plan)
    h = read_gguf(path)
    st = os.stat(path)
    assert h.tensor_bytes == plan.size_bytes == 404_488_847_360
    assert h.data_complete and st.st_size == h.data_offset + h.shards[0].data_bytes
    assert st.st_blocks * 512 < 64 << 20                    # only the header's blocks are on disk
    assert h.file_type_name == "Q4_K_M" and h.tensor_count == 1086
    assert len(h.metadata["tokenizer.ggml.tokens"]) == 129280
    md = h.metadata
    assert md["deepseek2.expert_count"] == 256 and md["deepseek2.expert_group_count"] == 8
    assert md["deepseek2.rope.scaling.type"] == "yarn" and md["deepseek2.expert_gating_func"] == 2
    r = subprocess.run([str(llama_cpp.binary("llama-fit-params")), "-m", str(path), "-c", "32768", "--fit-print", "on"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    # llama.cpp's estimate (MiB): model on the host, the 32K MLA cache (61 x 576 x 2 x 32768), compute
    assert re.search(r"^Host 82242 2196 438\s*$", r.stdout, re.M), r.stdout


def test_model_from_hparams_ids():
    m = model_from_hparams(tiny_deepseek2_hparams(n_layer=5), "legacy")
    assert m.id == "tiny-deepseek2-legacy" and m.layout == "legacy" and m.hparams.n_layer == 5
    assert sum(1 for t in m.tensors if t.name.endswith("attn_kv_b.weight")) == 5
    with pytest.raises(PlannerError, match="unknown tiny model kind 'gpt2'"):
        tiny_hparams("gpt2")
