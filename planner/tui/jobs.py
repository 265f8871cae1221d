"""Child processes of the TUI (`dq-planner quantize`, `dq-planner serve`) and what their events say.

The TUI runs both with `--events jsonl` and reads the JSON-lines events they write (planner/events.py)
into a `QuantizeState` / `ServeState`; every other line of their output is the log. Nothing is read
from their human text.

Children run without a shell, in their own process group, with stdin closed and stdout+stderr merged.
They never outlive the TUI: stop() interrupts (SIGINT, so `dq-planner quantize` removes its partial
output), then kills the whole group after a grace period; kill_now() is the last resort on exit paths, and
on Linux the kernel sends SIGTERM to a child whose parent dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import pty
import re
import shlex
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from planner.events import parse_event
from planner.terminal import strip_ansi

def clean(line: str) -> str:
    return strip_ansi(line).rstrip()


def events_argv(args: list[str]) -> list[str]:
    """A dq-planner subcommand's arguments with `--events jsonl` (planner/events.py) after the
    subcommand: the TUI reads those events, the rest of the output is the log."""
    if "--events" in args or any(a.startswith("--events=") for a in args):
        return list(args)
    return [*args[:1], "--events", "jsonl", *args[1:]]


@dataclass
class JobState:
    """What the events of one `dq-planner quantize|serve --events jsonl` run say so far."""

    program: str | None = None          # the llama.cpp program started, its pid
    pid: int | None = None
    error: str | None = None
    exit_code: int | None = None        # from the done event
    output: str | None = None

    def feed(self, ev: dict[str, Any]) -> bool:
        """Apply one event; False for an event this state ignores."""
        kind = ev.get("event")
        if kind == "started":
            self.program, self.pid = ev.get("program"), ev.get("pid")
        elif kind == "error":
            self.error = ev.get("message")
        elif kind == "done":
            self.exit_code, self.output = ev.get("exit_code"), ev.get("output")
        else:
            return False
        return True

    def feed_line(self, line: str) -> bool:
        """One line of the child's output: True if it was an event (applied), False for a log line."""
        ev = parse_event(line)
        if ev is None:
            return False
        self.feed(ev)
        return True


@dataclass
class QuantizeState(JobState):
    tensor: int = 0                     # tensors done, of `tensors`
    tensors: int = 0
    name: str = ""                      # the last tensor written
    bytes_done: int = 0
    bytes_total: int = 0
    eta_s: float | None = None
    written: dict[str, tuple[str, int | None]] = field(default_factory=dict)   # name -> (type, bytes)
    verified: bool | None = None        # None: not checked (yet)
    differences: int = 0
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        """Work done, 0..1: source bytes read (what the ETA follows), else tensors."""
        if self.bytes_total > 0:
            return min(1.0, self.bytes_done / self.bytes_total)
        return self.tensor / self.tensors if self.tensors else 0.0

    def feed(self, ev: dict[str, Any]) -> bool:
        kind = ev.get("event")
        if kind == "progress":
            self.tensor, self.tensors = int(ev["tensor"]), int(ev["tensors"])
            self.name = ev.get("name") or ""
            self.bytes_done, self.bytes_total = int(ev["bytes_done"]), int(ev["bytes_total"])
            self.eta_s = ev.get("eta_s")
        elif kind == "tensor":
            self.written[ev["name"]] = (ev["type"], ev.get("bytes"))
        elif kind == "verified":
            self.verified = bool(ev["ok"])
            self.differences = int(ev["differences"])
            self.mismatches = list(ev.get("mismatches") or [])
        else:
            return super().feed(ev)
        return True

    def progress_text(self) -> str:
        eta = f", ETA {fmt_seconds(self.eta_s)}" if self.eta_s is not None and self.fraction < 1 else ""
        return f"{100 * self.fraction:.0f}%{eta} {self.tensor}/{self.tensors} {self.name}".rstrip()


def fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


@dataclass
class ComparisonRow:
    device: str
    what: str                  # weights | KV cache | compute | output buffer
    planned_mib: float | None  # as shown (2 decimals)
    measured_mib: float | None
    diff: str                  # as `dq-planner serve` prints it: "exact", "-1.06 (-33.6%)", ""
    planned_bytes: int | None = None


@dataclass
class ServeState(JobState):
    url: str | None = None
    phase: str | None = None            # of the last measured event: "ready" or "stopped"
    rows: list[ComparisonRow] = field(default_factory=list)

    def feed(self, ev: dict[str, Any]) -> bool:
        kind = ev.get("event")
        if kind == "ready":
            self.url = ev.get("url")
        elif kind == "measured":
            self.phase = ev.get("phase")
            self.rows = [comparison_row(r) for r in ev.get("rows") or []]
        else:
            return super().feed(ev)
        return True


def comparison_row(r: dict[str, Any]) -> ComparisonRow:
    """A row of a measured event as the table shows it (the same figures and wording as serve prints)."""
    from planner.engines.llamacpp.logs import MIB
    from planner.engines.llamacpp.server import LABELS, Comparison

    c = Comparison(r["device"], r["component"], r.get("planned_bytes"), r.get("measured_mib"))
    planned = None if c.planned_bytes is None else round(c.planned_bytes / MIB, 2)
    return ComparisonRow(c.device, LABELS.get(c.component, c.component), planned, c.measured_mib, c.diff_text,
                         c.planned_bytes)


def dq_planner_argv(args: list[str]) -> list[str]:
    """The command line of a dq-planner subcommand run by the same Python as this process."""
    return [sys.executable, "-m", "planner.cli", *args]


def command_text(argv: list[str]) -> str:
    """What a user would type: `dq-planner ...` for our own subcommands."""
    if argv[:3] == [sys.executable, "-m", "planner.cli"]:
        argv = ["dq-planner", *argv[3:]]
    return shlex.join(argv)


def _pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ChildProcess:
    """One child command; lines() yields its output, stop() ends it and its descendants."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, use_pty: bool = False) -> None:
        self.argv = argv
        self.use_pty = use_pty            # a pseudo-terminal makes dq-planner redraw its progress per tensor
        self._master: int | None = None
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc: asyncio.subprocess.Process | None = None
        self.returncode: int | None = None
        self.cancelled = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        pre = _pdeathsig if sys.platform.startswith("linux") else None
        if self.use_pty:
            master, slave = pty.openpty()
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=slave, stderr=slave, env=self.env,
                    start_new_session=True, preexec_fn=pre)
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            self._master = master
            return
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=self.env, start_new_session=True, preexec_fn=pre,
        )

    async def _chunks(self) -> AsyncIterator[bytes]:
        assert self.proc is not None
        if self._master is None:
            assert self.proc.stdout is not None
            while chunk := await self.proc.stdout.read(65536):
                yield chunk
            return
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                    os.fdopen(self._master, "rb", 0))
        try:
            while True:
                try:
                    chunk = await reader.read(65536)
                except OSError as e:          # EIO: the terminal's last writer has gone
                    if e.errno != errno.EIO:
                        raise
                    break
                if not chunk:
                    break
                yield chunk
        finally:
            transport.close()
            self._master = None

    async def lines(self) -> AsyncIterator[tuple[str, bool]]:
        """(line, final): final is False for a carriage-return update (a progress bar redrawn in place)."""
        assert self.proc is not None
        buf = b""
        async for chunk in self._chunks():
            buf += chunk
            while True:
                m = re.search(rb"[\r\n]", buf)
                if not m:
                    break
                line, sep, buf = buf[: m.start()], buf[m.start():m.end()], buf[m.end():]
                if sep == b"\r" and buf.startswith(b"\n"):
                    buf = buf[1:]
                    sep = b"\n"
                yield line.decode(errors="replace"), sep == b"\n"
        if buf:
            yield buf.decode(errors="replace"), True
        self.returncode = await self.proc.wait()

    async def stop(self, grace: float = 30.0) -> int | None:
        """SIGINT (the child cleans up as on Ctrl-C: quantize removes its partial file, serve stops
        llama-server), then SIGKILL to it and every descendant still there after `grace` seconds."""
        p = self.proc
        if p is None:
            return None
        self.cancelled = True
        if p.returncode is None:
            tree = self._descendants()
            try:
                os.kill(p.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(p.wait(), grace)
            except asyncio.TimeoutError:
                pass
            self._kill(tree)
        if p.returncode is None:
            await p.wait()
        self.returncode = p.returncode
        return p.returncode

    def _descendants(self) -> list:
        """The child's process tree now (its helpers may sit in sessions of their own, out of its group)."""
        import psutil

        if self.proc is None:
            return []
        try:
            me = psutil.Process(self.proc.pid)
            return [me] + me.children(recursive=True)
        except psutil.Error:
            return []

    def _kill(self, procs: list) -> None:
        import psutil

        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def kill_now(self, grace: float = 10.0) -> None:
        """Synchronous, for exit paths without an event loop to wait on: SIGTERM, then SIGKILL to the
        whole tree after `grace` seconds."""
        import psutil

        if self.proc is None or self.proc.returncode is not None:
            return
        tree = self._descendants()
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        psutil.wait_procs(tree[:1], timeout=grace)
        self._kill(tree)
