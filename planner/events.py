"""Structured progress of `dq-planner quantize` and `dq-planner serve`: JSON lines (`--events jsonl`).

With `--events jsonl` the command writes one JSON object per line on **stdout**, flushed after each line,
and nothing else there; its human diagnostics stay on stderr (the summary line of `quantize` and the
planned-vs-measured table of `serve`, which normally go to stdout, move to stderr; the progress bar is
replaced by `progress` events). Without the flag the output is the human one, unchanged.

Every object has an "event" key naming its kind; the other keys are exactly those listed here (sizes are
integer bytes, times float seconds, `null` where a value is not known):

  started   program, argv, pid                 a llama.cpp program was started (llama-quantize,
                                               llama-server), or llm-compressor's child (quantize
                                               --engine vllm|sglang): its argument list and process id
  progress  tensor, tensors, name,             quantize: llama-quantize finished tensor `tensor` of
            bytes_done, bytes_total,           `tensors` (1-based, llama-quantize's own count); bytes are
            elapsed_s, eta_s                   the source tensors' bytes read so far / in all (the work,
                                               which the ETA follows); eta_s null until known.
                                               llm-compressor: linear layer `tensor` of `tensors`
                                               quantized (GPTQ reports each; FP8-dynamic all at once),
                                               bytes those layers' 16-bit weights; no `tensor` events
  tensor    name, type, shape, bytes           quantize: one tensor as llama-quantize wrote it: its ggml
                                               type name, shape (ggml order) and exact bytes (rows x row
                                               size of that type)
  verified  ok, tensors, differences,          quantize: the output (or a --dry-run's figures) checked
            mismatches                         against the plan; mismatches: [{name, what, planned,
                                               actual}], `what` one of type, bytes, shape, missing,
                                               unexpected, data
  ready     url, pid                           serve: llama-server answers /health
  measured  phase, rows                        serve: planned against measured memory; phase "ready"
                                               (the model is loaded) or "stopped" (after the server
                                               exited); rows: [{device, component, planned_bytes,
                                               measured_mib, exact}], component one of weights, kv,
                                               compute, output; measured_mib as llama.cpp printed it
                                               (2 decimals), exact: the planned bytes print as that
  speed     prompt_tokens, gen_tokens,         serve: timed /completion requests once ready (median of
            predicted_prefill_tps,             `requests`): llama-server's own timings against the plan's
            measured_prefill_tps,              predicted tokens/s (planner/core/llamacpp/speed.py; null where no
            predicted_decode_tps,              prediction: a device without a bandwidth figure); decode
            measured_decode_tps, requests      of gen_tokens after the prompt_tokens
  error     message, exit_code                 the command failed: the one line it prints on stderr
                                               (without the "dq-planner: " prefix) and its exit code
  done      exit_code, output                  always the last event: the exit code and the file written
                                               (quantize; null for serve, a dry run or a failure)

Order: quantize gives started, then per tensor progress and tensor, then verified, then done (error
before done on failure); serve gives started, ready, measured (phase ready), speed (unless --speed-requests 0), measured
(phase stopped), done. A consumer reads lines with `parse_event()`; unknown keys or kinds added later must be ignored.
"""

from __future__ import annotations

import json
import sys
from typing import Callable, Any, Iterable, TextIO

FORMATS = ("jsonl",)

SCHEMA: dict[str, tuple[str, ...]] = {
    "started": ("program", "argv", "pid"),
    "progress": ("tensor", "tensors", "name", "bytes_done", "bytes_total", "elapsed_s", "eta_s"),
    "tensor": ("name", "type", "shape", "bytes"),
    "verified": ("ok", "tensors", "differences", "mismatches"),
    "ready": ("url", "pid"),
    "measured": ("phase", "rows"),
    "speed": ("prompt_tokens", "gen_tokens", "predicted_prefill_tps", "measured_prefill_tps",
              "predicted_decode_tps", "measured_decode_tps", "requests"),
    "error": ("message", "exit_code"),
    "done": ("exit_code", "output"),
}


class EventSink:
    """Writes events as JSON lines on `stream` (stdout by default), one flushed line each."""

    enabled = True

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self.finished = False

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def emit(self, kind: str, **fields: Any) -> None:
        want = SCHEMA.get(kind)
        if want is None:
            raise ValueError(f"unknown event {kind!r}")
        if set(fields) != set(want):
            raise ValueError(f"event {kind!r} takes {', '.join(want)}; got {', '.join(sorted(fields))}")
        if self.finished:
            return
        doc = {"event": kind, **{k: fields[k] for k in want}}
        s = self.stream
        s.write(json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n")
        s.flush()
        if kind == "done":
            self.finished = True


class NullSink(EventSink):
    """Human mode: events go nowhere."""

    enabled = False

    def emit(self, kind: str, **fields: Any) -> None:
        if kind not in SCHEMA:
            raise ValueError(f"unknown event {kind!r}")


def wanted(argv: Iterable[str]) -> str | None:
    """The --events format asked for in a command's arguments, read before argparse runs (so that a usage
    error is reported as an event too); None without the flag."""
    argv = list(argv)
    for i, a in enumerate(argv):
        if a == "--":
            break
        if a == "--events" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--events="):
            return a.split("=", 1)[1]
    return None


def sink_for(fmt: str | None, stream: TextIO | None = None) -> EventSink:
    return EventSink(stream) if fmt in FORMATS else NullSink()


def add_events_option(p) -> None:
    p.add_argument("--events", choices=FORMATS, metavar="jsonl",
                   help="write progress as JSON lines on stdout (one object per line, an \"event\" key); "
                        "human output then goes to stderr")


def exit_code_of(e: BaseException) -> int | None:
    """The exit code planner.cli.main gives an exception (None: not one it handles)."""
    if isinstance(e, KeyboardInterrupt):
        return 130
    code = getattr(e, "exit_code", None)
    return code if isinstance(code, int) else None


def message_of(e: BaseException) -> str:
    return "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)


def fail(sink: EventSink, e: BaseException, output: str | None = None) -> None:
    """Report an exception the command is about to propagate: error, then done (`output`: a file the
    failed command still leaves, such as a quantized GGUF that differs from the plan)."""
    code = exit_code_of(e)
    if code is None or sink.finished:
        return
    sink.emit("error", message=message_of(e), exit_code=code)
    sink.emit("done", exit_code=code, output=output)


def run_with_events(argv: list[str], body: Callable[[list[str], EventSink], int]) -> int:
    """A command's main: `body(argv, sink)` with the sink its --events asks for (else a null sink); an
    exception on the way out is reported as error + done before it propagates."""
    events = sink_for(wanted(argv))
    try:
        return body(argv, events)
    except BaseException as e:
        fail(events, e)
        raise


def parse_event(line: str) -> dict[str, Any] | None:
    """An event from one line of a command's output, or None for any other line (a human line that
    shares the stream, a kind this reader does not know)."""
    s = line.strip()
    if not s.startswith("{"):
        return None
    try:
        doc = json.loads(s)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("event") not in SCHEMA:
        return None
    return doc
