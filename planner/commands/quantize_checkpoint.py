"""dq-planner quantize --engine vllm|sglang --input HF_DIR --scheme FP8-dynamic|W8A8|W4A16 --output DIR
[--calibration FILE] [--samples N] [--max-seq-len N] [--threads N] [--force] [--events jsonl]

Runs llm-compressor's one-shot flow (a child process) with the recipe of the format's profile, then
checks the written checkpoint against the plan tensor by tensor (name, dtype, shape, bytes) and its
config.json's quantization_config against the format; any difference: exit 1 and nothing published.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from planner.commands.quantize import report_mismatches
from planner.errors import PlannerError, RunError

DEFAULT_SAMPLES = 512            # llm-compressor's examples
DEFAULT_MAX_SEQ_LEN = 2048
MAX_SAMPLES = 1 << 16
MAX_SEQ_LEN = 1 << 20


def parser():
    from planner.arg_parser import Parser
    from planner.engines.registry import engine, engine_names
    from planner.options import int_at_least

    p = Parser(prog="dq-planner quantize",
                description="Quantize a Hugging Face checkpoint with llm-compressor for vLLM or SGLang and verify "
                            "the result against the plan, tensor by tensor.")
    p.add_argument("--engine", required=True, choices=[e for e in engine_names() if not engine(e).accepts_model_file],
                   help="the engine that will serve the checkpoint")
    p.add_argument("--input", required=True, metavar="HF_DIR", help="the BF16 checkpoint's folder (config.json, "
                   "*.safetensors, tokenizer)")
    p.add_argument("--scheme", required=True, metavar="S", help="FP8-dynamic, W8A8 or W4A16")
    p.add_argument("--output", required=True, metavar="DIR", help="the folder to write (must not exist unless --force)")
    p.add_argument("--calibration", metavar="FILE", help="calibration text: one sample per line, or JSON lines "
                   "with a \"text\" field (W8A8 and W4A16 need it; nothing is downloaded)")
    p.add_argument("--samples", type=int_at_least("--samples", 1), default=DEFAULT_SAMPLES, metavar="N",
                   help=f"calibration samples taken from the file (default {DEFAULT_SAMPLES})")
    p.add_argument("--max-seq-len", type=int_at_least("--max-seq-len", 1), default=DEFAULT_MAX_SEQ_LEN, metavar="N",
                   help=f"tokens per calibration sample at most (default {DEFAULT_MAX_SEQ_LEN})")
    p.add_argument("--threads", type=int_at_least("--threads", 1), metavar="N", help="CPU threads of torch")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists")
    from planner.events import add_events_option

    add_events_option(p)
    return p


def main(argv: list[str]) -> int:
    from planner.events import run_with_events

    return run_with_events(argv, _main)


def _main(argv: list[str], events) -> int:
    a = parser().parse_args(argv)
    human = sys.stderr if events.enabled else sys.stdout
    if a.samples > MAX_SAMPLES:
        raise PlannerError(f"--samples must be at most {MAX_SAMPLES}, got {a.samples}")
    if a.max_seq_len > MAX_SEQ_LEN:
        raise PlannerError(f"--max-seq-len must be at most {MAX_SEQ_LEN}, got {a.max_seq_len}")

    from planner.core.catalog import entry_from_config
    from planner.core.serving.hf_checkpoint import checkpoint, resolve_format
    from planner.engines.compress import checkpoint_files as cf
    from planner.engines.compress.calibration import read_samples
    from planner.engines.compress.recipe import recipe_for
    from planner.engines.compress.run import check_input, check_library, check_output, has_tokenizer, run_compress
    from planner.engines.llamacpp.progress import Progress, emit_verified, eta_seconds
    from planner.engines.output_files import check_free_space, check_output_name_length
    from planner.engines.registry import engine
    from planner.remote import is_remote

    label = engine(a.engine).label
    if is_remote(a.input):
        raise PlannerError(f"quantize needs a local --input folder (llm-compressor reads every weight): download "
                           f"{a.input} first")
    src = Path(a.input)
    cfg = check_input(src)
    fmt = resolve_format(a.scheme)
    entry = entry_from_config(cfg, str(src / "config.json"), src.resolve().name)
    recipe = recipe_for(fmt, entry.hparams)
    fmt.check_applies(entry)
    dst = Path(a.output)
    check_output_name_length(dst)
    check_output(dst, src, a.force)
    texts = None
    if recipe.calibration:
        if a.calibration is None:
            raise PlannerError(f"{fmt.id} needs calibration text: pass --calibration FILE (one sample per line, or "
                               "JSON lines with a \"text\" field); nothing is downloaded")
        if not has_tokenizer(src):
            raise PlannerError(f"--input {src}: no tokenizer (tokenizer.json) to read the calibration text with")
        texts = read_samples(a.calibration, a.samples)
    elif a.calibration is not None:
        print(f"dq-planner: {fmt.id} needs no calibration; --calibration is not read", file=sys.stderr)
    check_library()

    ck = checkpoint(entry, fmt)
    planned = ck.tensors()
    check_free_space(dst.parent, ck.size_bytes + (16 << 20), "the quantized checkpoint")

    # progress: the quantized linear layers, in bytes of their 16-bit weights
    from planner.core.serving.hf_checkpoint import hf_weights, is_quantized

    sel = fmt.selector(entry.hparams)
    layers = {w.prefix: w.n_elements * 2 for w in hf_weights(entry.hparams, ck.mtp_layers) if is_quantized(w, sel)}
    total = sum(layers.values())
    state = {"done": 0, "n": 0, "t0": time.monotonic()}
    bar = None if events.enabled else Progress(total, f"quantize {fmt.id}")

    def step(name: str, nbytes: int, count: int = 1) -> None:
        state["done"] += nbytes
        state["n"] += count
        elapsed = time.monotonic() - state["t0"]
        eta = eta_seconds(state["done"], total, elapsed)
        events.emit("progress", tensor=state["n"], tensors=len(layers), name=name, bytes_done=state["done"],
                    bytes_total=total, elapsed_s=round(elapsed, 3), eta_s=None if eta is None else round(eta, 3))
        if bar is not None:
            bar.update(state["done"], name)

    seen: set[str] = set()

    def on_stage(doc: dict) -> None:
        st = doc.get("stage")
        if st == "loaded" and doc.get("device") == "cpu":
            print("dq-planner: no GPU: llm-compressor runs on the CPU (FP8-dynamic takes seconds per GB; GPTQ "
                  "for W8A8/W4A16 is far slower than on a GPU)", file=sys.stderr)
        if st == "module" and doc.get("name") in layers and doc["name"] not in seen:
            seen.add(doc["name"])
            step(doc["name"], layers[doc["name"]])
        if st == "quantized":                  # without GPTQ no module is reported alone: the rest at once
            rest = [n for n in layers if n not in seen]
            if rest:
                seen.update(rest)
                step(rest[-1], sum(layers[n] for n in rest), len(rest))

    def on_start(child) -> None:
        events.emit("started", program="llm-compressor", argv=list(child.argv), pid=child.pid)
        print(f"dq-planner: llm-compressor {recipe.scheme} ({' + '.join(recipe.modifiers)}) on {src}, "
              f"{len(layers)} linear layers, {len(texts) if texts else 0} calibration samples", file=sys.stderr)

    result_mism: list = []

    def verify(folder: Path) -> None:
        written = cf.read_tensors(folder)
        mism = cf.verify_tensors(planned, written)
        mism += cf.verify_quantization_config(folder, fmt, ck.group_size, recipe.ignore)
        result_mism[:] = mism
        emit_verified(events, len(planned), mism)
        if mism:
            report_mismatches(str(dst), mism)
            raise RunError(f"the checkpoint llm-compressor wrote differs from the plan for "
                           f"{len({m.name for m in mism})} tensor(s) of {len(planned)}; not published")

    try:
        res = run_compress(src, dst, entry, recipe, calibration=texts, max_seq_len=a.max_seq_len, threads=a.threads,
                           overwrite=a.force, verify=verify, on_start=on_start, on_stage=on_stage)
    finally:
        if bar is not None:
            bar.close()
    print(f"quantized {src} -> {dst} as {fmt.id} for {label}: {len(planned)} tensors, {ck.size_bytes} bytes "
          f"({ck.size_bytes / 2**30:.3f} GiB) as planned, config.json quantization_config as the format; "
          f"{res.seconds:.1f} s on {res.device}", file=human)
    events.emit("done", exit_code=0, output=str(dst))
    return 0
