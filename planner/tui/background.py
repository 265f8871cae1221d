"""The plan of every scheme, made in a separate process so that the screen stays responsive.

Planning every scheme of the 671B model is half a second of pure Python (seconds for `--model auto`);
in a thread of the app it would hold the interpreter lock the screen needs (a change took about 0.9 s to
reach the screen while it ran, against 0.2 s without). So one worker process
(`python -m planner.tui.background`) does it: the app sends a pickled (request, schemes), the worker
answers the pickled plan, both as length-prefixed frames on its stdin/stdout. The worker is started on
first use, killed when its answer is no longer wanted (newer choices), and dies with the app
(PR_SET_PDEATHSIG on Linux, shutdown() on every way out).

The tensor lists are left out of the answer (they are most of its size and the app needs them for one
scheme at a time, which it plans itself in milliseconds).
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import traceback
from dataclasses import replace

from planner.core.plan import Plan, PlanRequest
from planner.errors import PlannerError

_HEADER = struct.Struct("<Q")


class Superseded(Exception):
    """The worker was stopped before it answered (newer choices, or the app is leaving)."""


def _pdeathsig() -> None:  # in the child, between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _read_frame(f) -> bytes | None:
    head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (n,) = _HEADER.unpack(head)
    data = f.read(n)
    return data if len(data) == n else None


def _write_frame(f, data: bytes) -> None:
    f.write(_HEADER.pack(len(data)) + data)
    f.flush()


class PlanWorker:
    """One planning process at a time; plan() blocks (call it from a thread), cancel() does not."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()          # one question at a time
        self._plock = threading.Lock()         # guards _proc
        self._token: object = None             # who asked the question being answered

    def start(self) -> subprocess.Popen:
        with self._plock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "planner.tui.background"], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="0"),
                    preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None, close_fds=True)
            return self._proc

    def plan(self, base: PlanRequest, schemes: list[str] | None,
             token: object = None) -> tuple[PlanRequest, Plan | None, str | None]:
        """(request, plan of every scheme or None, the one-line error of a bad request or None).
        `token` names this question for cancel()."""
        with self._lock:
            self._token = token
            proc = self.start()
            try:
                _write_frame(proc.stdin, pickle.dumps((base, schemes), protocol=pickle.HIGHEST_PROTOCOL))
                data = _read_frame(proc.stdout)
            except (BrokenPipeError, OSError, ValueError):
                data = None
            if data is None:
                self._kill(proc)
                raise Superseded("the planning process stopped before it answered")
        status, payload = pickle.loads(data)
        if status == "crash":
            raise RuntimeError(f"the planning process failed: {payload}")
        return payload

    def _kill(self, proc: subprocess.Popen) -> None:
        with self._plock:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for f in (proc.stdin, proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            if self._proc is proc:
                self._proc = None

    def cancel(self, token: object = None) -> None:
        """Stop the plan in progress if it is the one `token` asked for (its answer is of no use any more);
        the next plan starts a fresh worker."""
        proc = self._proc
        if proc is not None and self._lock.locked() and (token is None or self._token is token):
            self._kill(proc)

    def shutdown(self) -> None:
        proc = self._proc
        if proc is not None:
            self._kill(proc)


WORKER = PlanWorker()
atexit.register(WORKER.shutdown)


def plan_all(base: PlanRequest, schemes: list[str] | None) -> tuple[PlanRequest, Plan | None, str | None]:
    from planner.make_plan import make_plan

    try:
        plan = make_plan(replace(base, schemes=schemes))
    except PlannerError as e:
        return base, None, str(e)
    for sp in plan.schemes:
        sp.tensors = []
    return base, plan, None


def serve() -> int:
    """The worker's loop: a (request, schemes) frame in, a (status, answer) frame out, until EOF."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                      # anything printed by accident must not break the frames
    inp = sys.stdin.buffer
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the app decides when this process ends
    import planner.make_plan  # noqa: F401  (the first plan should not pay for the imports)

    while True:
        data = _read_frame(inp)
        if data is None:
            return 0
        base, schemes = pickle.loads(data)
        try:
            answer = ("ok", plan_all(base, schemes))
        except Exception:          # a bug, not a bad choice: send it back in one line
            answer = ("crash", traceback.format_exc(limit=-3).strip().splitlines()[-1])
        _write_frame(out, pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    sys.exit(serve())
