"""The child process of `dq-planner quantize --engine vllm|sglang`: `python -m planner.engines.compress.worker
SPEC.json`. It loads the checkpoint with transformers, runs llm-compressor's oneshot with the recipe the
parent planned, and saves the compressed checkpoint into the folder the spec names (the parent's
temporary folder; the parent copies the tokenizer, verifies and publishes).

Protocol: besides the libraries' own log lines, the worker writes lines `@dq-planner {json}` on stdout,
each an object with a "stage" key: loading, loaded (device: cuda or cpu, where llm-compressor runs),
module (name: a module llm-compressor's GPTQ just quantized), quantized, saving, saved, and error
(message) before it exits 1. Nothing is downloaded: the parent sets HF_HUB_OFFLINE and friends, and
the calibration text arrives in the spec.
"""

from __future__ import annotations

import json
import re
import sys
import traceback

PREFIX = "@dq-planner "
_QUANTIZING = re.compile(r"Quantizing \d+ module\(s\): \[(.*)\]")


def emit(stage: str, **fields) -> None:
    sys.stdout.write(PREFIX + json.dumps({"stage": stage, **fields}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _modifiers(r: dict) -> list:
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.smoothquant import SmoothQuantModifier

    out = []
    for name in r["modifiers"]:
        if name == "SmoothQuantModifier":
            out.append(SmoothQuantModifier(smoothing_strength=r["smoothing_strength"]))
        elif name == "GPTQModifier":
            kw = {} if r.get("dampening_frac") is None else {"dampening_frac": r["dampening_frac"]}
            out.append(GPTQModifier(targets=list(r["targets"]), scheme=r["scheme"], ignore=list(r["ignore"]), **kw))
        else:
            out.append(QuantizationModifier(targets=list(r["targets"]), scheme=r["scheme"], ignore=list(r["ignore"])))
    return out


def _log_sink(message) -> None:
    m = _QUANTIZING.search(message.record["message"])
    if m:
        for name in re.findall(r"'([^']+)'", m.group(1)):
            emit("module", name=name)


def run(spec: dict) -> None:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    emit("loading")
    from transformers import AutoModelForCausalLM

    from llmcompressor import oneshot

    model = AutoModelForCausalLM.from_pretrained(spec["input"], dtype="auto")
    r = spec["recipe"]
    if r["moe"]:
        # fused 3-D experts (transformers 5) become one Linear per expert, as the checkpoint stores them
        from llmcompressor.modeling.moe.linearize import linearize_moe

        linearize_moe(model)
    emit("loaded", device="cuda" if torch.cuda.is_available() else "cpu")
    from loguru import logger

    logger.add(_log_sink, level="INFO")
    kw = {}
    texts = spec.get("calibration")
    if texts:
        from datasets import Dataset
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(spec["input"])
        n = int(spec["max_seq_len"])
        ds = Dataset.from_dict({"text": texts}).map(
            lambda s: tok(s["text"], truncation=True, max_length=n, add_special_tokens=False),
            remove_columns=["text"])
        kw = dict(dataset=ds, max_seq_length=n, num_calibration_samples=len(texts))
    oneshot(model=model, recipe=_modifiers(r), **kw)
    emit("quantized")
    emit("saving")
    model.save_pretrained(spec["output"], save_compressed=True)
    emit("saved")


def main(argv: list[str]) -> int:
    try:
        with open(argv[0]) as f:
            spec = json.load(f)
        run(spec)
    except MemoryError:
        emit("error", message="out of memory")
        return 1
    except Exception as e:  # the library's own error, reported as one line by the parent
        traceback.print_exc(file=sys.stdout)
        msg = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
        emit("error", message=msg)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
