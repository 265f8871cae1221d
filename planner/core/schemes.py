"""Quantization schemes: llama-quantize ftypes and recipes (a base ftype plus --tensor-type rules).

Recipes are TOML files in profiles/schemes/ (shipped) and in the user's config folder
($XDG_CONFIG_HOME/dq-planner/schemes/); a user's recipe with a shipped id replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from planner.core.gguf_constants import LlamaFileType as F

from planner.core.data_files import read_toml
from planner.core.ggml_types import parse_type, type_name
from planner.core.llama_quant import FTYPE_ALIASES, FTYPES, Override
from planner.core.paths import profiles_dir, user_profiles_dir
from planner.errors import PlannerError, choices

import re


@dataclass(frozen=True)
class Scheme:
    id: str
    kind: str                          # "ftype" | "recipe"
    ftype: F
    base: str                          # the llama-quantize ftype name
    rules: tuple[Override, ...] = ()
    architectures: tuple[str, ...] = ()   # empty: any
    name: str = ""
    description: str = ""
    source: str = ""
    path: str = ""
    expect: dict = field(default_factory=dict, compare=False, hash=False)

    def applies_to(self, arch: str) -> bool:
        return not self.architectures or arch in self.architectures

    def tensor_type_args(self) -> list[str]:
        """The rules as llama-quantize --tensor-type values, in order."""
        return [f"{r.pattern}={type_name(r.type)}" for r in self.rules]


def _ftype_scheme(name: str) -> Scheme:
    return Scheme(id=name, kind="ftype", ftype=FTYPES[name], base=name, name=name,
                  source="llama.cpp llama-quantize ftype")


def load_recipe(path: Path) -> Scheme:
    """Parse and validate one recipe file; any problem is a PlannerError naming the file."""
    where = f"recipe {path}"
    data = read_toml(path, "recipe")
    for key in ("id", "base", "rules"):
        if key not in data:
            raise PlannerError(f"{where}: missing '{key}'")
    base = FTYPE_ALIASES.get(str(data["base"]).upper(), str(data["base"]).upper())
    if base not in FTYPES:
        raise PlannerError(f"{where}: unknown base ftype '{data['base']}'; valid: {choices(FTYPES)}")
    rules = data["rules"]
    if not isinstance(rules, list) or not rules:
        raise PlannerError(f"{where}: 'rules' must be a non-empty list of {{pattern, type}}")
    parsed: list[Override] = []
    for i, r in enumerate(rules):
        if not isinstance(r, dict) or "pattern" not in r or "type" not in r:
            raise PlannerError(f"{where}: rule {i + 1} needs 'pattern' and 'type'")
        try:
            re.compile(str(r["pattern"]).lower())
        except re.error as e:
            raise PlannerError(f"{where}: rule {i + 1}: bad pattern {r['pattern']!r} ({e})") from None
        try:
            t = parse_type(str(r["type"]))
        except PlannerError as e:
            raise PlannerError(f"{where}: rule {i + 1}: {e}") from None
        parsed.append(Override(str(r["pattern"]), t))
    archs = data.get("architectures", [])
    if not isinstance(archs, list):
        raise PlannerError(f"{where}: 'architectures' must be a list")
    return Scheme(
        id=str(data["id"]), kind="recipe", ftype=FTYPES[base], base=base, rules=tuple(parsed),
        architectures=tuple(archs), name=data.get("name", data["id"]),
        description=data.get("description", ""), source=data.get("source", ""), path=str(path),
        expect=data.get("expect", {}),
    )


@lru_cache(maxsize=1)
def recipes() -> dict[str, Scheme]:
    out: dict[str, Scheme] = {}
    for folder in (profiles_dir() / "schemes", user_profiles_dir() / "schemes"):
        for p in sorted(folder.glob("*.toml")):
            s = load_recipe(p)
            out[s.id] = s
    return out


def standard_ids() -> list[str]:
    """The interface's llama.cpp schemes, in its order."""
    return list(FTYPES)


def all_ids() -> list[str]:
    return standard_ids() + [r for r in recipes() if r not in FTYPES]


def ids_for(arch: str) -> list[str]:
    """Every standard scheme and every recipe that applies to the architecture, in all_ids() order."""
    return [s for s in all_ids() if resolve_scheme(s).applies_to(arch)]


def resolve_scheme(spec: str) -> Scheme:
    """A scheme id (ftype name or alias, recipe id) or a path to a recipe file."""
    rec = recipes()
    if spec in rec:
        return rec[spec]
    up = FTYPE_ALIASES.get(spec.upper(), spec.upper())
    if up in FTYPES:
        return _ftype_scheme(up)
    for rid, r in rec.items():
        if rid.upper() == spec.upper():
            return r
    p = Path(spec)
    if p.suffix == ".toml" and p.is_file():
        return load_recipe(p)
    raise PlannerError(f"unknown scheme '{spec}'; valid: {', '.join(all_ids())} or a recipe .toml file")
