"""The llm-compressor recipe of a format for one model, as plain data (the child builds the modifiers).

The recipe lives in the format's profile (profiles/formats/<id>.toml, table [recipe]): the modifiers in
order, llm-compressor's preset scheme name, the targets and the ignore list, and the modifiers' settings.
MoE checkpoints (DeepSeek-V2/V3 layout) add `moe_ignore` (the router gates) and, where the format
quantizes only the routed experts, use `moe_targets` instead of `targets`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from planner.core.catalog import Hparams
from planner.core.serving.hf_checkpoint import Format
from planner.errors import PlannerError

MODIFIERS = ("QuantizationModifier", "SmoothQuantModifier", "GPTQModifier")
# the decoder layouts the plan's tensor list describes (planner.core.serving.hf_checkpoint) and transformers loads
ARCHITECTURES = ("llama", "qwen2", "deepseek2")


@dataclass(frozen=True)
class Recipe:
    format_id: str
    modifiers: tuple[str, ...]
    scheme: str                       # llm-compressor's preset: FP8_DYNAMIC, W8A8, W4A16
    targets: tuple[str, ...]
    ignore: tuple[str, ...]
    calibration: bool                 # needs calibration text
    smoothing_strength: float | None = None
    dampening_frac: float | None = None
    moe: bool = False

    def to_json(self) -> dict:
        return asdict(self)


def makes(fmt: Format) -> bool:
    """Whether `dq-planner quantize --engine vllm|sglang` can make this format (it has a recipe)."""
    return bool(fmt.recipe)


def recipe_for(fmt: Format, hp: Hparams) -> Recipe:
    r = fmt.recipe
    if not r:
        raise PlannerError(f"format {fmt.id} is not made by llm-compressor here; quantize to one of "
                           "FP8-dynamic, W8A8, W4A16")
    if hp.arch not in ARCHITECTURES:
        raise PlannerError(f"architecture {hp.arch} is not quantized by this command (llm-compressor path "
                           f"checked for {', '.join(ARCHITECTURES)})")
    mods = tuple(r.get("modifiers", ()))
    bad = [m for m in mods if m not in MODIFIERS]
    if not mods or bad:
        raise PlannerError(f"format {fmt.path}: recipe modifiers {list(mods)} must be some of {', '.join(MODIFIERS)}")
    moe = hp.arch == "deepseek2" and hp.is_moe
    targets = tuple(r.get("moe_targets") or r["targets"]) if moe else tuple(r["targets"])
    ignore = tuple(r.get("ignore", ())) + (tuple(r.get("moe_ignore", ())) if moe else ())
    return Recipe(format_id=fmt.id, modifiers=mods, scheme=str(r["scheme"]), targets=targets, ignore=ignore,
                  calibration=bool(r.get("calibration", False)),
                  smoothing_strength=r.get("smoothing_strength"), dampening_frac=r.get("dampening_frac"), moe=moe)
