"""Pasted launch commands (--from-command) as argv lists, and the flag reading the engines share.

The text is one command, or several (one per line, a backslash at a line's end continuing it), such as
`--print-commands` prints them or an exported script holds them: comment lines, blank lines and the
scripts' shell lines (set, until ... done, wait, sleep, echo) and the dq-planner preparation steps
(quantize) are skipped; a leading VAR=value assignment and a trailing `&` are dropped.

FlagTable reads an engine's command line as Python's argparse does for vLLM and SGLang (both parse
their flags with it): `--flag value` or `--flag=value`, and a long flag given by any unambiguous
prefix of one the engine defines (`--tp 16` is SGLang's --tp-size). Each flag the engine defines is
either planned (its value goes to the request), neutral (memory unchanged: accepted and listed in a
note) or refused in one line (it changes memory in a way the plan does not model); a flag the engine
does not define is refused as the engine would refuse it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from planner.errors import PlannerError
from planner.safe_text import printable

# shell lines of printed or exported launch scripts that start no server
_SHELL_WORDS = {"set", "until", "while", "do", "done", "wait", "sleep", "echo", "if", "then", "fi", "for",
                "export", "cd", "true", ":", "dq-planner"}
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")

PREFIX = "--from-command"


def split_commands(text: str) -> list[list[str]]:
    """The commands of a pasted text, each as words (see the module docstring)."""
    joined = re.sub(r"\\\r?\n", " ", text)
    out = []
    for line in joined.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:
            raise PlannerError(f"{PREFIX}: cannot split the command line: {e}") from None
        while words and _ASSIGN.match(words[0]):
            words = words[1:]
        if words and words[-1] == "&":
            words = words[:-1]
        if not words or words[0].replace("\\", "/").rsplit("/", 1)[-1] in _SHELL_WORDS \
                or words[0].startswith("#!"):
            continue
        out.append(words)
    if not out:
        raise PlannerError(f"{PREFIX}: the command line is empty")
    return out


def program_name(word: str) -> str:
    return word.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".exe")


def python_module(words: list[str]) -> tuple[str | None, int]:
    """`python3 -m MODULE ...`: (MODULE, index of its first argument); (None, 0) for anything else."""
    if words and re.fullmatch(r"python(3(\.\d+)?)?", program_name(words[0])) and len(words) > 2 \
            and words[1] == "-m":
        return words[2], 3
    return None, 0


@dataclass(frozen=True)
class Flag:
    """One flag an engine defines: how many values it takes (0, 1, "?" optional, "+" one or more) and what
    the plan does with it: `dest` (planned), `refused` (why it is not modelled) or neither (neutral)."""

    names: tuple[str, ...]
    arity: int | str = 1
    dest: str | None = None
    refused: str | None = None


@dataclass
class FlagTable:
    engine: str                         # for messages: "vllm serve", "sglang.launch_server"
    flags: list[Flag]
    by_name: dict[str, Flag] = field(init=False)

    def __post_init__(self):
        self.by_name = {n: f for f in self.flags for n in f.names}

    def resolve(self, word: str) -> tuple[Flag, str, str | None]:
        """(the flag, the name as written, the value after '=' or None), argparse's way."""
        name, eq, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        f = self.by_name.get(name)
        if f is None and name.startswith("--"):
            hits = {self.by_name[n] for n in self.by_name if n.startswith(name) and n.startswith("--")}
            if len(hits) > 1:
                raise PlannerError(f"{PREFIX}: {printable(name)} is ambiguous for {self.engine} (it could be "
                                   f"{', '.join(sorted(h.names[0] for h in hits))})")
            f = next(iter(hits), None)
        if f is None:
            raise PlannerError(f"{PREFIX}: {printable(name)} is not a {self.engine} flag the planner knows")
        return f, name, (inline if eq else None)

    def read(self, words: list[str], start: int) -> tuple[dict[str, str | bool], list[str], list[str]]:
        """The planned values by dest, the neutral flags met, and the positional words."""
        planned: dict[str, str | bool] = {}
        neutral: list[str] = []
        positional: list[str] = []
        i = start
        while i < len(words):
            w = words[i]
            i += 1
            if not w.startswith("-") or w == "-" or re.fullmatch(r"-[0-9.]+", w):
                positional.append(w)
                continue
            f, name, inline = self.resolve(w)
            if f.refused:
                raise PlannerError(f"{PREFIX}: {self.engine} {printable(name)} ({f.refused}) changes memory "
                                   "and is not modelled")
            values: list[str] = []
            if inline is not None:
                if f.arity == 0:
                    raise PlannerError(f"{PREFIX}: {self.engine} {printable(name)} takes no value")
                values = [inline]
            elif f.arity == 1:
                if i >= len(words):
                    raise PlannerError(f"{PREFIX}: {self.engine} {printable(name)} needs a value")
                values = [words[i]]
                i += 1
            elif f.arity in ("?", "+"):
                while i < len(words) and not words[i].startswith("-"):
                    values.append(words[i])
                    i += 1
                    if f.arity == "?":
                        break
                if f.arity == "+" and not values:
                    raise PlannerError(f"{PREFIX}: {self.engine} {printable(name)} needs a value")
            if f.dest is None:
                neutral.append(f.names[0])
            else:
                planned[f.dest] = values[0] if values else True
        return planned, neutral, positional


def integer(flag: str, v: str | bool, low: int = 1, high: int = 1 << 31) -> int:
    """An integer flag value as argparse's int() reads it (bounded)."""
    try:
        n = int(str(v).strip())
    except ValueError:
        raise PlannerError(f"{PREFIX}: {flag} must be an integer, got {printable(str(v))!r}") from None
    if not low <= n <= high:
        raise PlannerError(f"{PREFIX}: {flag} must be between {low} and {high}, got {n}")
    return n


def fraction(flag: str, v: str | bool) -> float:
    try:
        x = float(str(v).strip())
    except ValueError:
        raise PlannerError(f"{PREFIX}: {flag} must be a number, got {printable(str(v))!r}") from None
    if not 0.0 < x < 1.0:
        raise PlannerError(f"{PREFIX}: {flag} must be between 0 and 1, got {printable(str(v))}")
    return x
