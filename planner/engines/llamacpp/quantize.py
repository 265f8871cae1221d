"""Running llama-quantize for a scheme and checking what it wrote against the plan.

- `run_quantize()` runs llama-quantize with the scheme's rules, reports progress from its per-tensor
  lines, writes under a temporary name in the output folder and renames on success. On failure or
  Ctrl-C (or SIGTERM/SIGHUP) the child's process group is killed and the partial file removed.
- `compare_log()` checks llama-quantize's own per-tensor lines (real or --dry-run) against the plan.
- `verify_file()` checks the written GGUF, tensor by tensor: name, shape, type, bytes (rows x row size
  of the type the header records), and that the data region holds exactly those bytes.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from planner.core.ggml.gguf_constants import GGUF_DEFAULT_ALIGNMENT
from planner.core.ggml.tensor_types import is_quantized, parse_type, tensor_bytes
from planner.core.llamacpp.schemes import Scheme
from planner.core.plan import SchemePlan
from planner.engines.llamacpp.argv import (TENSOR_TYPE_FILE_THRESHOLD, child_env, quantize_argv,
                                           tensor_type_file_text)
from planner.engines.llamacpp.locate import LlamaCpp
from planner.engines.llamacpp.logs import MIB, QuantizeLineParser, QuantizeLog, quantize_error, shows_as_mib
from planner.engines.llamacpp.process import Child, signal_name, terminate_as_interrupt
from planner.engines.llamacpp.progress import Progress
from planner.engines.output_files import (OutputAppeared, check_output_name_length, publish, remove_stale_partials,
                                         temp_output_path)
from planner.errors import PlannerError, RunError


@dataclass
class Mismatch:
    name: str
    what: str                 # "type", "bytes", "shape", "missing", "unexpected", "data"
    predicted: str
    actual: str

    def __str__(self) -> str:
        return f"{self.name}: {self.what} planned {self.predicted}, llama.cpp {self.actual}"


@dataclass
class FileTensor:
    name: str
    shape: tuple[int, ...]    # ggml order
    type: str                 # ggml_type_name
    offset: int               # absolute offset of the data in the file
    nbytes: int


@dataclass
class FileTable:
    path: str
    tensors: list[FileTensor]
    data_start: int
    alignment: int
    file_size: int


def _norm_shape(shape) -> tuple[int, ...]:
    s = tuple(int(x) for x in shape)
    while len(s) > 1 and s[-1] == 1:
        s = s[:-1]
    return s


def read_file_table(path: str | os.PathLike) -> FileTable:
    """Tensor infos of a GGUF file with absolute data offsets, from its header (planner.gguf.header)."""
    from planner.gguf.header import read_header

    try:
        h = read_header(path)
    except PlannerError as e:
        raise RunError(f"cannot read {path} as GGUF: {e}") from None
    tensors = [FileTensor(t.name, _norm_shape(t.shape), t.type_name, int(t.offset), int(t.bytes))
               for t in h.tensors]
    return FileTable(os.fspath(path), tensors, h.data_offset, h.alignment, os.path.getsize(path))


# ---------------------------------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------------------------------

def compare_log(plan: SchemePlan, log: QuantizeLog) -> list[Mismatch]:
    """llama-quantize's per-tensor lines against the plan: every tensor, its type, and its size as
    llama.cpp printed it (MiB with 2 decimals, 3 when copied), which the planned bytes must print as."""
    out: list[Mismatch] = []
    seen = {t.name: t for t in log.tensors}
    for p in plan.tensors:
        t = seen.pop(p.name, None)
        if t is None:
            out.append(Mismatch(p.name, "missing", "present", "not in llama-quantize's output"))
            continue
        if _norm_shape(t.ne) != _norm_shape(p.shape):
            out.append(Mismatch(p.name, "shape", str(list(p.shape)), str(list(_norm_shape(t.ne)))))
        if t.type != p.type:
            out.append(Mismatch(p.name, "type", p.type, t.type))
        elif not shows_as_mib(p.bytes, t.mib, t.mib_decimals):
            out.append(Mismatch(p.name, "bytes", f"{p.bytes} ({p.bytes / MIB:.{t.mib_decimals}f} MiB)",
                                f"{t.mib:.{t.mib_decimals}f} MiB"))
    for name in seen:
        out.append(Mismatch(name, "unexpected", "absent", "written by llama-quantize"))
    return out


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def verify_file(plan: SchemePlan, table: FileTable) -> list[Mismatch]:
    """The written GGUF against the plan, tensor by tensor (types from the header; bytes both as the
    header's type and shape give them and as the data region actually holds)."""
    out: list[Mismatch] = []
    by_name = {t.name: t for t in table.tensors}
    for p in plan.tensors:
        t = by_name.pop(p.name, None)
        if t is None:
            out.append(Mismatch(p.name, "missing", "present", "not in the file"))
            continue
        if t.shape != _norm_shape(p.shape):
            out.append(Mismatch(p.name, "shape", str(list(p.shape)), str(list(t.shape))))
            continue
        if t.type != p.type:
            out.append(Mismatch(p.name, "type", p.type, t.type))
        actual = tensor_bytes(t.shape, parse_type(t.type))
        if actual != p.bytes:
            out.append(Mismatch(p.name, "bytes", str(p.bytes), str(actual)))
        if t.nbytes != actual:
            out.append(Mismatch(p.name, "data", str(actual), f"{t.nbytes} in the reader"))
    for name in by_name:
        out.append(Mismatch(name, "unexpected", "absent", "in the file"))
    # the data region: tensors laid out back to back, each padded to the alignment, up to the file's end
    ordered = sorted(table.tensors, key=lambda t: t.offset)
    for a, b in zip(ordered, ordered[1:]):
        if b.offset - a.offset != _pad(a.nbytes, table.alignment):
            out.append(Mismatch(a.name, "data", f"{_pad(a.nbytes, table.alignment)} bytes before the next tensor",
                                f"{b.offset - a.offset}"))
    if ordered:
        last = ordered[-1]
        end = last.offset + last.nbytes
        if not (end <= table.file_size <= last.offset + _pad(last.nbytes, table.alignment)):
            out.append(Mismatch(last.name, "data", f"file ends at {end}..{last.offset + _pad(last.nbytes, table.alignment)}",
                                f"file size {table.file_size}"))
    return out


# ---------------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------------

@dataclass
class QuantizeResult:
    log: QuantizeLog
    argv: list[str]
    output: Path | None
    returncode: int
    lines: list[str] = field(default_factory=list)


def check_output_name(dst: Path) -> None:
    """PlannerError (exit 2) when `dst`, or the partial file written beside it, cannot be created in
    its folder: a name longer than the file system allows, a read-only file system, no permission.
    Creates and removes the partial file to find out (its name is this process's own)."""
    check_output_name_length(dst)
    tmp = temp_output_path(dst)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return                            # ours from an earlier call
    except OSError as e:
        raise PlannerError(f"--output {dst}: cannot create a file in {dst.parent} "
                           f"({e.strerror or e})") from None
    os.close(fd)
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass


def prepare_output(dst: Path) -> list[Path]:
    """Before anything is planned or measured for a real run: the output's name can be created, and
    stale partials of killed runs are gone (so that their bytes do not count against the free-space
    check). Returns the partials removed."""
    check_output_name(dst)
    return remove_stale_partials(dst)


def needed_bytes(plan: SchemePlan, header_bytes: int) -> int:
    """Bytes the output takes: the header (metadata as in the input, tensor infos) and the tensors,
    each padded to the alignment."""
    return header_bytes + sum(_pad(t.bytes, GGUF_DEFAULT_ALIGNMENT) for t in plan.tensors)


def _src_bytes(t) -> int:
    try:
        return tensor_bytes(tuple(t.shape), parse_type(t.src_type))
    except (PlannerError, ValueError):
        return 0


def needs_requantize(plan: SchemePlan) -> bool:
    """Whether a source tensor already quantized gets another type (llama-quantize then needs
    --allow-requantize): a DeepSeek-V4 GGUF as converted holds q8_0 and mxfp4 tensors."""
    return any(t.type != t.src_type and is_quantized(parse_type(t.src_type)) for t in plan.tensors)


def run_quantize(lc: LlamaCpp, src: Path, dst: Path | None, scheme: Scheme, plan: SchemePlan, *,
                 imatrix: Path | None = None, threads: int | None = None, dry_run: bool = False,
                 progress: Progress | None = None, on_line: Callable[[str], None] | None = None,
                 env: dict[str, str] | None = None,
                 on_start: Callable[[Child], None] | None = None, overwrite: bool = False) -> QuantizeResult:
    """Run llama-quantize; on success (not dry-run) the output is at `dst`. Any failure: RunError with
    llama.cpp's own error, no partial file left; KeyboardInterrupt: child stopped, partial file removed.
    An output that appeared while quantizing is replaced only with `overwrite`; else OutputAppeared
    (exit 1) and this run's result is removed."""
    binary = lc.binary("llama-quantize")
    tmp = None if dry_run else temp_output_path(dst)  # type: ignore[arg-type]
    if dst is not None and not dry_run:
        remove_stale_partials(dst)
    with tempfile.TemporaryDirectory(prefix="dq-planner-") as td:
        ttf = None
        if len(scheme.rules) > TENSOR_TYPE_FILE_THRESHOLD:
            ttf = Path(td) / "tensor-types.txt"
            ttf.write_text(tensor_type_file_text(scheme))
        argv = quantize_argv(binary, src, tmp, scheme, imatrix=imatrix, threads=threads, dry_run=dry_run,
                             tensor_type_file=ttf, allow_requantize=needs_requantize(plan))
        parser = QuantizeLineParser()
        src_bytes = {t.name: _src_bytes(t) for t in plan.tensors}
        total = sum(src_bytes.values())
        done = 0
        child: Child | None = None
        ok = False
        try:
            with terminate_as_interrupt():
                # restore_signals=False keeps SIGXFSZ (and SIGPIPE) ignored in the child, as Python has
                # them: a file size limit (ulimit -f) then fails the write like a full disk does, and
                # llama-quantize reports it itself instead of being killed silently
                child = Child(argv, env=child_env(env), on_line=on_line, restore_signals=False)
                if on_start is not None:
                    on_start(child)
                for line in child.iter_lines():
                    t = parser.feed(line)
                    if t is not None and progress is not None:
                        done += src_bytes.get(t.name, 0)
                        progress.total = max(progress.total, float(total))
                        progress.update(done, t.name)
                rc = child.wait()
                # the checks and the rename stay under the handler: a signal after llama-quantize ended
                # but before the rename must still remove the partial file
                if progress is not None:
                    progress.close()
                if rc != 0:
                    sig = signal_name(rc)
                    if sig is not None:
                        why = f"llama-quantize was killed by {sig}"
                        if sig == "SIGXFSZ":
                            why += " (the output exceeded the file size limit, ulimit -f)"
                        last = quantize_error(child.all_lines)
                        raise RunError(f"{why}; last output: {last}")
                    err = quantize_error(child.all_lines)
                    hint = ""
                    if "iostream error" in err and not dry_run:
                        hint = f" (writing {dst} failed: is its disk full or a file size limit reached?)"
                    raise RunError(f"llama-quantize failed (exit {rc}): {err}{hint}")
                if not parser.log.tensors:
                    raise RunError(f"llama-quantize printed no tensors: {quantize_error(child.all_lines)}")
                if tmp is not None:
                    try:
                        publish(tmp, dst, overwrite=overwrite)  # type: ignore[arg-type]
                    except FileExistsError:
                        raise OutputAppeared(f"{dst} appeared while quantizing (another run?); not replacing it "
                                             "(--force would): this run's result was removed") from None
                ok = True
        finally:
            if progress is not None:
                progress.close()
            if child is not None:
                child.stop()
            if not ok and tmp is not None:
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    pass
    return QuantizeResult(parser.log, argv, None if dry_run else dst, rc, child.all_lines if child else [])
