"""The one engine interface: what every serving engine (llama.cpp, vLLM, SGLang, ...) provides.

An engine plans memory for a request (its own memory model, from the core's arithmetic), lists the
schemes or formats it accepts, and writes the launch commands of a plan. Implementations live in
planner/engines/ (one package each, its engine.py exposing ENGINE_IMPL) and are found through
planner.engines.registry (ids in planner/engine_ids.py); the core receives the engine object from its
caller and never names one. The README says which files a new engine touches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from planner.core.catalog import ModelEntry
    from planner.core.devices.hardware import Hardware
    from planner.core.plan import Plan, PlanRequest
    from planner.core.llamacpp.sizing import ResolvedModel


@dataclass
class Script:
    """One launch script: a file name and its text."""
    name: str
    text: str


@dataclass
class Launch:
    """The launch commands of one scheme of a plan."""
    lines: list[str]                                    # printable: comments and shell lines, in order
    scripts: list[Script] = field(default_factory=list)  # one per node (what --export-commands writes)
    notes: list[str] = field(default_factory=list)


@dataclass
class ModelInput:
    """The model a request names, as the caller resolved it: a catalog/Hugging Face entry, or the model a
    GGUF header describes (--model-file)."""
    entry: ModelEntry | None = None
    file_model: ResolvedModel | None = None


@dataclass
class CommandRequest:
    """A pasted launch command (--from-command) as the plan request it runs."""
    request: PlanRequest
    program: str                                         # the program that serves: llama-server, vllm, sglang
    notes: list[str] = field(default_factory=list)


class Engine(Protocol):
    name: str                    # the --engine id
    label: str                   # for people: "llama.cpp", "vLLM", "SGLang"
    accepts_model_file: bool     # plans a GGUF file (--model-file) as it is
    quantizes: bool              # can make the scheme's file itself (llama-quantize) and serve it here
    # the plan options (PlanRequest fields) that only some engines read, as far as this one reads them;
    # an option no engine lists here is read by every plan (model, device, ctx, task, ...). The command
    # line accepts every option and an engine ignores the others; the workbench shows only its controls.
    own_options: frozenset[str]

    def scheme_ids(self, entry: ModelEntry) -> list[str]:
        """The schemes (llama.cpp ftypes and recipes) or checkpoint formats it plans for a model."""
        ...

    def plan(self, req: PlanRequest, model: ModelInput, hardware: Hardware, shared: dict | None = None) -> Plan:
        """The plan's model, schemes and memory per device (no accuracy or recommendation yet).

        shared: one dict handed to every plan of a request that differs only in its model (--model auto);
        an engine may keep there what it computed for one model and reuse it for another model whose
        figures are the same by construction (llama.cpp: the same tensors and hyperparameters), or
        ignore it."""
        ...

    def launch(self, plan: Plan, req: PlanRequest, scheme_id: str) -> Launch:
        """The commands that deploy `scheme_id` of `plan` as planned."""
        ...

    def parse_command(self, commands: list[list[str]], base: PlanRequest) -> CommandRequest | None:
        """The plan request of launch commands this engine prints (each an argv list, every node's in
        order: one node's command, or the head's with the other nodes'), over `base` (the other plan
        options); None when none of them is this engine's serving program. Bad or unmodelled flags:
        PlannerError (one line, exit 2)."""
        ...
