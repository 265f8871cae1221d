"""Reading the data files of profiles/ (and users' own): one clear line naming the file on any problem.

`open_regular()` opens a file for reading only if it is a regular file: a FIFO, a device node or a
socket is refused (reading one would block for ever or never end), and a missing file, a folder and a
dangling symbolic link each get their own words. The open itself never blocks (O_NONBLOCK; the type
is checked on the opened descriptor, so nothing can be swapped in between).
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any, BinaryIO, Callable

from planner.errors import PlannerError

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def file_kind(mode: int) -> str:
    """'a FIFO (named pipe)', 'a directory', ... for a stat mode that is not a regular file's."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "not a regular file"


def _missing(path: str) -> str:
    """Why `path` cannot be found: no such file, or a symbolic link to nothing."""
    try:
        if os.path.islink(path):
            return f"is a dangling symbolic link (to {os.readlink(path)}, which does not exist)"
    except OSError:
        pass
    return "no such file"


def not_a_file_reason(path: str | os.PathLike) -> str | None:
    """None when `path` is (a link to) a regular file, else what it is instead, in words."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return _missing(p)
    except NotADirectoryError:
        return "no such file (a part of the path is not a folder)"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISREG(st.st_mode):
        return None
    return f"is {file_kind(st.st_mode)}, not a file"


def check_regular_file(path: str | os.PathLike, what: str = "") -> None:
    """PlannerError "WHAT PATH: is a FIFO (named pipe), not a file" unless `path` is a regular file."""
    why = not_a_file_reason(path)
    if why is not None:
        raise PlannerError(f"{what + ' ' if what else ''}{os.fspath(path)}: {why}")


def open_regular(path: str | os.PathLike, what: str = "") -> BinaryIO:
    """`path` opened for binary reading; PlannerError (one line, naming the path) unless it is a
    regular file."""
    p = os.fspath(path)
    where = f"{what + ' ' if what else ''}{p}"
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise PlannerError(f"{where}: {_missing(p)}") from None
    except IsADirectoryError:
        raise PlannerError(f"{where}: is a directory, not a file") from None
    except NotADirectoryError:
        raise PlannerError(f"{where}: no such file (a part of the path is not a folder)") from None
    except OSError as e:
        raise PlannerError(f"{where}: cannot read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PlannerError(f"{where}: is {file_kind(st.st_mode)}, not a file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of a regular file; PlannerError "WHAT PATH: reason" otherwise."""
    with open_regular(path, what) as f:
        try:
            data = f.read()
        except OSError as e:
            raise PlannerError(f"{what} {path}: cannot read ({e.strerror or e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PlannerError(f"{what} {path}: not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})") from None


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed TOML of `path`; a PlannerError "WHAT PATH: reason" when unreadable or invalid."""
    text = read_text(path, what)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PlannerError(f"{what} {path}: invalid TOML ({e})") from None
    except RecursionError:            # arrays or tables nested thousands deep
        raise PlannerError(f"{what} {path}: invalid TOML (nested too deeply)") from None


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in `path` (UTF-8, no NaN/Infinity); PlannerError "WHAT PATH: reason" otherwise."""
    text = read_text(path, what)

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        data = json.loads(text, parse_constant=constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as e:
        raise PlannerError(f"{what} {path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise PlannerError(f"{what} {path}: expected a JSON object, got {type(data).__name__}")
    return data


_warned: set[str] = set()


def warn(message: str) -> None:
    """One line on stderr ('dq-planner: warning: ...'), once per message and process."""
    import sys

    if message not in _warned:
        _warned.add(message)
        print(f"dq-planner: warning: {message}", file=sys.stderr)


def load_folder(folder: Path, load, *, user: bool) -> tuple[list[Any], dict[str, PlannerError]]:
    """Every *.toml of `folder` through `load`. A broken file of the user's own folder is skipped with
    a warning naming it (one bad file must not break every plan) and returned by stem, so that asking
    for it by name still fails with its own error; a broken shipped file is an error."""
    good: list[Any] = []
    broken: dict[str, PlannerError] = {}
    for p in sorted(folder.glob("*.toml")):
        try:
            good.append(load(p))
        except PlannerError as e:
            if not user:
                raise
            broken[p.stem] = e
            warn(f"skipped {e}")
    return good, broken


def load_shipped_and_user(sub: str, load: Callable[[Path], Any], key: Callable[[Any], str]
                          ) -> tuple[dict[str, Any], dict[str, PlannerError]]:
    """Every file of profiles/<sub> and then of the user's own <sub> folder (a user's file replaces a
    shipped one of the same key), by key; and the user's broken files by stem (see load_folder)."""
    from planner.core.paths import profiles_dir, user_profiles_dir

    out: dict[str, Any] = {}
    broken: dict[str, PlannerError] = {}
    for folder, user in ((profiles_dir() / sub, False), (user_profiles_dir() / sub, True)):
        good, bad = load_folder(folder, load, user=user)
        for item in good:
            out[key(item)] = item
        broken.update(bad)
    return out, broken
