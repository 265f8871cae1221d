"""Check the planner's type rules against the installed llama-quantize, tensor by tensor.

    python -m planner.engines.llamacpp.crosscheck [--model ID ...] [--layout mla|legacy] [--scheme S ...]
                                                  [--imatrix] [--jobs N] [--llama-cpp DIR]

For each catalog model (default: all, deepseek2 in both layouts) a sparse GGUF with the model's real
header is written to a temporary folder (no tensor data, no disk used), `llama-quantize --dry-run` is run
for every scheme, and each tensor's type and printed size is compared with the plan. Prints one line
per model and layout with the tensors compared and every difference; exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from planner.core.llamacpp.schemes import ids_for, resolve_scheme
from planner.core.llamacpp.sizing import ResolvedModel, size_scheme
from planner.core.llamacpp.type_rules import QuantizeRefused
from planner.core.plan import SchemePlan
from planner.engines.llamacpp.argv import child_env, quantize_argv
from planner.engines.llamacpp.locate import LlamaCpp
from planner.engines.llamacpp.logs import MIB, QuantizeLog, parse_quantize, quantize_error
from planner.engines.llamacpp.quantize import Mismatch, compare_log
from planner.engines.llamacpp.process import run_captured


@dataclass
class SchemeCheck:
    scheme: str
    tensors: int
    returncode: int
    plan: SchemePlan
    log: QuantizeLog
    mismatches: list[Mismatch] = field(default_factory=list)
    error: str = ""
    refused: str = ""                  # the planner's QuantizeRefused: llama-quantize must stop with it

    @property
    def ok(self) -> bool:
        if self.refused:
            return self.returncode != 0 and self.refused in self.error
        return (self.returncode == 0 and not self.mismatches and len(self.log.tensors) == self.tensors
                and self.log.quant_mib is not None
                and f"{self.plan.size_bytes / MIB:.2f}" == f"{self.log.quant_mib:.2f}")


def schemes_for(arch: str) -> list[str]:
    """Every standard scheme and every recipe that applies to the architecture."""
    return ids_for(arch)


def dry_run_compare(lc: LlamaCpp, model: ResolvedModel, path: str | os.PathLike, scheme_ids: list[str],
                    imatrix: str | os.PathLike | None = None, jobs: int = 2) -> list[SchemeCheck]:
    """llama-quantize --dry-run of `path` (the model's GGUF, sparse is enough) for each scheme, against the
    plan made with (imatrix given) or without an importance matrix."""
    q = lc.binary("llama-quantize")
    env = child_env()

    def one(sid: str) -> SchemeCheck:
        s = resolve_scheme(sid).for_arch(model.hparams.arch)
        refused = ""
        try:
            plan = size_scheme(model, s, imatrix=imatrix is not None)
        except QuantizeRefused as e:
            refused = e.llama_error
            plan = SchemePlan(id=sid, kind=s.kind, size_bytes=0, params=0, type_bytes={}, tensors=[])
        r = run_captured(quantize_argv(q, path, None, s, dry_run=True, imatrix=imatrix), timeout=600, env=env)
        lines = (r.stdout + r.stderr).splitlines()
        log = parse_quantize(lines)
        err = quantize_error(lines) if r.returncode else ""
        if refused:
            return SchemeCheck(sid, 0, r.returncode, plan, log, [], err, refused)
        return SchemeCheck(sid, len(plan.tensors), r.returncode, plan, log, compare_log(plan, log), err)

    with ThreadPoolExecutor(max(1, jobs)) as ex:
        return list(ex.map(one, scheme_ids))


def main(argv: list[str] | None = None) -> int:
    from planner.core.catalog import catalog
    from planner.core.llamacpp.sizing import resolve_catalog_model
    from planner.engines.llamacpp.locate import locate
    from planner.errors import PlannerError
    from planner.gguf.writer import write_sparse_gguf

    ap = argparse.ArgumentParser(prog="python -m planner.engines.llamacpp.crosscheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="catalog id (repeatable; default: every model)")
    ap.add_argument("--layout", choices=["mla", "legacy"], help="deepseek2 layout (default: both)")
    ap.add_argument("--scheme", action="append", help="scheme id (repeatable; default: every scheme)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--llama-cpp", metavar="DIR")
    a = ap.parse_args(argv)
    try:
        lc = locate(a.llama_cpp)
        lc.binary("llama-quantize")
        cat = catalog()
        ids = a.model or list(cat)
        for m in ids:
            if m not in cat:
                raise PlannerError(f"unknown model '{m}'; valid: {', '.join(sorted(cat))}")
    except PlannerError as e:
        print(f"crosscheck: {e}", file=sys.stderr)
        return 2
    print(f"llama.cpp {lc.version()} ({lc.binary('llama-quantize')})")
    total = bad = runs = 0
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dq-crosscheck-") as td:
        for mid in ids:
            e = cat[mid]
            layouts = ([a.layout] if a.layout else ["mla", "legacy"]) if e.hparams.arch == "deepseek2" else [None]
            for lay in layouts:
                model = resolve_catalog_model(e, lay)
                path = write_sparse_gguf(Path(td) / f"{mid}.gguf", model, overwrite=True)
                sids = a.scheme or schemes_for(e.hparams.arch)
                checks = dry_run_compare(lc, model, path, sids, jobs=a.jobs)
                path.unlink()
                n = sum(c.tensors for c in checks)
                nbad = sum(1 for c in checks if not c.ok)
                total += n
                bad += nbad
                runs += len(checks)
                print(f"{mid}{' (' + lay + ')' if lay else ''}: {len(checks)} schemes, {n} tensors compared, "
                      f"{nbad} scheme(s) differ")
                for c in checks:
                    if not c.ok:
                        why = (f"planned as refused ({c.refused}), llama-quantize: exit {c.returncode} {c.error}"
                               if c.refused else None) or c.error or "; ".join(str(m) for m in c.mismatches[:5]) or \
                            f"total {c.plan.size_bytes / MIB:.2f} MiB planned, {c.log.quant_mib} MiB printed"
                        print(f"  {c.scheme}: {why}")
                sys.stdout.flush()
    print(f"total: {total} tensors in {runs} llama-quantize runs, {bad} run(s) with differences "
          f"({time.monotonic() - t0:.0f} s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
