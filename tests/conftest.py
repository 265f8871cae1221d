"""Shared test fixtures.

Tiny GGUF models (tests/tiny_models.py, written by planner.gguf.writer): `tiny_gguf(kind, src=T.BF16)` returns the path of a
random-weight GGUF of one of tiny_models.TINY_KINDS ("deepseek2-mla", "deepseek2-legacy",
"qwen2", "qwen2-tied", "llama"), written once per test session; treat it as read-only (copy it to
modify it). `tiny_model(kind)` (from tiny_models) gives the matching ResolvedModel.

    def test_something(tiny_gguf, llama_cpp):
        src = tiny_gguf("deepseek2-mla")
        quantize = llama_cpp.binary("llama-quantize")

`llama_cpp`: the llama.cpp binaries as dq-planner finds them (planner.engines.llamacpp.locate); the
tests using it are skipped where the binaries are absent, and fail instead when CI is set
(tests/llamacpp_support.require_llama_cpp).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as T

from planner.gguf.writer import write_gguf
from tiny_models import tiny_model

# Plans made without --device must not depend on the GPUs of the machine running the tests.
os.environ.setdefault("DQ_PLANNER_DETECT", "0")

# The suite never reads or writes the user's own folders: what dq-planner caches (the host probes, remote
# headers) and a user's recipes and profiles live in a folder of this test session, set here before any
# test runs so that every child process inherits it, and removed when the session ends. A fresh machine
# and a developer's machine run the same tests.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="dq-planner-tests-"))
for _var, _sub in (("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "config"), ("HF_HOME", "huggingface")):
    os.environ[_var] = str(_SESSION_HOME / _sub)


def pytest_unconfigure(config):
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-gguf")
    made: dict[tuple[str, T], Path] = {}

    def make(kind: str, src: T = T.BF16) -> Path:
        key = (kind, src)
        if key not in made:
            made[key] = write_gguf(folder / f"{kind}-{src.name.lower()}.gguf", tiny_model(kind, src))[0]
        return made[key]

    return make


@pytest.fixture(scope="session")
def llama_cpp():
    from llamacpp_support import require_llama_cpp

    return require_llama_cpp("llama-quantize", "llama-completion", "llama-gguf-split", "llama-fit-params")
