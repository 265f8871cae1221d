"""Quantization schemes: llama-quantize ftypes and recipes (a base ftype plus --tensor-type rules).

Recipes are TOML files in profiles/schemes/ (shipped) and in the user's config folder
($XDG_CONFIG_HOME/dq-planner/schemes/); a user's recipe with a shipped id replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from planner.core.ggml.gguf_constants import LlamaFileType as F

from planner.core.data_files import load_shipped_and_user, read_toml
from planner.core.ggml.tensor_types import parse_type, type_name
from planner.core.llamacpp.regex_match import compile_pattern
from planner.core.llamacpp.type_rules import FTYPE_ALIASES, FTYPES, Override
from planner.errors import PlannerError, choices, valid_hint

import re
import warnings


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
    # rules of their own for some architectures (a recipe's [architecture_rules]); `rules` for the rest
    arch_rules: dict = field(default_factory=dict, compare=False, hash=False)

    def applies_to(self, arch: str) -> bool:
        return not self.architectures or arch in self.architectures

    def for_arch(self, arch: str) -> "Scheme":
        """The scheme as it applies to a model of `arch`: its own rule list where the recipe has one
        (block numbers differ between layouts), else this scheme."""
        rules = self.arch_rules.get(arch)
        return self if rules is None else replace(self, rules=rules, arch_rules={})

    def tensor_type_args(self) -> list[str]:
        """The rules as llama-quantize --tensor-type values, in order."""
        return [f"{r.pattern}={type_name(r.type)}" for r in self.rules]


def _ftype_scheme(name: str) -> Scheme:
    return Scheme(id=name, kind="ftype", ftype=FTYPES[name], base=name, name=name,
                  source="llama.cpp llama-quantize ftype")


_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]{0,127}")


def load_recipe(path: Path) -> Scheme:
    """Parse and validate one recipe file; any problem is a PlannerError naming the file."""
    where = f"recipe {path}"
    data = read_toml(path, "recipe")
    for key in ("id", "base", "rules"):
        if key not in data:
            raise PlannerError(f"{where}: missing '{key}'")
    if not isinstance(data["id"], str) or not _ID.fullmatch(data["id"]):
        raise PlannerError(f"{where}: 'id' must be letters, digits and _ . + - (it names files and appears in "
                           f"commands), got {ascii(data['id'])}")
    base = FTYPE_ALIASES.get(str(data["base"]).upper(), str(data["base"]).upper())
    if base not in FTYPES:
        raise PlannerError(f"{where}: unknown base ftype '{data['base']}'; valid: {choices(FTYPES)}")
    rules = data["rules"]
    if not isinstance(rules, list) or not rules:
        raise PlannerError(f"{where}: 'rules' must be a non-empty list of {{pattern, type}}")
    by_arch = data.get("architecture_rules", {})
    if not isinstance(by_arch, dict) or not all(isinstance(v, list) and v for v in by_arch.values()):
        raise PlannerError(f"{where}: 'architecture_rules' must map architectures to non-empty lists of "
                           "{pattern, type}")
    # the lines of every rule's pattern, in file order: `rules` first, then each architecture's list
    lines = _rule_lines(path, len(rules) + sum(len(v) for v in by_arch.values()))
    parsed = _parse_rules(where, rules, lines[:len(rules)])
    archs = data.get("architectures", [])
    if not isinstance(archs, list):
        raise PlannerError(f"{where}: 'architectures' must be a list")
    arch_rules, at = {}, len(rules)
    for arch, rs in by_arch.items():
        if arch not in archs:
            raise PlannerError(f"{where}: architecture_rules for '{arch}', which is not in 'architectures'")
        arch_rules[arch] = _parse_rules(f"{where} ({arch})", rs, lines[at:at + len(rs)])
        at += len(rs)
    return Scheme(
        id=str(data["id"]), kind="recipe", ftype=FTYPES[base], base=base, rules=parsed,
        architectures=tuple(archs), name=data.get("name", data["id"]),
        description=data.get("description", ""), source=data.get("source", ""), path=str(path),
        expect=data.get("expect", {}), arch_rules=arch_rules,
    )


def _parse_rules(where: str, rules: list, lines: list[int]) -> tuple[Override, ...]:
    parsed: list[Override] = []
    for i, r in enumerate(rules):
        at = f"{where}, line {lines[i]}" if i < len(lines) and lines[i] else where
        if not isinstance(r, dict) or "pattern" not in r or "type" not in r:
            raise PlannerError(f"{at}: rule {i + 1} needs 'pattern' and 'type'")
        if not isinstance(r["pattern"], str) or not isinstance(r["type"], str):
            raise PlannerError(f"{at}: rule {i + 1}: 'pattern' and 'type' must be strings")
        why = pattern_problem(r["pattern"])
        if why is not None:
            raise PlannerError(f"{at}: rule {i + 1}: bad pattern {r['pattern']!r} {why}")
        try:
            t = parse_type(r["type"])
        except PlannerError as e:
            raise PlannerError(f"{at}: rule {i + 1}: {e}") from None
        parsed.append(Override(r["pattern"], t))
    return tuple(parsed)


# --- recipe patterns, as llama-quantize takes them ------------------------------------------------
# tools/quantize/quantize.cpp parse_tensor_type(): the argument PATTERN=TYPE is split at its first
# '=', the pattern must not be empty and is lower-cased (ASCII tolower); parse_tensor_type_file()
# reads whitespace-separated tokens. src/llama-quant.cpp compiles each pattern as a std::regex
# (ECMAScript grammar) and takes the first that regex_search()es the tensor name. The planner matches
# with Python's re, so a pattern is accepted only within the part of the syntax where both agree.

_ECMA_ESCAPES = set("bBdDsSwWfnrtv")      # class and control escapes both grammars read alike
_LOOK = ("(?:", "(?=", "(?!")             # the only (? groups ECMAScript has (no lookbehind, names, flags)


def pattern_problem(pattern: str) -> str | None:
    """Why llama-quantize (or the planner's same reading of it) cannot take `pattern` as a
    --tensor-type pattern, or None when it can."""
    if pattern == "":
        return "is empty (llama-quantize: missing tensor name)"
    if "=" in pattern:
        return "contains '=', where llama-quantize ends the tensor name"
    if not pattern.isascii() or not pattern.isprintable():
        return "must be printable ASCII (llama.cpp lower-cases and matches bytes)"
    if any(c.isspace() for c in pattern):
        return "contains whitespace, which llama-quantize's --tensor-type-file splits on"
    p = pattern.lower()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)    # "possible nested set": refused below
            re.compile(p)
    except re.error as e:
        return f"is not a valid regular expression ({e})"
    i, in_class = 0, False
    while i < len(p):
        c = p[i]
        if c == "\\":
            if i + 1 >= len(p):
                return "ends with a lone backslash"
            n = p[i + 1]
            if n.isalpha() and n not in _ECMA_ESCAPES and n not in "xu":
                return (f"uses the escape \\{n}, which llama.cpp's std::regex (ECMAScript) does not read as "
                        "Python does")
            if n == "0" or (n.isdigit() and in_class):
                return f"uses the escape \\{n}, which the two regular expression grammars read differently"
            i += 2
            continue
        if in_class:
            if c == "[" and i + 1 < len(p) and p[i + 1] in ":=.":
                return "uses a POSIX class ([:name:]), which only llama.cpp's std::regex knows"
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            j = i + 1 + (p[i + 1:i + 2] == "^")
            if p[j:j + 1] == "]":
                return "starts a class with ']', an empty class for llama.cpp's std::regex"
            i = j
            continue
        elif c == "(" and p[i + 1:i + 2] == "?" and not p.startswith(_LOOK, i):
            return (f"uses the group {p[i:i + 3]!r}, which llama.cpp's std::regex (ECMAScript) has not "
                    "(only (?: (?= (?!)")
        elif c in "{}":
            m = re.match(r"\{\d+(,\d*)?\}", p[i:])
            if c == "}" or m is None or i == 0:
                return "uses a brace that is not a {n}, {n,} or {n,m} repeat"
            i += m.end()
            if p[i:i + 1] == "+":
                return "uses a possessive repeat, which llama.cpp's std::regex has not"
            continue
        elif c in "*+?" and p[i + 1:i + 2] == "+":
            return "uses a possessive repeat, which llama.cpp's std::regex has not"
        i += 1
    try:
        compile_pattern(p)
    except ValueError as e:
        return f"uses {e}" if str(e).startswith("a ") else f"cannot be matched in bounded time ({e})"
    return None


def _rule_lines(path: Path, n: int) -> list[int]:
    """The line of each rule's `pattern` key in the file, in order (0 where it cannot be told)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return [0] * n
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0] if "'" not in line and '"' not in line else line
        out += [no] * len(re.findall(r"(?:^|[{,\s])pattern\s*=", code))
    return out[:n] if len(out) >= n else [0] * n


@lru_cache(maxsize=1)
def _recipes() -> tuple[dict[str, Scheme], dict[str, PlannerError]]:
    return load_shipped_and_user("schemes", load_recipe, lambda s: s.id)


def recipes() -> dict[str, Scheme]:
    """Every recipe by id: the shipped ones and the user's (a broken user file is skipped, with a warning)."""
    return _recipes()[0]


recipes.cache_clear = _recipes.cache_clear  # type: ignore[attr-defined]


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
    if p.suffix == ".toml" and (p.exists() or p.is_symlink()):
        return load_recipe(p)
    broken = _recipes()[1]
    if spec in broken:                   # the user's broken recipe file, asked for by its name
        raise broken[spec]
    raise PlannerError(f"unknown scheme '{spec}'; {valid_hint(spec, all_ids())} (or a recipe .toml file)")
