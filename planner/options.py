"""The plan options, each declared once: flag(s), request field, converter, default, help, choices.

Three things are generated from OPTIONS: the argparse group of every command that plans
(planner.cli.add_plan_options), the PlanRequest built from parsed arguments (request_from_namespace)
with its inverse (request_args: the options that reproduce a request), and the TUI's choice controls
(planner/tui/widgets/choices.py reads each option's `control`). The choice lists come from data: tasks
from the accuracy profiles, cache types from the core's memory model, engines from the engine list,
KV modes from the llama.cpp memory model.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Iterator, Sequence

from planner.core.llamacpp.memory import FFN_EXPS_REGEX
from planner.core.plan import PlanRequest
from planner.engine_ids import engine_names
from planner.errors import PlannerError


# ---------------------------------------------------------------- converters (argparse `type=`)
def int_at_least(flag: str, low: int) -> Callable[[str], int]:
    def conv(v: str) -> int:
        # ASCII digits only: Python's int() also takes '32_768' and other scripts' digits, which
        # llama.cpp (std::stoi) reads otherwise or refuses
        if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", v):
            raise argparse.ArgumentTypeError(f"{flag} must be an integer (digits 0-9), got {ascii(v)}")
        n = int(v)
        if n < low:
            raise argparse.ArgumentTypeError(f"{flag} must be at least {low}, got {n}")
        return n
    return conv


def int_or_auto(flag: str, low: int) -> Callable[[str], int | str]:
    conv = int_at_least(flag, low)

    def f(v: str) -> int | str:
        return "auto" if v.strip().lower() == "auto" else conv(v)
    return f


def positive_float(flag: str) -> Callable[[str], float]:
    def conv(v: str) -> float:
        try:
            x = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got '{v}'") from None
        if not x > 0 or x != x or x == float("inf"):
            raise argparse.ArgumentTypeError(f"{flag} must be a number above 0, got '{v}'")
        return x
    return conv


def split_list(v: str) -> list[float]:
    try:
        parts = [float(x) for x in re.split(r"[,/]+", v)]    # llama.cpp's -ts takes 3,1 and 3/1
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tensor-split must be numbers separated by commas, got '{v}'") from None
    if any(p < 0 for p in parts) or not any(p > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"--tensor-split needs non-negative proportions, not all zero: '{v}'")
    return parts


def comma_list(v: str | None) -> list[str]:
    return [x.strip() for x in (v or "").split(",") if x.strip()]


# ---------------------------------------------------------------- choice sources (read when first needed)
def kv_modes() -> tuple[str, ...]:
    from planner.core.llamacpp.plan_schemes import KV_MODES

    return tuple(KV_MODES)


def cache_types() -> tuple[str, ...]:
    from planner.core.llamacpp.memory import CACHE_TYPES

    return tuple(CACHE_TYPES)


def task_ids() -> tuple[str, ...]:
    from planner.core.accuracy.tables import task_ids as ids

    return tuple(ids())


FLASH_ATTN = ("auto", "on", "off")
SPLIT_MODES = ("layer", "none")
LAYOUTS = ("mla", "legacy")


class Choices(Sequence[str]):
    """A choice list read from its source on first use (argparse asks only when a value is checked or
    help is printed); `fold`: membership ignores case (the core itself does)."""

    def __init__(self, source: Callable[[], Sequence[str]], fold: bool = False) -> None:
        self._source = source
        self._values: tuple[str, ...] | None = None
        self.fold = fold

    def values(self) -> tuple[str, ...]:
        if self._values is None:
            self._values = tuple(self._source())
        return self._values

    def __getitem__(self, i):  # type: ignore[override]
        return self.values()[i]

    def __len__(self) -> int:
        return len(self.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self.values())

    def __contains__(self, v: object) -> bool:
        if self.fold and isinstance(v, str):
            return v.lower() in (x.lower() for x in self.values())
        return v in self.values()


# ---------------------------------------------------------------- the schema
@dataclass(frozen=True)
class Control:
    """How the TUI offers an option. kind: "select" (a list), "int" (a whole number), "int|auto" (a whole
    number or the word auto), "number" (a decimal number), "flag" (off/on), "text".
    options: (label, value) pairs for a select (default: the option's choices); empty: what an emptied
    field means ("default": the option's default, "keep": no change while it is retyped); also: request
    fields reset with a change (a new KV mode lets the layout follow it)."""

    label: str
    kind: str
    section: str
    placeholder: str = ""
    empty: str = "default"
    options: Callable[[], list[tuple[str, str]]] | None = None
    also: tuple[tuple[str, Any], ...] = ()


_FROM_REQUEST: Any = object()


def request_default(dest: str) -> Any:
    """The PlanRequest field's default: the one source of every option's default (None for a list)."""
    f = next(f for f in fields(PlanRequest) if f.name == dest)
    return None if f.default is MISSING else f.default


@dataclass(frozen=True)
class Option:
    dest: str                                 # the PlanRequest field
    flags: tuple[str, ...]
    help: str | None = None
    default: Any = _FROM_REQUEST              # the request's (request_default)
    type: Callable[[str], Any] | None = None
    choices: Choices | None = None
    metavar: str | None = None
    action: str = "store"                     # store | append | append_const | store_true | store_false
    const: Any = None                         # append_const: the value appended
    group: str = "plan"                       # plan | engine | imatrix (mutually exclusive, in plan)
    to_request: Callable[[Any], Any] | None = None      # parsed value -> request value
    to_text: Callable[[Any], str] | None = None         # request value -> the flag's argument
    control: Control | None = None
    argparse_choices: bool = True             # False: the core checks the value (and says what is valid)
    llama_cpp: tuple[str, ...] = ()           # llama.cpp's spellings (common/arg.cpp), after `flags` in
                                              # `flags`; what --from-command reads (engines/llamacpp/command_line.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "flags", self.flags + tuple(f for f in self.llama_cpp if f not in self.flags))
        if self.default is _FROM_REQUEST:
            object.__setattr__(self, "default", request_default(self.dest))

    @property
    def flag(self) -> str:
        return self.flags[0]

    def parse(self, text: str) -> Any:
        """One typed value as the command line would read it (PlannerError for a bad one)."""
        try:
            v = self.type(text) if self.type else text
        except argparse.ArgumentTypeError as e:
            raise PlannerError(str(e)) from None
        if self.choices is not None and v not in self.choices:
            raise PlannerError(f"unknown {self.flag} '{v}'; valid: {', '.join(self.choices)}")
        return self.to_request(v) if self.to_request else v

    def text(self, value: Any) -> str:
        """The request value as the flag's argument ("" for nothing)."""
        if value is None:
            return ""
        return self.to_text(value) if self.to_text else str(value)

    def add_to(self, g) -> None:
        kw: dict[str, Any] = {"dest": self.dest, "help": self.help}
        if self.action == "append_const":        # shares its dest with the option declared before it
            g.add_argument(*self.flags, dest=self.dest, action="append_const", const=self.const, help=self.help)
            return
        if self.action in ("store_true", "store_false"):
            kw["action"] = self.action
            if self.default is not None or self.group == "imatrix":
                kw["default"] = self.default
        else:
            if self.action == "append":
                kw["action"] = "append"
            kw["default"] = self.default
            if self.type is not None:
                kw["type"] = self.type
            if self.choices is not None and self.argparse_choices:
                kw["choices"] = self.choices
            if self.metavar is not None:
                kw["metavar"] = self.metavar
        g.add_argument(*self.flags, **kw)


def _floats(v: list[float]) -> str:
    return ",".join(f"{x:g}" for x in v)


def _number(v: float) -> str:
    """768.0 -> '768', 0.85 -> '0.85' (as typed)."""
    return str(int(v)) if float(v).is_integer() else str(v)


def _device_options() -> list[tuple[str, str]]:
    from planner.core.devices.profiles import profiles

    return [("auto (detected)", "auto")] + [(p, p) for p in profiles()]


AUTO = "auto"

OPTIONS: tuple[Option, ...] = (
    Option("model", ("--model",), metavar="ID|DIR",
           help="catalog id or a local Hugging Face model folder (config.json); 'auto' compares every model"),
    Option("model_file", ("--model-file",), metavar="F.gguf",
           help="architecture and actual tensor types from a GGUF header (also https://..., hf://OWNER/REPO/PATH, "
                "ms://OWNER/REPO/PATH: only header bytes are read)"),
    Option("quant", ("--quant",), metavar="NAME",
           help="with --model-file hf://OWNER/REPO or ms://OWNER/REPO: the GGUF set (folder or shards) of that name"),
    Option("schemes", ("--scheme",), action="append", metavar="ID",
           help="scheme id or recipe file (repeatable); default: every standard scheme and recipe"),
    Option("engine", ("--engine",), choices=Choices(engine_names),
           control=Control("engine", "select", "Model")),
    Option("device", ("--device",), metavar="ID|auto|FILE", help="hardware profile; default: detected, else h100",
           control=Control("device", "select", "Hardware", options=_device_options)),
    Option("gpus", ("--gpus",), type=int_at_least("--gpus", 0), metavar="N",
           help="devices per node (0: only the --rpc devices and the host)",
           control=Control("gpus", "int", "Hardware", placeholder="profile")),
    Option("nodes", ("--nodes",), type=int_at_least("--nodes", 1), metavar="N",
           control=Control("nodes", "int", "Hardware")),
    Option("rpc", (), llama_cpp=("--rpc",), metavar="HOST:PORT[=MEM],...", help="llama.cpp RPC devices",
           to_request=comma_list, to_text=",".join,
           control=Control("rpc", "text", "Hardware", placeholder="host:port[=mem],...")),
    Option("ctx", ("--ctx",), llama_cpp=("-c", "--ctx-size"), type=int_at_least("--ctx", 1), metavar="N", help="context tokens",
           control=Control("ctx", "int", "Context", empty="keep")),
    Option("kv_mode", ("--kv-mode",), choices=Choices(kv_modes),
           help="deepseek2 KV cache: current llama.cpp (mla), Apr 2025-Jan 2026 (mla-kv), legacy GGUFs",
           control=Control("kv", "select", "Context", also=(("layout", None),))),
    Option("layout", ("--layout",), choices=Choices(lambda: LAYOUTS),
           help="deepseek2 tensor layout (follows --kv-mode)"),
    Option("cache_type_k", (), llama_cpp=("--cache-type-k", "-ctk"), metavar="T", choices=Choices(cache_types, fold=True),
           argparse_choices=False, control=Control("K type", "select", "Context")),
    Option("cache_type_v", (), llama_cpp=("--cache-type-v", "-ctv"), metavar="T", choices=Choices(cache_types, fold=True),
           argparse_choices=False, control=Control("V type", "select", "Context")),
    Option("flash_attn", (), llama_cpp=("--flash-attn", "-fa"), choices=Choices(lambda: FLASH_ATTN),
           control=Control("flash", "select", "Context")),
    Option("parallel", (), llama_cpp=("--parallel", "-np"), type=int_at_least("--parallel", 1), metavar="N",
           control=Control("slots", "int", "Context")),
    Option("kv_unified", ("--kv-unified",), llama_cpp=("-kvu",), action="store_true",
           help="as llama.cpp: the -np slots share one KV cache of --ctx cells (default: ctx/np cells each)"),
    Option("ubatch", ("--ubatch",), llama_cpp=("-ub", "--ubatch-size"), type=int_at_least("--ubatch", 1), metavar="N"),
    Option("batch", ("--batch",), llama_cpp=("-b", "--batch-size"), type=int_at_least("--batch", 1), metavar="N"),
    Option("ngl", ("--ngl",), llama_cpp=("-ngl", "--n-gpu-layers", "--gpu-layers"), type=int_at_least("--ngl", 0), metavar="N", help="layers on the GPUs (default: all)",
           control=Control("ngl", "int", "Placement", placeholder="all")),
    Option("n_cpu_moe", (), llama_cpp=("--n-cpu-moe", "-ncmoe"), type=int_or_auto("--n-cpu-moe", 0), metavar="N|auto",
           help="keep the expert tensors of the first N layers in host RAM (auto: the fewest that fit)",
           control=Control("cpu moe", "int|auto", "Placement", placeholder="0, N or auto")),
    Option("tensor_split", (), llama_cpp=("--tensor-split", "-ts"), type=split_list, metavar="a,b,...", to_text=_floats,
           control=Control("split", "text", "Placement", placeholder="a,b,...")),
    Option("tensor_overrides", (), llama_cpp=("--override-tensor", "-ot"), action="append", metavar="PATTERN=BUFFER,...",
           help="llama.cpp tensor override, repeatable, the first matching pattern wins (BUFFER: CPU, CUDA0, ...)",
           to_request=lambda v: [x for s in (v or []) for x in s.split(",") if x]),
    Option("tensor_overrides", ("--cpu-moe", "-cmoe"), action="append_const", const=f"{FFN_EXPS_REGEX}=CPU",
           help="every routed expert in host RAM (as llama.cpp's flag: -ot with its expert pattern, in order)"),
    Option("main_gpu", (), llama_cpp=("--main-gpu", "-mg"), type=int_at_least("--main-gpu", 0), metavar="N",
           help="the device of every layer with --split-mode none"),
    Option("split_mode", (), llama_cpp=("--split-mode", "-sm"), choices=Choices(lambda: SPLIT_MODES),
           help="llama.cpp split mode: layer, or none (every layer on --main-gpu)"),
    Option("op_offload", ("--no-op-offload",), action="store_false",
           help="as llama.cpp's flag: ops on host weights stay on the CPU (no weight copies in the GPU's "
                "compute buffer; slower prefill)"),
    Option("task", ("--task",), choices=Choices(task_ids),
           control=Control("task", "select", "Placement")),
    Option("prompt", ("--prompt",), type=int_at_least("--prompt", 1), metavar="N",
           help="prompt tokens of the predicted prefill speed and of each served request"),
    Option("depth", ("--depth",), type=int_at_least("--depth", 0), metavar="N",
           help="context depth (cached tokens) of the predicted decode speed"),
    Option("concurrency", ("--concurrency",), type=int_at_least("--concurrency", 1), metavar="N",
           help="requests in flight for the serving figures (TTFT, TPOT, throughput)"),
    Option("gen_tokens", ("--gen",), type=int_at_least("--gen", 1), metavar="N",
           help="tokens each served request generates (its prompt: --prompt)"),
    Option("ttft_ms", ("--ttft-ms",), type=positive_float("--ttft-ms"), metavar="X",
           help="time-to-first-token target in ms: find the deployments that meet it"),
    Option("tpot_ms", ("--tpot-ms",), type=positive_float("--tpot-ms"), metavar="Y",
           help="time-per-output-token target in ms: find the deployments that meet it"),
    Option("min_tps", ("--min-tps",), type=positive_float("--min-tps"), metavar="N",
           help="drop plans predicted to decode slower than N tokens/s"),
    Option("host_ram", ("--host-ram",), type=positive_float("--host-ram"), to_text=_number, metavar="GIB",
           help="host RAM for experts and CPU layers (default: detected when planning for this machine)",
           control=Control("RAM GiB", "number", "Hardware", placeholder="detected")),
    Option("host_bandwidth", ("--host-bandwidth",), type=positive_float("--host-bandwidth"), to_text=_number, metavar="GBPS",
           help="the host memory's peak bandwidth (default: measured here, else the host profile's)",
           control=Control("RAM GB/s", "number", "Hardware", placeholder="measured")),
    Option("max_context", ("--max-context",), action="store_true",
           help="also find the largest context that fits"),
    Option("gpu_memory_utilization", ("--gpu-memory-utilization",), type=float, to_text=_number, metavar="F", group="engine",
           help="vLLM's share of GPU memory [0.9]",
           control=Control("gpu mem", "number", "Engine", placeholder="0.9")),
    Option("mem_fraction_static", ("--mem-fraction-static",), type=float, to_text=_number, metavar="F", group="engine",
           help="SGLang's static memory share",
           control=Control("mem frac", "number", "Engine", placeholder="by TP size")),
    Option("dp_attention", ("--dp-attention",), action="store_true", group="engine",
           help="SGLang data-parallel attention",
           control=Control("dp attn", "flag", "Engine")),
    Option("ep_moe", ("--ep-moe",), action="store_true", group="engine",
           help="SGLang expert parallelism (--enable-ep-moe, EP size = TP size)",
           control=Control("ep moe", "flag", "Engine")),
    Option("head_address", ("--head-address",), metavar="IP", group="engine",
           help="the first node's address in multi-node commands",
           control=Control("head IP", "text", "Engine", placeholder="node 0's address")),
    Option("checkpoint", ("--checkpoint",), metavar="PATH", group="engine",
           help="a local checkpoint instead of the published one",
           control=Control("ckpt", "text", "Engine", placeholder="published")),
    Option("imatrix", ("--imatrix",), action="store_true", group="imatrix",
           help="plan with an importance matrix (default: only where the scheme needs one)"),
    Option("imatrix", ("--no-imatrix",), action="store_false", group="imatrix"),
)

BY_DEST: dict[str, Option] = {}
for _o in OPTIONS:
    BY_DEST.setdefault(_o.dest, _o)
CONTROLS: tuple[Option, ...] = tuple(o for o in OPTIONS if o.control is not None)
SECTIONS = ("Model", "Hardware", "Context", "Placement", "Engine")


def add_plan_options(p: argparse.ArgumentParser, without: tuple[str, ...] = ()) -> None:
    """The plan options on a parser (the main command, serve, ...); `without`: request fields a command
    declares itself (serve and bench: --gen, the tokens their own timed runs generate)."""
    g = p.add_argument_group("plan options")
    e = p.add_argument_group("vLLM / SGLang options")
    im = g.add_mutually_exclusive_group()
    for o in OPTIONS:
        if o.dest not in without:
            o.add_to({"plan": g, "engine": e, "imatrix": im}[o.group])


def request_from_namespace(a: argparse.Namespace, **extra):
    """The PlanRequest of parsed plan options (an option a parser lacks keeps the request's default)."""
    known = {f.name for f in fields(PlanRequest)}
    kw: dict[str, Any] = {}
    for o in OPTIONS:
        if o.dest in kw or o.dest not in known or not hasattr(a, o.dest):
            continue
        v = getattr(a, o.dest)
        kw[o.dest] = o.to_request(v) if o.to_request else v
    kw.update(extra)
    return PlanRequest(**kw)


def request_args(req, *, with_model: bool = True) -> list[str]:
    """The plan options that reproduce `req` on the command line (defaults left out)."""
    d = PlanRequest()
    out: list[str] = []
    for o in OPTIONS:
        if o.action == "append_const":         # its values are written by the option it shares a dest with
            continue
        v = getattr(req, o.dest)
        if o.dest in ("model", "model_file"):
            if not with_model or (o.dest == "model" and (req.model_file or v == d.model)):
                continue
        if o.dest == "device" and req.device_file:
            out += ["--device", req.device_file]
        if o.action == "append":
            for x in v or []:
                out += [o.flag, str(x)]
        elif o.action == "store_true":
            if v is True:
                out.append(o.flag)
        elif o.action == "store_false":
            if v is False:
                out.append(o.flag)
        elif v is not None and v != getattr(d, o.dest) and v != []:
            out += [o.flag, o.text(v)]
    return out


def control_options(o: Option) -> list[tuple[str, str]]:
    """(label, value) pairs of a select control."""
    c = o.control
    assert c is not None and c.kind == "select"
    if c.options is not None:
        return c.options()
    return [(x, x) for x in (o.choices or ())]
