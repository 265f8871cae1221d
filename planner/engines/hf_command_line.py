"""What the vLLM and SGLang command-line readers share: the checkpoint a command serves, its
quantization and dtype flags, the KV cache dtype, and the request they make.

The served path is a published checkpoint the catalog knows (profiles/formats/*.toml `repos`: the
model and its format), or a local Hugging Face folder (its config.json; the format is --scheme's, else
BF16 for an unquantized folder). `--quantization` must name the checkpoint's own method (the engines
read it from config.json; naming another one quantizes at load time, which is not modelled).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from planner.core.catalog import ModelEntry
from planner.core.plan import PlanRequest
from planner.core.serving.hf_checkpoint import Format, formats, resolve_format
from planner.engines.command_text import PREFIX
from planner.errors import PlannerError
from planner.safe_text import printable

# --quantization values that name each format method's own kernels (vLLM's QUANTIZATION_METHODS and
# SGLang's --quantization choices of the versions profiles/engines/*.toml name)
QUANTIZATION_OF_METHOD = {
    "none": (),
    "fp8_block": ("fp8",),
    "channel": ("compressed-tensors", "w8a8_int8", "w8a8_fp8"),
    "group": ("compressed-tensors", "gptq_marlin", "moe_wna16"),
    "awq": ("awq", "awq_marlin", "moe_wna16"),
}
# --dtype values that keep the checkpoint's 16-bit activations and unquantized weights
DTYPES_16 = ("auto", "half", "float16", "bfloat16", "bf16", "fp16")


def served_checkpoint(path: str, base: PlanRequest) -> tuple[str, Format, str | None]:
    """(model: a catalog id or a local folder, format, checkpoint path or None) of the served path."""
    for fmt in formats().values():
        for model_id, repo in fmt.repos.items():
            if repo.lower() == path.rstrip("/").lower():
                return model_id, fmt, None
    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file():
        from planner.model_files import resolve_model

        entry = resolve_model(path)
        if base.schemes and len(base.schemes) == 1:
            fmt = resolve_format(base.schemes[0])
        elif isinstance((entry.config or {}).get("quantization_config"), dict):
            raise PlannerError(f"{PREFIX}: {printable(path)} is a quantized checkpoint: name its format with "
                               f"--scheme ({', '.join(formats())})")
        else:
            fmt = resolve_format("BF16")
        return path, fmt, path
    raise PlannerError(f"{PREFIX}: {printable(path)} is neither a published checkpoint the planner knows "
                       "(e.g. deepseek-ai/DeepSeek-R1) nor a local folder with a config.json")


def check_quantization(flag: str, value: str, fmt: Format) -> None:
    ok = QUANTIZATION_OF_METHOD.get(fmt.method, ())
    if value.lower() not in ok:
        raise PlannerError(
            f"{PREFIX}: {flag} {printable(value)} on a {fmt.id} checkpoint " + (
                f"(its own method is {' or '.join(ok)})" if ok else "(quantized at load time)")
            + " is not modelled")


def check_dtype(flag: str, value: str) -> None:
    if value.lower() not in DTYPES_16:
        raise PlannerError(f"{PREFIX}: {flag} {printable(value)} (32-bit weights and activations) changes memory "
                           "and is not modelled")


def cache_type(flag: str, value: str) -> str:
    v = value.lower()
    if v == "auto":
        return "f16"
    if v in ("fp8", "fp8_e4m3", "fp8_e5m2"):
        return "fp8"
    raise PlannerError(f"{PREFIX}: {flag} {printable(value)}: valid: auto, fp8, fp8_e4m3, fp8_e5m2")


def entry_of(model: str) -> ModelEntry:
    from planner.model_files import resolve_model

    return resolve_model(model)


def request_over(base: PlanRequest, **kw) -> PlanRequest:
    """The base request (the other plan options) with what the command says; a llama.cpp-only option of
    the base that the command contradicts is dropped."""
    return replace(base, rpc=[], **kw)
