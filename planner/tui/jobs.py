"""Child processes of the TUI (`dq-planner quantize`, `dq-planner serve`) and the parsers of their output.

Children run without a shell, in their own process group, with stdin closed and stdout+stderr merged.
They never outlive the TUI: stop() interrupts (SIGINT, so `dq-planner quantize` removes its partial
output), then kills the whole group after a grace period; kill_now() is the last resort on exit paths, and
on Linux the kernel sends SIGTERM to a child whose parent dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import shlex
import signal
import sys
from dataclasses import dataclass, field
from typing import AsyncIterator

# llama-quantize, one line per tensor (src/llama-quant.cpp):
#   [  27/ 142] blk.1.ffn_down_exps.weight - [ 256, 256, 4, 1], type = f16, converting to q6_K .. size = ...
_QUANT_TENSOR = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\]\s+(\S+)\s+-\s+\[")
# llama.cpp's buffer lines (load_tensors / llama_kv_cache / llama_context / sched_reserve prefixes vary by
# version, so they are matched by content):
#   load_tensors:        CUDA0 model buffer size =  1234.56 MiB
#   llama_kv_cache:      CUDA0 KV buffer size =    20.00 MiB
#   llama_context:       CUDA_Host  output buffer size =     0.49 MiB
#   sched_reserve:       CUDA0 compute buffer size =     9.52 MiB
_BUFFER = re.compile(r"(?P<dev>\S+)\s+(?P<kind>model|KV|compute|output)\s+buffer size\s*=\s*(?P<mib>[\d.]+)\s*MiB")
# llama-server, once it serves: "main: server is listening on http://127.0.0.1:8080"
_LISTENING = re.compile(r"server is listening on (\S+)")
_ERROR = re.compile(r"^(dq-planner: .*|.*\berror\b.*)$", re.IGNORECASE)

MiB = 1 << 20


@dataclass
class QuantizeProgress:
    done: int
    total: int
    tensor: str


def parse_quantize_progress(line: str) -> QuantizeProgress | None:
    m = _QUANT_TENSOR.search(line)
    if not m:
        return None
    return QuantizeProgress(int(m.group(1)), int(m.group(2)), m.group(3))


@dataclass
class BufferLine:
    device: str
    kind: str          # model | KV | compute | output
    bytes: int         # from the MiB llama.cpp prints with two decimals (to about 10 KiB)


def parse_buffer_line(line: str) -> BufferLine | None:
    m = _BUFFER.search(line)
    if not m:
        return None
    return BufferLine(m.group("dev"), m.group("kind"), round(float(m.group("mib")) * MiB))


def parse_listening(line: str) -> str | None:
    m = _LISTENING.search(line)
    return m.group(1) if m else None


@dataclass
class Measured:
    """llama.cpp's own buffer sizes per buffer name, as they appear in the log."""

    by_device: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, b: BufferLine) -> None:
        self.by_device.setdefault(b.device, {})
        self.by_device[b.device][b.kind] = self.by_device[b.device].get(b.kind, 0) + b.bytes


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

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc: asyncio.subprocess.Process | None = None
        self.returncode: int | None = None
        self.cancelled = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=self.env, start_new_session=True,
            preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None,
        )

    async def lines(self) -> AsyncIterator[tuple[str, bool]]:
        """(line, final): final is False for a carriage-return update (a progress bar redrawn in place)."""
        assert self.proc is not None and self.proc.stdout is not None
        buf = b""
        while True:
            chunk = await self.proc.stdout.read(65536)
            if not chunk:
                break
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

    async def stop(self, grace: float = 5.0) -> int | None:
        """SIGINT (the child cleans up, as on Ctrl-C), then SIGKILL to the whole group after `grace` s."""
        p = self.proc
        if p is None:
            return None
        self.cancelled = True
        if p.returncode is None:
            try:
                os.kill(p.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(p.wait(), grace)
            except asyncio.TimeoutError:
                pass
        self._kill_group()
        if p.returncode is None:
            await p.wait()
        self.returncode = p.returncode
        return p.returncode

    def _kill_group(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # descendants left in the child's group
        except (ProcessLookupError, PermissionError):
            pass

    def kill_now(self) -> None:
        """Synchronous last resort (exit paths where no event loop is left to wait on)."""
        self._kill_group()
