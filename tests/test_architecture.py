"""The structure the project relies on: the core is the bottom layer, engines are found through the
registry, and nothing branches on an engine's name."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "planner" / "core"
# what the core may never import, not even inside a function
FORBIDDEN = ("planner.hardware", "planner.engines", "planner.tui", "planner.render", "planner.commands",
             "planner.cli", "planner.gguf", "planner.make_plan", "planner.options", "planner.workbench",
             "planner.model_files", "planner.remote", "planner.events",
             "textual", "textual_plotext", "plotext", "pynvml", "psutil")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            out.append((node.lineno, str(node.args[0].value)))
    return out


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_core_imports_nothing_above_it():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {name}"
           for p in sorted(CORE.rglob("*.py")) for line, name in _imports(p) if _forbidden(name)]
    assert bad == []


# The core's layers and what each may import at run time (`if TYPE_CHECKING:` imports are annotations
# only). Each sub-package's docstring says the same.
LAYERS = {
    "ggml": {"planner.core.ggml"},
    "base": {"planner.core.paths", "planner.core.data_files", "planner.core.catalog", "planner.core.plan",
             "planner.core.request_bounds", "planner.core.engine", "planner.core.devices.host_kernels"},
    "devices": {"planner.core.devices"},
    "llamacpp": {"planner.core.llamacpp"},
    "serving": {"planner.core.serving"},
    "accuracy": {"planner.core.accuracy"},
    "top": {"planner.core.build_plan"},
}
MAY_IMPORT = {
    "ggml": {"ggml"},
    "base": {"base"},
    "devices": {"base", "ggml", "devices"},
    "llamacpp": {"base", "ggml", "devices", "llamacpp"},
    "serving": {"base", "ggml", "devices", "serving"},
    "accuracy": {"base", "accuracy"},
    "top": set(LAYERS),
}
# single modules a layer may import besides: the speed model's shared parts (Processor, Link, Factors, Speed)
MAY_ALSO_IMPORT = {"serving": {"planner.core.llamacpp.speed"}}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _layer(module: str) -> str | None:
    """The layer of a module (or of a name imported from it): the one with the longest matching prefix."""
    best = None
    for layer, prefixes in LAYERS.items():
        for pre in prefixes:
            if (module == pre or module.startswith(pre + ".")) and (best is None or len(pre) > best[1]):
                best = (layer, len(pre))
    return None if best is None else best[0]


def _runtime_imports(path: Path) -> list[tuple[int, str]]:
    """_imports, less those under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            typing_only |= {n.lineno for b in node.body for n in ast.walk(b) if hasattr(n, "lineno")}
    return [(line, name) for line, name in _imports(path) if line not in typing_only]


def test_core_imports_point_down():
    bad = []
    for p in sorted(CORE.rglob("*.py")):
        if p == CORE / "__init__.py":
            continue
        me = _layer(_module(p))
        assert me is not None, f"{p.relative_to(ROOT)} belongs to no layer of LAYERS"
        for line, name in _runtime_imports(p):
            if not name.startswith("planner.core."):
                continue
            them = _layer(name)
            also = MAY_ALSO_IMPORT.get(me, set())
            if them is not None and them not in MAY_IMPORT[me] and not any(
                    name == m or name.startswith(m + ".") for m in also):
                bad.append(f"{p.relative_to(ROOT)}:{line} ({me}) imports {name} ({them})")
    assert bad == []


def test_core_is_packages_by_concern():
    """At most 8 modules at the top of planner/core; every sub-package says what it holds and may import."""
    top = sorted(p.name for p in CORE.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 8, top
    for pkg in sorted(d for d in CORE.iterdir() if d.is_dir() and d.name != "__pycache__"):
        doc = ast.get_docstring(ast.parse((pkg / "__init__.py").read_text())) or ""
        assert "import" in doc, f"{pkg.relative_to(ROOT)}/__init__.py: the docstring says what it may import"


def test_the_layer_check_catches_an_upward_import(tmp_path):
    assert (_layer("planner.core.devices.host_kernels"), _layer("planner.core.devices.hardware")) == ("base", "devices")
    assert "llamacpp" not in MAY_IMPORT[_layer("planner.core.accuracy.recommend")]
    p = tmp_path / "m.py"
    p.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from planner.core.build_plan import x\n"
                 "from planner.core.llamacpp.memory import Slot\n")
    assert [n for _, n in _runtime_imports(p)] == ["typing", "typing.TYPE_CHECKING", "planner.core.llamacpp.memory",
                                                   "planner.core.llamacpp.memory.Slot"]


# The packages and modules of planner/, lowest first: each imports only from ranks below its own (and
# from itself); e.g. the commands never import the command line (planner.cli), the hardware layer and
# the flag declarations (options) no engine, the engines no renderer.
RANKS = [
    {"errors", "units", "terminal", "events", "engine_ids", "safe_text"},
    {"arg_parser", "core"},
    {"remote", "model_files", "hardware", "options"},
    {"gguf"},
    {"engines"},
    {"render", "make_plan"},
    {"workbench", "commands"},
    {"tui"},
    {"cli"},
]


def test_planner_imports_point_down():
    rank = {name: i for i, names in enumerate(RANKS) for name in names}
    bad = []
    for p in sorted((ROOT / "planner").rglob("*.py")):
        parts = p.relative_to(ROOT / "planner").with_suffix("").parts
        if parts == ("__init__",):
            continue
        me = parts[0]
        assert me in rank, f"planner/{me} is in no rank of RANKS"
        for line, name in _imports(p):
            them = name.split(".")[1] if name.startswith("planner.") else None
            if them and them != me and them in rank and rank[them] >= rank[me]:
                bad.append(f"{p.relative_to(ROOT)}:{line} imports {name}")
    assert bad == []


def test_the_ast_check_sees_imports_inside_functions(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from planner.hardware.detect import detect\n    import textual.app\n")
    assert [n for _, n in _imports(p) if _forbidden(n)] == ["planner.hardware.detect", "planner.hardware.detect.detect",
                                                            "textual.app"]


def test_importing_and_running_the_core_loads_nothing_above_it():
    """Every core module imported and a whole plan built with the core alone (an engine object is handed in
    as the caller would): no module above the core ends up in sys.modules."""
    code = f"""
import importlib, pkgutil, sys
import planner.core as core
for m in pkgutil.walk_packages(core.__path__, 'planner.core.'):
    importlib.import_module(m.name)
from planner.core.catalog import resolve_model
from planner.core.engine import ModelInput
from planner.core.llamacpp.plan_schemes import plan_gguf
from planner.core.plan import PlanRequest
from planner.core.build_plan import build_plan

class GgufEngine:
    name = label = 'gguf'
    accepts_model_file = True
    quantizes = True
    def plan(self, req, model, hw, shared=None):
        return plan_gguf(req, model, hw, shared)

plan = build_plan(PlanRequest(device='h100', schemes=['DQ3_K_M']), GgufEngine(),
                  ModelInput(entry=resolve_model('deepseek-r1')))
assert plan.recommendation.scheme == 'DQ3_K_M', plan.recommendation
bad = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r}))
print(bad)
sys.exit(1 if bad else 0)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


ENGINE_LITERAL = r"""["'](?:llama\.cpp|vllm|sglang)["']"""
# a comparison or membership test with an engine id literal on either side
BRANCH = re.compile(rf"""(?:(?:==|!=|\bin\b|\bis\b)\s*(?:\(|\[|\{{)?\s*{ENGINE_LITERAL}|{ENGINE_LITERAL}\s*(?:==|!=|\bin\b))""")


def test_nothing_branches_on_an_engine_name():
    hits = []
    for p in sorted((ROOT / "planner").rglob("*.py")):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if BRANCH.search(line.split("#")[0]):
                hits.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert hits == []


@pytest.mark.parametrize("line", ['if req.engine == "llama.cpp":', "if e != 'vllm'", 'x = e in ("vllm", "sglang")',
                                  'if "sglang" == name:'])
def test_the_engine_name_check_catches_branches(line):
    assert BRANCH.search(line)


def test_every_registered_engine_implements_the_interface():
    from planner.core.catalog import resolve_model
    from planner.engines.registry import engine, engine_names

    import inspect

    from dataclasses import fields

    from planner.core.engine import Engine
    from planner.core.plan import PlanRequest

    def params(f) -> list[str]:
        return [p for p in inspect.signature(f).parameters if p != "self"]

    entry = resolve_model("deepseek-r1")
    for name in engine_names():
        e = engine(name)
        for method in ("scheme_ids", "plan", "launch", "parse_command"):     # as declared, parameter for parameter
            assert params(getattr(e, method)) == params(getattr(Engine, method)), (name, method)
        assert e.name == name and e.label
        # the plan options only some engines read: request fields, each
        assert e.own_options and e.own_options <= {f.name for f in fields(PlanRequest)}, name
        ids = e.scheme_ids(entry)
        assert ids and len(ids) == len(set(ids))
        for attr in ("plan", "launch"):
            assert callable(getattr(e, attr))
    assert engine("llama.cpp").accepts_model_file and not engine("vllm").accepts_model_file
    assert "DQ3_K_M" in engine("llama.cpp").scheme_ids(entry) and "FP8" in engine("vllm").scheme_ids(entry)


def test_test_models_are_not_shipped():
    """The tiny random-weight models are test data (tests/tiny_models.py), not part of the package."""
    shipped = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "planner").rglob("*.py"))
               for i, line in enumerate(p.read_text().splitlines(), 1)
               if re.match(r"\s*(def|class)\s+tiny_|\s*TINY_KINDS\s*=", line)]
    assert shipped == []


def test_the_core_reads_no_model_the_user_names():
    """A user's Hugging Face folder is read above the core (planner.model_files); the core gets the entry."""
    import tempfile

    from planner.core import catalog as cat
    from planner.errors import PlannerError
    from planner.model_files import resolve_model

    users = [p for p in CORE.rglob("*.py") if p.name != "data_files.py" and "read_json_object" in p.read_text()]
    assert users == []
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "config.json").write_text(json.dumps(cat.catalog()["deepseek-r1-distill-qwen-1.5b"].config))
        assert resolve_model(d).hparams == cat.catalog()["deepseek-r1-distill-qwen-1.5b"].hparams
        with pytest.raises(PlannerError):
            cat.resolve_model(d)
