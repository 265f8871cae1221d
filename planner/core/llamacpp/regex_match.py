"""Tensor-name patterns (recipe rules, -ot) matched in bounded time.

Python's re backtracks: `(.|.)*z` against a 40-character tensor name takes 2^40 steps, so one rule in a
user's recipe would hang every plan. `compile_pattern(p)` parses the pattern with Python's own parser
(so what it accepts and means is exactly re's, which schemes.pattern_problem keeps within what
llama.cpp's std::regex reads the same) and matches it by simulating the automaton (Thompson's
construction, all states at once): time linear in the name for a given pattern, whatever the pattern.
Lookaheads ((?= (?!) are evaluated as anchored sub-automata at each position (quadratic at worst);
back-references (\\1), which no automaton can match, and lookbehinds (which std::regex lacks) are
refused (ValueError). The result is only whether the pattern occurs in the name (regex_search), which
does not depend on greedy or lazy repeats.
"""

from __future__ import annotations

import re
from functools import lru_cache

try:                                    # Python 3.11+
    from re import _constants as C, _parser as P      # type: ignore[attr-defined]
except ImportError:                     # pragma: no cover
    import sre_constants as C          # type: ignore[no-redef]
    import sre_parse as P              # type: ignore[no-redef]

MAX_STATES = 20000                      # a {1000}{1000} repeat would expand past this: refused


def _word(c: str) -> bool:
    return c.isalnum() or c == "_"


_CATEGORIES = {
    C.CATEGORY_DIGIT: lambda c: c.isdigit(),
    C.CATEGORY_NOT_DIGIT: lambda c: not c.isdigit(),
    C.CATEGORY_SPACE: lambda c: c.isspace(),
    C.CATEGORY_NOT_SPACE: lambda c: not c.isspace(),
    C.CATEGORY_WORD: _word,
    C.CATEGORY_NOT_WORD: lambda c: not _word(c),
}


def _class(items) -> callable:
    negate = False
    tests = []
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            tests.append(lambda c, x=chr(av): c == x)
        elif op is C.RANGE:
            tests.append(lambda c, lo=av[0], hi=av[1]: lo <= ord(c) <= hi)
        elif op is C.CATEGORY and av in _CATEGORIES:
            tests.append(_CATEGORIES[av])
        else:
            raise ValueError(f"unsupported class item {op}")
    return lambda c: any(t(c) for t in tests) != negate


class _Program:
    """Instructions: ("char", test) ("split", a, b) ("jmp", a) ("at", kind) ("look", program, negate)
    ("match",)."""

    def __init__(self) -> None:
        self.ops: list[list] = []

    def emit(self, *op) -> int:
        if len(self.ops) >= MAX_STATES:
            raise ValueError(f"the pattern expands to more than {MAX_STATES} states")
        self.ops.append(list(op))
        return len(self.ops) - 1


def _compile(items, prog: _Program) -> None:
    for op, av in items:
        if op is C.LITERAL:
            prog.emit("char", lambda c, x=chr(av): c == x)
        elif op is C.NOT_LITERAL:
            prog.emit("char", lambda c, x=chr(av): c != x)
        elif op is C.ANY:
            prog.emit("char", lambda c: c != "\n")
        elif op is C.IN:
            prog.emit("char", _class(av))
        elif op is C.SUBPATTERN:
            _compile(av[-1], prog)
        elif op is C.BRANCH:
            ends = []
            alts = av[1]
            for k, alt in enumerate(alts):
                if k < len(alts) - 1:
                    split = prog.emit("split", len(prog.ops) + 1, None)
                    _compile(alt, prog)
                    ends.append(prog.emit("jmp", None))
                    prog.ops[split][2] = len(prog.ops)
                else:
                    _compile(alt, prog)
            for e in ends:
                prog.ops[e][1] = len(prog.ops)
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT) or op is getattr(C, "POSSESSIVE_REPEAT", None):
            lo, hi, body = av
            for _ in range(lo):
                _compile(body, prog)
            if hi == C.MAXREPEAT:
                loop = prog.emit("split", len(prog.ops) + 1, None)
                _compile(body, prog)
                prog.emit("jmp", loop)
                prog.ops[loop][2] = len(prog.ops)
            else:
                splits = []
                for _ in range(hi - lo):
                    splits.append(prog.emit("split", len(prog.ops) + 1, None))
                    _compile(body, prog)
                for s in splits:
                    prog.ops[s][2] = len(prog.ops)
        elif op is C.AT:
            prog.emit("at", av)
        elif op in (C.ASSERT, C.ASSERT_NOT):
            direction, sub = av
            if direction != 1:
                raise ValueError("a lookbehind")
            inner = _Program()
            _compile(sub, inner)
            inner.emit("match")
            prog.emit("look", inner, op is C.ASSERT_NOT)
        elif op in (C.GROUPREF, C.GROUPREF_EXISTS):
            raise ValueError("a back-reference, which cannot be matched in bounded time")
        else:
            raise ValueError(f"unsupported syntax ({op})")


def _at(kind, s: str, i: int) -> bool:
    if kind in (C.AT_BEGINNING, C.AT_BEGINNING_STRING):
        return i == 0
    if kind in (C.AT_END, C.AT_END_STRING):
        return i == len(s) or (kind is C.AT_END and i == len(s) - 1 and s[-1] == "\n")
    before = i > 0 and _word(s[i - 1])
    after = i < len(s) and _word(s[i])
    if kind is C.AT_BOUNDARY:
        return before != after
    if kind is C.AT_NON_BOUNDARY:
        return before == after
    raise ValueError(f"unsupported anchor {kind}")


def _run(prog: _Program, s: str, start: int, anchored: bool, memo: dict) -> bool:
    """Whether prog matches s at some position (anchored: at `start` only), all states at once."""
    ops = prog.ops

    def closure(states: list[int], pc: int, i: int, seen: set[int]) -> bool:
        stack = [pc]
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            op = ops[pc]
            kind = op[0]
            if kind == "match":
                return True
            if kind == "char":
                states.append(pc)
            elif kind == "jmp":
                stack.append(op[1])
            elif kind == "split":
                stack.append(op[2])
                stack.append(op[1])
            elif kind == "at":
                if _at(op[1], s, i):
                    stack.append(pc + 1)
            elif kind == "look":
                key = (id(op[1]), i)
                if key not in memo:
                    memo[key] = _run(op[1], s, i, True, memo)
                if memo[key] != op[2]:
                    stack.append(pc + 1)
        return False

    current: list[int] = []
    seen: set[int] = set()
    if closure(current, 0, start, seen):
        return True
    for i in range(start, len(s)):
        c = s[i]
        nxt: list[int] = []
        seen = set()
        for pc in current:
            if ops[pc][1](c) and closure(nxt, pc + 1, i + 1, seen):
                return True
        if not anchored and closure(nxt, 0, i + 1, seen):
            return True
        current = nxt
        if not current and anchored:
            return False
    return False


def _repeats(items, inside: bool = False) -> tuple[int, bool]:
    """(how many repeats of more than one item the pattern holds, whether any repeat holds another
    repeat or an alternation): a backtracking matcher is polynomial of that degree without the second."""
    n, nested = 0, False
    for op, av in items:
        subs: list = []
        if op in (C.MAX_REPEAT, C.MIN_REPEAT) or op is getattr(C, "POSSESSIVE_REPEAT", None):
            if av[1] > 1:
                n += 1
                nested |= inside
                k, nest = _repeats(av[2], True)
                n, nested = n + k, nested or nest or k > 0 or any(o is C.BRANCH for o, _ in av[2])
                continue
            subs = [av[2]]
        elif op is C.SUBPATTERN:
            subs = [av[-1]]
        elif op is C.BRANCH:
            nested |= inside
            subs = list(av[1])
        elif op in (C.ASSERT, C.ASSERT_NOT):
            subs = [av[1]]
        for sub in subs:
            k, nest = _repeats(sub, inside)
            n, nested = n + k, nested or nest
    return n, nested


class Pattern:
    """A compiled pattern: .search(name) is truthy when the pattern occurs in the name. Patterns of at
    most two repeats, none inside another or around an alternation (what recipes hold), go to Python's
    re (polynomial of degree two at worst on a name, and fast); any other is simulated here."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        try:
            tree = P.parse(pattern, 0)
        except re.error as e:
            raise ValueError(str(e)) from None
        items = tree.data if hasattr(tree, "data") else tree
        self._prog = _Program()
        _compile(items, self._prog)             # also refuses what cannot be matched in bounded time
        self._prog.emit("match")
        n, nested = _repeats(items)
        self._re = re.compile(pattern) if n <= 2 and not nested else None

        self._memo: dict[str, bool] = {}

    def search(self, name: str) -> bool:
        # every plan asks the same tensor names (blk.N.*) again, for each scheme and model
        if self._re is not None:
            return self._re.search(name) is not None
        hit = self._memo.get(name)
        if hit is None:
            if len(self._memo) > 1 << 16:
                self._memo.clear()
            hit = self._memo[name] = _run(self._prog, name, 0, False, {})
        return hit


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> Pattern:
    """The pattern compiled (cached); ValueError when it cannot be matched in bounded time."""
    return Pattern(pattern)
