"""llama-server from a plan: the command, a checked start, and planned against measured memory.

`start_server()` starts llama-server in its own process group, waits for GET /health to answer 200, and
returns the running Child; `stop()` on it sends SIGTERM to the group (llama-server then prints its memory
breakdown table and exits), SIGKILL after a grace period. `measure()` reads the memory lines of the run.
`compare()` matches llama.cpp's buffers to the plan's devices:

  buffer name                          plan device
  CPU, CPU_Mapped, CPU_REPACK, *_Host   Host (host RAM: weights kept on the host, the host's KV and
                                        compute buffers, the output buffer)
  CUDA0, ROCm1, Vulkan0, CANN2 ...      the device of that name
  RPC<n>[HOST:PORT]                     RPC[HOST:PORT] (the server numbers its own devices RPC0...)
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

from planner.core.plan import DeviceMemory, MemoryPlan
from planner.engines.llamacpp.argv import child_env
from planner.engines.llamacpp.logs import MIB, MemoryReport, clean, parse_memory
from planner.engines.llamacpp.process import Child, signal_name
from planner.errors import RunError

_RPC_BUF = re.compile(r"^RPC\d*\[(?P<ep>[^\]]+)\]$")
_RPC_DEV = re.compile(r"^RPC\d*\s+\((?P<ep>[^)]+)\)$")
_HOST_BUFS = re.compile(r"^(CPU.*|.*_Host|Host)$")


def device_key(name: str) -> str:
    """The plan's name for a llama.cpp buffer or breakdown-row name."""
    name = name.strip()
    if (m := _RPC_BUF.match(name)) or (m := _RPC_DEV.match(name)):
        return f"RPC[{m.group('ep')}]"
    if name.startswith("RPC[") and name.endswith("]"):
        return name
    if _HOST_BUFS.match(name):
        return "Host"
    return name.split(" (", 1)[0]


# ---------------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------------

def _health(host: str, port: int, timeout: float = 1.0) -> int | None:
    h = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    try:
        with urllib.request.urlopen(f"http://{h}:{port}/health", timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


_SERVER_ERR = re.compile(r"\b(error|failed|unable|cannot|couldn't|exception|abort)\b", re.I)


def server_error(lines: list[str]) -> str:
    """The most telling line of a llama-server that did not come up."""
    ls = [clean(l).strip() for l in lines]
    errs = [l for l in ls if _SERVER_ERR.search(l)]
    if errs:
        # the first error is usually the cause, later ones its consequences ("exiting due to ...")
        # without the log's time/level prefix or the source location of an abort
        return re.sub(r"^(?:[\d.]+ [A-Z] |\S+\.(?:c|cpp|h):\d+: )", "", errs[0])
    rest = [l for l in ls if l]
    return rest[-1] if rest else "no output"


def start_server(argv: list[str], host: str, port: int, *, timeout: float = 600.0,
                 on_line: Callable[[str], None] | None = None, env: dict[str, str] | None = None,
                 on_start: Callable[[Child], None] | None = None) -> Child:
    """Start llama-server and wait until /health says 200; RunError (child stopped) if it exits or times out.
    `on_start(child)` is called as soon as the process exists."""
    child = Child(argv, env=child_env(env), on_line=on_line)
    child.read_in_background()
    if on_start is not None:
        try:
            on_start(child)
        except BaseException:
            child.stop()
            raise
    end = time.monotonic() + timeout
    try:
        while True:
            rc = child.poll()
            if rc is not None:
                child.wait(5)
                sig = signal_name(rc)
                how = f"was killed by {sig}" if sig else f"exited with status {rc}"
                raise RunError(f"llama-server {how} before it was ready: {server_error(child.snapshot())}")
            if _health(host, port) == 200:
                return child
            if time.monotonic() > end:
                raise RunError(f"llama-server was not ready after {timeout:.0f} s: {server_error(child.snapshot())}")
            time.sleep(0.1)
    except BaseException:
        child.stop()
        raise


def stop_and_measure(child: Child, grace: float = 20.0) -> MemoryReport:
    """Stop the server (SIGTERM to its group, SIGKILL after `grace`) and parse everything it printed,
    including the memory breakdown it prints on exit."""
    child.stop(grace)
    return parse_memory(child.snapshot())


# ---------------------------------------------------------------------------------------------------
# planned vs measured
# ---------------------------------------------------------------------------------------------------

COMPONENTS = ("weights", "kv", "compute", "output")
LABELS = {"weights": "weights", "kv": "KV cache", "compute": "compute", "output": "output buffer"}


@dataclass
class Comparison:
    device: str
    component: str                 # one of COMPONENTS
    planned_bytes: int | None
    measured_mib: float | None     # as llama.cpp printed it (2 decimals)

    @property
    def diff_mib(self) -> float | None:
        if self.planned_bytes is None or self.measured_mib is None:
            return None
        return self.planned_bytes / MIB - self.measured_mib

    @property
    def exact(self) -> bool:
        """The planned bytes print as llama.cpp's figure."""
        return (self.planned_bytes is not None and self.measured_mib is not None
                and f"{self.planned_bytes / MIB:.2f}" == f"{self.measured_mib:.2f}")

    @property
    def diff_text(self) -> str:
        """planned - llama.cpp as the table prints it: "exact", "-1.06 (-33.6%)", or "" (a side missing)."""
        d = self.diff_mib
        if d is None:
            return ""
        if self.exact:
            return "exact"
        rel = f" ({100 * d / self.measured_mib:+.1f}%)" if self.measured_mib else ""
        return f"{d:+.2f}{rel}"


@dataclass
class MeasuredDevice:
    device: str
    weights_mib: float = 0.0
    kv_mib: float = 0.0
    compute_mib: float = 0.0
    output_mib: float = 0.0
    buffers: list[str] = field(default_factory=list)
    weight_buffers: list[str] = field(default_factory=list)


def measured_devices(report: MemoryReport) -> dict[str, MeasuredDevice]:
    out: dict[str, MeasuredDevice] = {}

    def dev(name: str) -> MeasuredDevice:
        k = device_key(name)
        if k not in out:
            out[k] = MeasuredDevice(k)
        if name not in out[k].buffers:
            out[k].buffers.append(name)
        return out[k]

    for name, mib in report.model_mib.items():
        d = dev(name)
        d.weights_mib += mib
        d.weight_buffers.append(name)
    for name, mib in report.kv_mib.items():
        dev(name).kv_mib += mib
    for name, mib in report.compute_mib.items():
        dev(name).compute_mib += mib
    for name, mib in report.output_mib.items():
        dev(name).output_mib += mib
    return out


def mapped_only(m: MeasuredDevice) -> bool:
    """The host's weights are all in memory-mapped buffers (no CPU_REPACK or plain CPU weight buffer)."""
    return bool(m.weight_buffers) and all(b.endswith("_Mapped") for b in m.weight_buffers)


def _planned(memory: MemoryPlan | None) -> dict[str, DeviceMemory]:
    if memory is None:
        return {}
    out = {device_key(d.device): d for d in memory.per_device}
    if memory.host is not None:
        out["Host"] = memory.host
    return out


def compare(memory: MemoryPlan | None, report: MemoryReport,
            host_mapped_bytes: int | None = None) -> list[Comparison]:
    """One row per device and component, devices in the plan's order (then any the plan lacks).

    With `host_mapped_bytes` (serve_plan.host_mapped_bytes) and a memory-mapped host buffer in the report,
    the host's weights row compares what llama.cpp maps: the file range holding the host's tensors."""
    planned = _planned(memory)
    measured = measured_devices(report)
    keys = [k for k in planned if k != "Host"] + (["Host"] if "Host" in planned else [])
    keys += [k for k in measured if k not in planned]
    rows: list[Comparison] = []
    for k in keys:
        p = planned.get(k)
        m = measured.get(k)
        for comp in COMPONENTS:
            if comp == "output":
                if k != "Host":
                    continue
                pb = p.overhead_bytes if p is not None else None
            else:
                pb = getattr(p, f"{comp}_bytes") if p is not None else None
                if (comp == "weights" and k == "Host" and host_mapped_bytes is not None and m is not None
                        and mapped_only(m)):
                    pb = host_mapped_bytes
            mm = getattr(m, f"{comp}_mib") if m is not None else None
            if (pb in (None, 0)) and (mm in (None, 0.0)):
                continue
            rows.append(Comparison(k, comp, pb, mm if m is not None else None))
    return rows


def comparison_rows(rows: list[Comparison]) -> list[dict]:
    """The rows of a `measured` event (planner/events.py)."""
    return [{"device": r.device, "component": r.component, "planned_bytes": r.planned_bytes,
             "measured_mib": r.measured_mib, "exact": r.exact} for r in rows]


def render_comparison(rows: list[Comparison], report: MemoryReport | None = None,
                      memory: MemoryPlan | None = None, host_mapped_bytes: int | None = None) -> str:
    headers = ["device", "what", "planned MiB", "llama.cpp MiB", "planned - llama.cpp"]
    body = []
    for r in rows:
        planned = "-" if r.planned_bytes is None else f"{r.planned_bytes / MIB:.2f}"
        meas = "-" if r.measured_mib is None else f"{r.measured_mib:.2f}"
        body.append([r.device, LABELS[r.component], planned, meas, r.diff_text])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    right = {2, 3}

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]
    if (memory is not None and memory.host is not None and host_mapped_bytes is not None
            and host_mapped_bytes != memory.host.weights_bytes
            and any(r.device == "Host" and r.component == "weights" and r.planned_bytes == host_mapped_bytes
                    for r in rows)):
        out.append(f"Host weights: llama.cpp memory-maps the file range holding the host's tensors "
                   f"({host_mapped_bytes / MIB:.2f} MiB); the plan keeps {memory.host.weights_bytes / MIB:.2f} MiB "
                   "resident there (tensors of other devices inside the range are mapped, not read)")
    if report is not None:
        host_bufs = {b: mib for b, mib in report.model_mib.items() if device_key(b) == "Host"}
        if "CPU_REPACK" in host_bufs and memory is not None and memory.host is not None:
            parts = " + ".join(f"{b} {mib:.2f}" for b, mib in host_bufs.items())
            out.append(f"Host weights: llama.cpp reports {parts} MiB: CPU_REPACK holds weights it re-laid out "
                       "for its CPU kernels (which tensors depends on the CPU's features), the mapped buffer the "
                       "file range of the others; the plan keeps "
                       f"{memory.host.weights_bytes / MIB:.2f} MiB of weights on the host")
        if report.kv is not None:
            kv = report.kv
            out.append(f"llama.cpp KV cache: {kv.cells} cells, {kv.layers} layers, {kv.seqs} seq(s), "
                       f"K ({kv.k_type}) {kv.k_mib:.2f} MiB, V ({kv.v_type}) {kv.v_mib:.2f} MiB")
        if report.breakdown:
            out.append("llama.cpp memory breakdown at exit (MiB): " + "; ".join(
                f"{device_key(b.name) if b.name.startswith('RPC') else b.device} {b.self_mib} = {b.model_mib} model + {b.context_mib} context + "
                f"{b.compute_mib} compute" for b in report.breakdown))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------
# speed: timed requests against the running server, predicted vs measured tokens/s
# ---------------------------------------------------------------------------------------------------

@dataclass
class Timing:
    """llama-server's own timings of one /completion request (its "timings" object: prompt_n tokens
    evaluated in prompt_ms, predicted_n tokens generated in predicted_ms; cache_n prompt tokens reused)."""

    prompt_n: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float
    cache_n: int = 0

    @property
    def prefill_tps(self) -> float:
        return 1000.0 * self.prompt_n / self.prompt_ms if self.prompt_ms > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        """Decode steps per second: the first generated token is free (it comes from the logits of the
        prompt's last batch), so predicted_ms covers predicted_n - 1 steps, as llama-server's own
        predicted_per_second counts them (tools/server/server-common.h n_gen_steps)."""
        steps = self.predicted_n - 1
        return 1000.0 * steps / self.predicted_ms if self.predicted_ms > 0 and steps > 0 else 0.0


def parse_timings(doc: dict) -> Timing:
    """The Timing of a /completion response (RunError when the server sent no timings)."""
    t = doc.get("timings") if isinstance(doc, dict) else None
    try:
        return Timing(prompt_n=int(t["prompt_n"]), prompt_ms=float(t["prompt_ms"]),
                      predicted_n=int(t["predicted_n"]), predicted_ms=float(t["predicted_ms"]),
                      cache_n=int(t.get("cache_n", 0) or 0))
    except (TypeError, KeyError, ValueError):
        raise RunError("llama-server's /completion answer has no timings") from None


def probe_tokens(n: int, n_vocab: int) -> list[int]:
    """n prompt token ids spread over the vocabulary (ids, not text: the prompt is exactly n tokens
    whatever the tokenizer; special ids at the ends of the vocabulary are avoided)."""
    lo, span = min(100, n_vocab // 4), max(1, n_vocab - 2 * min(100, n_vocab // 4))
    return [lo + (i * 7919) % span for i in range(n)]


def timed_completion(host: str, port: int, tokens: list[int], n_predict: int, timeout: float = 600.0) -> dict:
    """POST /completion: the prompt as token ids, exactly n_predict tokens generated (ignore_eos), no
    prompt cache reuse, greedy; returns the server's JSON answer."""
    import json

    h = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    body = json.dumps({"prompt": tokens, "n_predict": n_predict, "ignore_eos": True, "cache_prompt": False,
                       "temperature": 0.0, "top_k": 1, "stream": False}).encode()
    rq = urllib.request.Request(f"http://{h}:{port}/completion", data=body,
                                headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(rq, timeout=timeout) as r:
            return json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        raise RunError(f"llama-server /completion answered {e.code}: {e.read()[:200]!r}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise RunError(f"llama-server /completion failed: {e}") from None


def measure_speed(host: str, port: int, n_prompt: int, n_gen: int, n_vocab: int, requests: int,
                  timeout: float = 600.0) -> list[Timing]:
    """`requests` timed requests after one warm-up request of the same prompt (first-use costs: page
    faults of the memory-mapped weights, the compute graphs' allocation), each a prompt of n_prompt
    tokens then n_gen generated ones."""
    toks = probe_tokens(n_prompt, n_vocab)
    timed_completion(host, port, toks, min(8, n_gen), timeout)
    return [parse_timings(timed_completion(host, port, toks, n_gen, timeout)) for _ in range(requests)]


@dataclass
class SpeedComparison:
    prompt_tokens: int
    gen_tokens: int
    predicted_prefill_tps: float | None
    predicted_decode_tps: float | None
    measured_prefill_tps: float
    measured_decode_tps: float
    requests: int
    bound: str | None = None

    def to_event(self) -> dict:
        r = lambda v: None if v is None else round(v, 3)   # noqa: E731
        return {"prompt_tokens": self.prompt_tokens, "gen_tokens": self.gen_tokens,
                "predicted_prefill_tps": r(self.predicted_prefill_tps), "measured_prefill_tps": r(self.measured_prefill_tps),
                "predicted_decode_tps": r(self.predicted_decode_tps), "measured_decode_tps": r(self.measured_decode_tps),
                "requests": self.requests}


def compare_speed(timings: list[Timing], predicted_prefill, predicted_decode, bound: str | None = None) -> SpeedComparison:
    """The median request's figures (robust to one disturbed request) against the prediction."""
    import statistics

    return SpeedComparison(prompt_tokens=timings[0].prompt_n, gen_tokens=timings[0].predicted_n,
                           predicted_prefill_tps=predicted_prefill, predicted_decode_tps=predicted_decode,
                           measured_prefill_tps=statistics.median(t.prefill_tps for t in timings),
                           measured_decode_tps=statistics.median(t.decode_tps for t in timings),
                           requests=len(timings), bound=bound)


def render_speed(c: SpeedComparison) -> str:
    def row(what: str, p: float | None, m: float) -> str:
        err = f"{100 * (p - m) / m:+.1f}%" if p is not None and m else ""
        return f"{what:<28}  {'-' if p is None else f'{p:.2f}':>13}  {m:>12.2f}  {err:>7}"

    out = [f"{'speed (median of ' + str(c.requests) + ' requests)':<28}  {'predicted t/s':>13}  {'measured t/s':>12}  {'error':>7}",
           row(f"prefill of {c.prompt_tokens} tokens", c.predicted_prefill_tps, c.measured_prefill_tps),
           row(f"decode of {c.gen_tokens} after {c.prompt_tokens}", c.predicted_decode_tps, c.measured_decode_tps)]
    if c.bound:
        out.append(f"predicted limit: {c.bound}")
    return "\n".join(out)
