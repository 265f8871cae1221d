"""planner.gguf.header: header-only reading, partial files, split models, malformed files."""

from __future__ import annotations

import shutil
import struct
import subprocess

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from planner.errors import PlannerError
from planner.gguf.header import ftype_name, read_gguf, read_header, shard_paths
from planner.gguf.writer import write_gguf
from tiny_models import tiny_model


def _reader_view(path):
    r = gguf.GGUFReader(path)
    return [(t.name, tuple(int(d) for d in t.shape), t.tensor_type, int(t.data_offset), int(t.n_bytes))
            for t in r.tensors], r


@pytest.mark.parametrize("kind", ["deepseek2-mla", "qwen2-tied", "llama"])
def test_same_as_gguf_reader_on_whole_files(tiny_gguf, kind):
    path = tiny_gguf(kind)
    h = read_gguf(path)
    ref, r = _reader_view(path)
    assert [(t.name, t.shape, t.type, t.offset, t.bytes) for t in h.tensors] == ref
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        v = f.contents()
        if isinstance(v, float):
            assert h.metadata[key] == pytest.approx(v)
        else:
            assert h.metadata[key] == v, key
    assert h.version == 3 and h.alignment == 32 and h.data_complete
    assert h.file_type_name == "BF16" and h.architecture == tiny_model(kind).hparams.arch
    assert h.tensor_bytes == sum(x[4] for x in ref)
    assert h.data_offset == min(x[3] for x in ref)


def test_header_only_and_partial_copies(tiny_gguf, tmp_path):
    """Cut right after the tensor infos, at the aligned data start, and inside the data: same tensors, totals."""
    src = tiny_gguf("deepseek2-mla")
    whole = read_gguf(src)
    data = src.read_bytes()
    end = whole.shards[0].header_end
    assert whole.data_offset - 32 < end <= whole.data_offset
    for cut, name in ((end, "header"), (whole.data_offset, "aligned"), (len(data) // 2, "partial")):
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(data[:cut])
        h = read_gguf(p)
        assert [(t.name, t.shape, t.type, t.offset, t.bytes) for t in h.tensors] == \
            [(t.name, t.shape, t.type, t.offset, t.bytes) for t in whole.tensors]
        assert h.tensor_bytes == whole.tensor_bytes and h.metadata == whole.metadata
        assert h.data_offset == whole.data_offset
        assert not h.data_complete and h.file_size == cut
    with pytest.raises(Exception):           # gguf's reader maps the data and cannot read a header-only file
        gguf.GGUFReader(tmp_path / "header.gguf")
    # one byte less and the last tensor info is cut
    p = tmp_path / "short.gguf"
    p.write_bytes(data[:end - 1])
    with pytest.raises(PlannerError, match=r"truncated GGUF header: the tensor info 52 of 52 at byte \d+ needs 8 bytes"):
        read_gguf(p)


def test_split_model_with_llama_gguf_split(tiny_gguf, llama_cpp, tmp_path):
    src = tiny_gguf("deepseek2-legacy")
    whole = read_gguf(src)
    r = subprocess.run([str(llama_cpp.binary("llama-gguf-split")), "--split", "--split-max-tensors", "20", str(src),
                        str(tmp_path / "m")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m-00001-of-00003.gguf", "m-00002-of-00003.gguf", "m-00003-of-00003.gguf"]
    for start in names:                       # any shard's name finds the others
        h = read_gguf(tmp_path / start)
        assert h.split_count == 3 and not h.missing_shards and h.data_complete
        assert [(t.name, t.shape, t.type, t.bytes) for t in h.tensors] == \
            [(t.name, t.shape, t.type, t.bytes) for t in whole.tensors]
        assert [t.shard for t in h.tensors] == [0] * 20 + [1] * 20 + [2] * (whole.tensor_count - 40)
        assert h.architecture == "deepseek2" and h.file_type_name == "BF16"
        assert h.expected_tensor_count == whole.tensor_count
    # the first shard alone
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(tmp_path / names[0], only / names[0])
    h = read_gguf(only / names[0])
    assert h.tensor_count == 20 and not h.data_complete
    assert h.missing_shards == [str(only / names[1]), str(only / names[2])]
    assert h.metadata["deepseek2.block_count"] == 3
    # one shard read alone, without following
    assert read_header(tmp_path / names[1]).tensor_count == 20


def test_shard_paths():
    ps = shard_paths("/x/DeepSeek-R1-Q4_K_M-00002-of-00009.gguf")
    assert [p.name for p in ps] == [f"DeepSeek-R1-Q4_K_M-{i:05d}-of-00009.gguf" for i in range(1, 10)]
    assert shard_paths("/x/model.gguf") is None
    assert shard_paths("/x/m-00000-of-00002.gguf") is None


def test_metadata_summary_and_dict(tiny_gguf):
    h = read_gguf(tiny_gguf("deepseek2-mla"))
    s = h.metadata_summary()
    assert s["tokenizer.ggml.tokens"] == {"type": "array[string]", "length": 384,
                                          "head": ["<unk>", "<s>", "</s>", "<0x00>", "<0x01>", "<0x02>", "<0x03>", "<0x04>"]}
    assert s["tokenizer.ggml.scores"]["length"] == 384
    assert s["deepseek2.attention.layer_norm_rms_epsilon"] == 1e-06      # float32 shown with its own digits
    assert h.metadata["deepseek2.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert len(h.metadata["tokenizer.ggml.tokens"]) == 384                 # the full array is kept
    d = h.to_dict()
    assert d["tensor_count"] == 52 and d["tensor_bytes"] == h.tensor_bytes
    assert d["tensors"][0] == {"name": "token_embd.weight", "shape": [256, 384], "type": "bf16",
                               "bytes": 256 * 384 * 2, "offset": h.data_offset}


def test_ftype_names():
    assert ftype_name(15) == "Q4_K_M" and ftype_name(0) == "F32" and ftype_name(32) == "BF16"
    assert ftype_name(1024 | 12) == "Q3_K_M" and ftype_name(None) is None and ftype_name(999) == "ftype 999"


def test_big_endian_file(tmp_path):
    p = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(p, "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_block_count(2)
    w.add_tensor("a.weight", np.ones((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    h = read_gguf(p)
    assert h.version == 3 and h.metadata["llama.block_count"] == 2
    assert [(t.name, t.shape, t.type, t.bytes) for t in h.tensors] == [("a.weight", (32, 4), T.F32, 512)]


# -- malformed files: one line each ---------------------------------------------------------------

def _header(version=3, n_tensors=0, n_kv=0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _kv_str(key: str, val: str) -> bytes:
    k, v = key.encode(), val.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", 8) + struct.pack("<Q", len(v)) + v


def _ti(name: str, shape, ttype: int, offset: int) -> bytes:
    n = name.encode()
    return struct.pack("<Q", len(n)) + n + struct.pack("<I", len(shape)) + b"".join(
        struct.pack("<Q", d) for d in shape) + struct.pack("<IQ", ttype, offset)


@pytest.mark.parametrize("content,message", [
    (b"", "empty file, not a GGUF file"),
    (b"GG", "not a GGUF file (2 bytes)"),
    (b"PK\x03\x04" + b"\0" * 60, "not a GGUF file (bad magic b'PK\\x03\\x04', expected b'GGUF')"),
    (_header(version=1), "GGUF version 1 is not supported"),
    (_header(version=7), "unsupported GGUF version 7"),
    (b"GGUF\x03\x00\x00\x00\x01", "truncated GGUF header"),
    (_header(n_kv=1) + _kv_str("general.architecture", "llama")[:20], "truncated"),
    (_header(n_kv=1) + struct.pack("<Q", 4) + b"abcd" + struct.pack("<I", 99), "unknown value type 99 for key 'abcd'"),
    (_header(n_kv=1) + struct.pack("<Q", 1 << 60), "string of 1152921504606846976 bytes"),
    (_header(n_tensors=1) + _ti("t.weight", (32, 2), 55, 0), "tensor 't.weight' has unknown ggml type id 55"),
    (_header(n_tensors=1) + _ti("t.weight", (32, 2, 1, 1, 1), 0, 0), "tensor 't.weight' has 5 dimensions"),
    (_header(n_tensors=1) + _ti("t.weight", (100, 2), 12, 0), "rows of 100 elements are not whole q4_K blocks of 256"),
    (_header(n_tensors=1) + _ti("t.weight", (32, 2), 0, 7), "data offset 7 is not a multiple of the alignment 32"),
    (_header(n_tensors=2) + _ti("t.weight", (32,), 0, 0) + _ti("t.weight", (32,), 0, 128), "duplicate tensor 't.weight'"),
    (_header(n_tensors=1 << 40), "cannot fit"),
])
def test_malformed_files(tmp_path, content, message):
    p = tmp_path / "bad.gguf"
    p.write_bytes(content)
    with pytest.raises(PlannerError) as e:
        read_gguf(p)
    text = str(e.value)
    assert message in text and "\n" not in text and text.startswith(str(p))


def test_missing_and_directory(tmp_path):
    with pytest.raises(PlannerError, match="no such file"):
        read_gguf(tmp_path / "nope.gguf")
    with pytest.raises(PlannerError, match="is a directory"):
        read_gguf(tmp_path)


def test_bad_alignment(tmp_path):
    p = tmp_path / "a.gguf"
    p.write_bytes(_header(n_kv=1) + struct.pack("<Q", 17) + b"general.alignment" + struct.pack("<II", 4, 48))
    with pytest.raises(PlannerError, match=r"invalid general.alignment 48 \(a power of two\)"):
        read_gguf(p)


def test_inconsistent_split(tmp_path):
    paths = write_gguf(tmp_path / "m.gguf", tiny_model("qwen2-tied"), split_max_tensors=20)
    paths[1].rename(tmp_path / "x")
    paths[0].rename(paths[1])                  # the first shard under the second one's name
    with pytest.raises(PlannerError, match="split.no/split.count say shard 0 of 2, expected 1 of 2"):
        read_gguf(paths[1])
