"""The gguf package's constants (GGMLQuantizationType, GGML_QUANT_SIZES, LlamaFileType, Keys), fast.

`import gguf` runs the package's __init__, which also loads its reader, writer, vocabulary and metadata
modules (numpy, yaml, ...): a quarter of a second that the headless planner does not need. gguf/constants.py
itself imports only the standard library, so it is loaded here on its own and registered under its real
name, "gguf.constants": a later `import gguf` (the GGUF reader and writer do that) finds it in sys.modules
and reuses it, so every part of the program sees the very same enum classes.
"""

from __future__ import annotations

import importlib.util
import sys
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
GGMLQuantizationType = _c.GGMLQuantizationType
GGML_QUANT_SIZES = _c.GGML_QUANT_SIZES
LlamaFileType = _c.LlamaFileType
Keys = _c.Keys
