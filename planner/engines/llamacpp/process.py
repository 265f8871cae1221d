"""Child processes that never outlive the command that started them.

Every child runs in its own session (so its whole process group can be signalled, and a Ctrl-C in the
terminal reaches only dq-planner, which then stops the child itself), from an argument list (never a
shell). `Child.stop()` sends SIGTERM to the group, waits, then SIGKILL; `with Child(...)` always stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from planner.errors import RunError


def signal_name(returncode: int) -> str | None:
    """'SIGKILL' for a child killed by a signal (Popen's negative returncode), else None."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()      # resolved here: nothing may be imported between fork and exec


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: the kernel sends it SIGTERM if dq-planner dies, even by
    SIGKILL, which no handler can catch (Linux PR_SET_PDEATHSIG)."""
    _PRCTL(1, 15, 0, 0, 0)      # PR_SET_PDEATHSIG, SIGTERM


class Child:
    """One child process with its output merged into one line stream."""

    def __init__(self, argv: Sequence[str | os.PathLike], *, env: dict[str, str] | None = None,
                 cwd: str | os.PathLike | None = None, keep_lines: int = 400,
                 on_line: Callable[[str], None] | None = None, restore_signals: bool = True):
        self.argv = [os.fspath(a) for a in argv]
        if not self.argv or not Path(self.argv[0]).name:
            raise ValueError("empty command")
        self.lines: deque[str] = deque(maxlen=keep_lines)   # the last lines, for error messages
        self.all_lines: list[str] = []
        self._on_line = on_line
        self._lock = threading.Lock()
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True, bufsize=0, restore_signals=restore_signals,
                preexec_fn=_die_with_parent if _PRCTL is not None else None)
        except OSError as e:
            raise RunError(f"cannot start {self.argv[0]}: {e.strerror or e}") from None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- output ---------------------------------------------------------------------------------
    def _iter_raw(self) -> Iterator[str]:
        """Lines as the child writes them (bytes decoded leniently; '\\r' also ends a line)."""
        assert self.proc.stdout is not None
        buf = b""
        while True:
            chunk = self.proc.stdout.read(65536)
            if not chunk:
                break
            buf += chunk
            while True:
                i = buf.find(b"\n")
                if i < 0:
                    break
                line, buf = buf[:i], buf[i + 1:]
                yield line.rstrip(b"\r").decode("utf-8", "replace")
        if buf:
            yield buf.rstrip(b"\r").decode("utf-8", "replace")

    def _record(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)
            self.all_lines.append(line)
        if self._on_line is not None:
            self._on_line(line)

    def iter_lines(self) -> Iterator[str]:
        """Read the output in this thread until the child closes it."""
        for line in self._iter_raw():
            self._record(line)
            yield line

    def read_in_background(self) -> None:
        """Collect the output in a thread (for long-running servers)."""
        def run() -> None:
            for line in self._iter_raw():
                self._record(line)
        self._reader = threading.Thread(target=run, name=f"reader-{self.pid}", daemon=True)
        self._reader.start()

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.all_lines)

    # -- lifetime -------------------------------------------------------------------------------
    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout)
        self._join_reader()
        return rc

    def _join_reader(self, timeout: float = 5.0) -> None:
        if self._reader is not None:
            self._reader.join(timeout)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM to the process group, SIGKILL after `grace` seconds; returns the exit status.

        llama.cpp's tools do not fork, so the group is the child itself and the threads it runs; the
        group is signalled only while its leader is unreaped (its id cannot have been reused then).
        """
        try:
            if self.proc.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            # also when interrupted while waiting: the child must not outlive us
            if self.proc.poll() is None:
                self._signal_group(signal.SIGKILL)
                self.proc.wait()
        self._join_reader()
        if self.proc.stdout is not None:
            try:
                self.proc.stdout.close()
            except OSError:
                pass
        return self.proc.returncode

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_captured(argv: Sequence[str | os.PathLike], *, timeout: float | None = None,
                 env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None
                 ) -> subprocess.CompletedProcess:
    """subprocess.run(argv, capture_output=True, text=True, timeout=timeout) for a child that must not
    outlive us: it runs in its own session with PR_SET_PDEATHSIG (so even a SIGKILL of dq-planner ends
    it), and on a timeout, Ctrl-C or any other exception its whole group is killed and reaped before the
    exception goes on (subprocess.TimeoutExpired on a timeout, as subprocess.run raises it)."""
    args = [os.fspath(a) for a in argv]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", env=env, cwd=cwd, start_new_session=True,
                            preexec_fn=_die_with_parent if _PRCTL is not None else None)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        if proc.poll() is None:          # the group is signalled only while its leader is unreaped
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.communicate()               # reap it and close the pipes
        raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies excluded)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.info["pid"]) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return False


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


INTERRUPTING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP while a child runs: handled like Ctrl-C (stop the child, clean up);
    the command exits with 128 + the signal's number (130, 143, 129), as a shell reports it."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.signame = signal.Signals(signum).name
        self.exit_code = 128 + self.signum
        super().__init__(self.signame)


_Terminated = Interrupted          # the earlier name


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While the block runs, the first SIGINT, SIGTERM or SIGHUP raises Interrupted (a
    KeyboardInterrupt) so that cleanup code runs; every later one is ignored, so a second Ctrl-C
    (even a millisecond after the first) cannot cut the cleanup short and leave a partial file.
    Once a signal has come they stay ignored after the block too: the command is ending."""
    state: dict[str, int | None] = {"signum": None}

    def handler(signum, frame):
        if state["signum"] is not None:
            return                       # already cleaning up
        state["signum"] = signum
        raise Interrupted(signum)

    old = {}
    try:
        for s in INTERRUPTING:
            try:
                old[s] = signal.signal(s, handler)
            except ValueError:          # not the main thread
                pass
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, signal.SIG_IGN if state["signum"] is not None else h)
