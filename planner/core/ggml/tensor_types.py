"""ggml tensor types: names as llama.cpp prints them and exact row sizes from gguf.GGML_QUANT_SIZES."""

from __future__ import annotations

from functools import lru_cache

from planner.core.ggml.gguf_constants import GGML_QUANT_SIZES, GGMLQuantizationType

from planner.errors import PlannerError, choices

# ggml_type_name() spellings: lower-case, except the K-quants' upper-case K (q4_K, q6_K).
_NAMES: dict[GGMLQuantizationType, str] = {}
for _t in GGMLQuantizationType:
    _n = _t.name.lower()
    if _n.endswith("_k"):
        _n = _n[:-2] + "_K"
    _NAMES[_t] = _n
_BY_NAME = {n.lower(): t for t, n in _NAMES.items()}


def type_name(t: GGMLQuantizationType) -> str:
    """llama.cpp's name of a ggml type (q4_K, f16, iq2_xxs...)."""
    return _NAMES[t]


def parse_type(name: str) -> GGMLQuantizationType:
    """A ggml type from any spelling of its name (q4_k, Q4_K, q4_K)."""
    t = _BY_NAME.get(name.strip().lower())
    if t is None or t not in GGML_QUANT_SIZES:
        raise PlannerError(f"unknown tensor type '{name}'; valid: {choices(_NAMES[x] for x in GGML_QUANT_SIZES)}")
    return t


def block_size(t: GGMLQuantizationType) -> int:
    return GGML_QUANT_SIZES[t][0]


_PLAIN = frozenset((
    GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16, GGMLQuantizationType.F64,
    GGMLQuantizationType.I8, GGMLQuantizationType.I16, GGMLQuantizationType.I32, GGMLQuantizationType.I64,
))


def is_quantized(t: GGMLQuantizationType) -> bool:
    """ggml_is_quantized: every type but the plain float and integer types."""
    return t not in _PLAIN


def row_bytes(t: GGMLQuantizationType, ne0: int) -> int:
    """ggml_row_size: bytes of one row of ne0 elements (ne0 must be a multiple of the block size)."""
    bs, ts = GGML_QUANT_SIZES[t]
    if ne0 % bs:
        raise ValueError(f"row of {ne0} elements is not a whole number of {type_name(t)} blocks ({bs})")
    return ne0 // bs * ts


@lru_cache(maxsize=None)
def tensor_bytes(shape: tuple[int, ...], t: GGMLQuantizationType) -> int:
    """ggml_nbytes for a contiguous tensor: rows x row size."""
    rows = 1
    for d in shape[1:]:
        rows *= d
    return rows * row_bytes(t, shape[0])
