"""llama-batched-bench: its argument list and its results, read from the text it prints.

llama-batched-bench (tools/batched-bench/batched-bench.cpp) decodes B sequences together: for each (PP,
TG, B) it clears the cache, prefills B prompts of PP tokens (one batch, split in -b batches and -ub
ubatches: T_PP), then decodes TG steps of B tokens, one per sequence (T_TG). It prints its settings line

    llama_batched_bench: n_kv_max = 2048, n_batch = 2048, n_ubatch = 512, flash_attn = -1, is_pp_shared = 0, ...

and one row per case, as a markdown table (the default) or as JSON lines (--output-format jsonl):

    |    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
    |   128 |     64 |    4 |    768 |   13.813 |    37.07 |   13.787 |    18.57 |   27.601 |    27.83 |

S_TG is B x TG / T_TG: the tokens of all sequences per second; T_TG / TG is one decode step of B tokens.
Every sequence is fed the same token (id 0) at the same positions: their hidden states are identical,
so a mixture of experts routes the whole batch to the same experts.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Sequence

from planner.errors import PlannerError

_SETTINGS = re.compile(r"\bn_kv_max = \d+, n_batch = \d+")          # the settings line (builds add fields to it)
_SETTING = re.compile(r"(\w+) = (-?\d+)")
_NUM = r"\s*(-?[0-9.]+)\s*"
_ROW = re.compile(r"^\|" + r"\|".join([_NUM] * 10) + r"\|\s*$")
_FIELDS = ("pp", "tg", "pl", "n_kv", "t_pp", "speed_pp", "t_tg", "speed_tg", "t", "speed")


@dataclass(frozen=True)
class BatchedCase:
    """One row: `pl` sequences of `pp` prompt and `tg` generated tokens each."""

    pp: int
    tg: int
    pl: int
    n_kv: int
    t_pp: float                # seconds to prefill the pl prompts
    speed_pp: float            # prompt tokens/s (pl x pp / t_pp; pp / t_pp with a shared prompt)
    t_tg: float                # seconds for the tg decode steps
    speed_tg: float            # generated tokens/s of all sequences (pl x tg / t_tg)

    @property
    def step_s(self) -> float:
        """One decode step of pl tokens."""
        return self.t_tg / self.tg if self.tg else 0.0


@dataclass
class BatchedBench:
    settings: dict[str, int] = field(default_factory=dict)   # n_kv_max, n_batch, n_ubatch, flash_attn, ...
    cases: list[BatchedCase] = field(default_factory=list)

    def case(self, pp: int, tg: int, pl: int) -> BatchedCase:
        for c in self.cases:
            if (c.pp, c.tg, c.pl) == (pp, tg, pl):
                return c
        raise KeyError((pp, tg, pl))


def _case(v: dict) -> BatchedCase:
    out = BatchedCase(int(v["pp"]), int(v["tg"]), int(v["pl"]), int(v["n_kv"]), float(v["t_pp"]),
                      float(v["speed_pp"]), float(v["t_tg"]), float(v["speed_tg"]))
    if min(out.pp, out.tg, out.pl, out.n_kv) < 0 or min(out.t_pp, out.t_tg) < 0 or out.pl < 1:
        raise ValueError("a negative count or time")
    return out


def parse_batched_bench(text: str) -> BatchedBench:
    """The settings and the cases of llama-batched-bench's output (markdown rows or JSON lines, with the
    loading log around them). PlannerError when no case is found or a row is malformed."""
    out = BatchedBench()
    for line in text.splitlines():
        s = line.strip()
        if not out.settings and _SETTINGS.search(s):
            out.settings = {k: int(v) for k, v in _SETTING.findall(s[s.index("n_kv_max"):])}
            continue
        try:
            if s.startswith("{") and '"speed_tg"' in s:
                d = json.loads(s)
                if not out.settings:
                    out.settings = {k: int(d[k]) for k in ("n_kv_max", "n_batch", "n_ubatch", "flash_attn",
                                                           "is_pp_shared", "n_gpu_layers", "n_threads") if k in d}
                out.cases.append(_case(d))
                continue
            r = _ROW.match(s)
            if r:
                out.cases.append(_case(dict(zip(_FIELDS, r.groups()))))
        except (ValueError, KeyError, TypeError) as e:
            raise PlannerError(f"llama-batched-bench: malformed result line {s[:120]!r} ({e})") from None
    if not out.cases:
        raise PlannerError("llama-batched-bench printed no result rows")
    return out


def batched_bench_argv(binary: str | os.PathLike, model_file: str | os.PathLike, *, ctx: int, prompts: Sequence[int],
                       gens: Sequence[int], sequences: Sequence[int], threads: int | None = None, batch: int = 2048,
                       ubatch: int = 512, kv_unified: bool = False, flash_attn: str = "auto",
                       jsonl: bool = False) -> list[str]:
    """llama-batched-bench over every (prompt, gen, sequences) combination, CPU only (-ngl 0), prompts not
    shared (each sequence its own, as separate requests)."""
    if not prompts or not gens or not sequences or min(list(prompts) + list(gens) + list(sequences)) < 1:
        raise PlannerError("llama-batched-bench needs prompt, generated and sequence counts of at least 1")
    argv = [os.fspath(binary), "-m", os.path.abspath(os.fspath(model_file)), "-c", str(ctx), "-b", str(batch),
            "-ub", str(ubatch), "-ngl", "0", "-fa", flash_attn,
            "-npp", ",".join(map(str, prompts)), "-ntg", ",".join(map(str, gens)),
            "-npl", ",".join(map(str, sequences)), "--kv-unified" if kv_unified else "--no-kv-unified"]
    if threads is not None:
        argv += ["-t", str(threads), "-tb", str(threads)]
    if jsonl:
        argv += ["--output-format", "jsonl"]
    return argv
