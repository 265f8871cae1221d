"""Publishing a run's output (a quantized GGUF file, a quantized checkpoint folder) without harming what
the user owns: the run writes beside the output under a partial name carrying its process id
(`.OUT.partial-PID`), partials of runs killed outright are removed by the next run into the same output,
and the finished output is renamed into place, never onto an existing path unless asked to (an output
that appears at the last moment stays: two runs into one output, the first rename wins).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
from pathlib import Path

from planner.errors import PlannerError, RunError
from planner.units import size_text

_PID_DIGITS = 10                 # the longest process id a partial's name may carry


def name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def partial_prefix(dst: Path) -> str:
    """The name of `dst`'s partial outputs up to the process id: '.OUT.partial-', or, when OUT is so
    long that the partial's name would pass the file system's limit, a shortened OUT with a hash."""
    prefix = f".{dst.name}.partial-"
    limit = name_max(dst.parent)
    if len(os.fsencode(prefix)) + _PID_DIGITS <= limit:
        return prefix
    digest = hashlib.sha1(os.fsencode(dst.name)).hexdigest()[:12]
    keep = os.fsencode(dst.name)[:max(limit - _PID_DIGITS - len(".~.partial-") - len(digest), 1)]
    return f".{keep.decode('utf-8', 'ignore')}~{digest}.partial-"


def temp_output_path(dst: Path) -> Path:
    """Where this process writes `dst` before publishing it."""
    return dst.parent / f"{partial_prefix(dst)}{os.getpid()}"


def check_output_name_length(dst: Path) -> None:
    """PlannerError (exit 2) for a file name longer than its folder's file system allows."""
    limit = name_max(dst.parent)
    n = len(os.fsencode(dst.name))
    if n > limit:
        raise PlannerError(f"--output {dst}: {os.strerror(errno.ENAMETOOLONG)} (the name has {n} bytes; the "
                           f"file system of {dst.parent} allows {limit})")


def remove_stale_partials(dst: Path) -> list[Path]:
    """Partial outputs for `dst` (files or folders) left by a dq-planner that was killed outright
    (SIGKILL: nothing could clean up); the process id in the name is no longer running."""
    removed = []
    prefix = partial_prefix(dst)
    try:
        names = [n for n in os.listdir(dst.parent) if n.startswith(prefix)]
    except OSError:
        return removed
    for name in names:
        p = dst.parent / name
        pid = name[len(prefix):]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue                      # still running (another quantize of the same output)
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def check_free_space(folder: Path, need: int, what: str = "the output") -> None:
    """RunError when `folder` has fewer than `need` bytes free for `what`."""
    free = shutil.disk_usage(folder).free
    if free < need:
        raise RunError(f"not enough free disk space in {folder}: {what} needs {size_text(need)}, "
                       f"{size_text(free)} {'is' if free == 1 else 'are'} free")


class OutputAppeared(RunError):
    """The output appeared while the run wrote it (another run?) and was not replaced."""


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        f = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    f.restype = ctypes.c_int
    return f


_RENAMEAT2 = _load_renameat2()


def rename_noreplace(src: Path, dst: Path) -> bool:
    """rename(2) that fails with EEXIST instead of replacing (Linux renameat2 RENAME_NOREPLACE).
    True when done; False when the system or the file system does not offer it."""
    if _RENAMEAT2 is None:
        return False
    import ctypes

    if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(dst))


def publish(tmp: Path, dst: Path, *, overwrite: bool = False) -> None:
    """Move the finished `tmp` to `dst`. Without `overwrite` an existing `dst` is never replaced, even
    one that appears at the last moment: FileExistsError then, and `tmp` is left where it is.
    Atomic no-replace rename where the system has one, else a hard link then unlink of `tmp`, else
    an exclusively created placeholder that the rename replaces."""
    if overwrite:
        os.replace(tmp, dst)
        return
    if rename_noreplace(tmp, dst):
        return
    try:
        os.link(tmp, dst)                 # FileExistsError when dst exists
    except FileExistsError:
        raise
    except OSError:                       # no hard links on this file system
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        os.replace(tmp, dst)
        return
    os.unlink(tmp)


def publish_folder(tmp: Path, dst: Path, *, overwrite: bool) -> None:
    """Rename the finished folder `tmp` to `dst`; without `overwrite` an existing `dst` is never replaced
    (FileExistsError). With `overwrite` the old folder is moved aside, the new one renamed in, the old
    one removed."""
    if overwrite and os.path.lexists(dst):
        old = dst.parent / f".{dst.name}.replaced-{os.getpid()}"
        os.rename(dst, old)
        try:
            if not rename_noreplace(tmp, dst):
                os.rename(tmp, dst)
        except BaseException:
            if not os.path.lexists(dst):
                os.rename(old, dst)       # put the user's folder back
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    if rename_noreplace(tmp, dst):
        return
    os.mkdir(dst)                         # FileExistsError when dst exists; then an empty folder is replaced
    os.rename(tmp, dst)
