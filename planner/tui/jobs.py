"""Child processes of the TUI (`dq-planner quantize`, `dq-planner serve`) and the parsers of their output.

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
from dataclasses import dataclass
from typing import AsyncIterator

from planner.terminal import strip_ansi

# What `dq-planner quantize` prints (planner/engines/llamacpp/progress.py), on a terminal, redrawn with \r:
#   quantize Q4_K_M [###-------------------]  12.1% 00:03 ETA 00:21 blk.0.attn_output.weight
# and on a pipe, every 10%:
#   quantize Q4_K_M  40% (27 tensors, 00:00 elapsed, ETA 00:00)
_PROGRESS_TTY = re.compile(
    r"\[[#-]+\]\s+(?P<pct>\d+(?:\.\d+)?)%\s+(?P<elapsed>[\d:]+)\s+ETA\s+(?P<eta>[\d:]+|--:--)\s*(?P<label>\S*)")
_PROGRESS_PIPE = re.compile(
    r"(?P<pct>\d+(?:\.\d+)?)%\s+\((?P<count>\d+) tensors, (?P<elapsed>[\d:]+) elapsed, ETA (?P<eta>[\d:]+|--:--)\)")
# llama-quantize's own per-tensor line, should a wrapper pass it through (src/llama-quant.cpp):
#   [  27/ 142] blk.1.ffn_down_exps.weight - [ 256, 256, 4, 1], type = f16, converting to q6_K .. size = ...
_QUANT_TENSOR = re.compile(r"\[\s*(?P<i>\d+)\s*/\s*(?P<n>\d+)\]\s+(?P<name>\S+)\s+-\s+\[")
# `dq-planner serve` (planner/engines/llamacpp/server.py render_comparison), one row per device and part:
#   Host    KV cache              7.50           7.50  exact
_COMPARISON = re.compile(
    r"^(?P<device>\S+)\s+(?P<what>weights|KV cache|compute|output buffer)\s+(?P<planned>-|\d+\.\d+)\s+"
    r"(?P<measured>-|\d+\.\d+)(?:\s+(?P<diff>\S.*?))?\s*$")
_READY = re.compile(r"is ready on (?P<url>\S+)")


def clean(line: str) -> str:
    return strip_ansi(line).rstrip()


@dataclass
class QuantizeProgress:
    fraction: float            # 0..1
    eta: str | None            # as printed ("00:21"), None when not known
    label: str                 # the tensor being written, or "27/142 tensors"


def parse_quantize_progress(line: str) -> QuantizeProgress | None:
    line = clean(line)
    m = _PROGRESS_TTY.search(line)
    if m:
        eta = m.group("eta")
        return QuantizeProgress(float(m.group("pct")) / 100, None if eta == "--:--" else eta, m.group("label"))
    m = _PROGRESS_PIPE.search(line)
    if m:
        eta = m.group("eta")
        return QuantizeProgress(float(m.group("pct")) / 100, None if eta == "--:--" else eta,
                                f"{m.group('count')} tensors")
    m = _QUANT_TENSOR.search(line)
    if m:
        i, n = int(m.group("i")), int(m.group("n"))
        return QuantizeProgress(i / n if n else 0.0, None, f"{i}/{n} {m.group('name')}")
    return None


@dataclass
class ComparisonRow:
    device: str
    what: str                  # weights | KV cache | compute | output buffer
    planned_mib: float | None
    measured_mib: float | None
    diff: str                  # as printed: "exact", "-1.06 (-33.6%)", ""


def parse_comparison_row(line: str) -> ComparisonRow | None:
    m = _COMPARISON.match(clean(line))
    if not m:
        return None

    def num(v: str) -> float | None:
        return None if v == "-" else float(v)

    return ComparisonRow(m.group("device"), m.group("what"), num(m.group("planned")), num(m.group("measured")),
                         m.group("diff") or "")


def parse_ready(line: str) -> str | None:
    m = _READY.search(line)
    return m.group("url") if m else None


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
