"""What the Hugging Face serving engines (vLLM, SGLang) share on the launch side: per-node commands, their
scripts, and the engine class both implement (planner.core.engine.Engine).

Their memory arithmetic is the core's (planner.core.serving: checkpoints, memory per GPU, plan_formats);
each engine's package (planner/engines/vllm/, planner/engines/sglang/) holds its memory model (memory.py:
layout and budget) and its commands (engine.py).
"""

from __future__ import annotations

import os
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from planner.core.catalog import ModelEntry
from planner.core.data_files import read_json_object
from planner.core.devices.hardware import Hardware
from planner.core.engine import CommandRequest, Launch, ModelInput, Script
from planner.core.plan import ModelSummary, Plan, PlanRequest, SchemePlan
from planner.core.serving.hf_checkpoint import Format, formats_for, repo_for, resolve_format
from planner.core.serving.plan_formats import EngineOptions, FitFn, check_counts, options_from_request, plan_formats
from planner.errors import PlannerError
from planner.model_files import resolve_model
from planner.safe_text import has_controls, printable


@dataclass
class NodeLaunch:
    """What to run on one node, in order (each command an argv list)."""

    node_rank: int
    role: str                         # "head" | "worker" | "single"
    commands: list[list[str]]
    notes: list[str] = field(default_factory=list)
    wait_gpus: int = 0                # head of a Ray cluster: wait for this many GPUs after command 0
    prelude: list[list[str]] = field(default_factory=list)   # run before the commands (the quantize step)

    def script(self) -> str:
        lines = ["#!/usr/bin/env bash", f"# node {self.node_rank} ({self.role})", "set -euo pipefail"]
        lines += [f"# {printable(n)}" for n in self.notes]
        lines += [shlex.join(c) for c in self.prelude]
        for i, c in enumerate(self.commands):
            lines.append(shlex.join(c))
            if i == 0 and self.wait_gpus:
                probe = ('import ray; ray.init(address="auto", logging_level="ERROR"); '
                         'print(int(ray.cluster_resources().get("GPU", 0)))')
                lines.append(f"until [ \"$(python3 -c {shlex.quote(probe)})\" -ge {self.wait_gpus} ]; "
                             "do echo 'waiting for the Ray workers'; sleep 5; done")
        return "\n".join(lines) + "\n"


def model_path_for(fmt: Format, entry: ModelEntry, opts: EngineOptions) -> str:
    if opts.model_path:
        return opts.model_path
    repo = repo_for(fmt, entry)
    if repo:
        return repo
    known = [f.id for f in formats_for(entry) if repo_for(f, entry)]
    raise PlannerError(
        f"no published {fmt.id} checkpoint of {entry.id} is known; give the checkpoint's path, or use "
        f"{', '.join(known) if known else 'a local checkpoint'}")


CALIBRATION_PLACEHOLDER = "CALIBRATION.jsonl"


def local_bf16_checkpoint(req: PlanRequest) -> Path | None:
    """The local folder of an unquantized Hugging Face checkpoint the plan names (--checkpoint, else
    --model), or None (a catalog id, a published repository, an already quantized folder)."""
    for spec in (req.checkpoint, req.model):
        if not spec:
            continue
        p = Path(spec)
        folder = p.parent if p.name == "config.json" else p
        cfg = folder / "config.json"
        if not (folder.is_dir() and cfg.is_file()):
            continue
        try:
            doc = read_json_object(cfg, "config")
        except PlannerError:
            return None
        return None if isinstance(doc.get("quantization_config"), dict) else folder
    return None


def quantize_step(engine_name: str, fmt: Format, src: Path) -> tuple[list[str], str]:
    """`dq-planner quantize --engine E` making `fmt` from the BF16 checkpoint `src` (llm-compressor), and
    the folder it writes."""
    out = f"{os.fspath(src).rstrip(os.sep)}-{fmt.id}"
    argv = ["dq-planner", "quantize", "--engine", engine_name, "--input", os.fspath(src), "--scheme", fmt.id,
            "--output", out]
    if fmt.recipe.get("calibration"):
        argv += ["--calibration", CALIBRATION_PLACEHOLDER]
    return argv, out


def print_commands(launches: list[NodeLaunch]) -> str:
    """All nodes' commands, printable."""
    parts = []
    for n in launches:
        parts.append(f"# node {n.node_rank} ({n.role})")
        parts += [f"# {printable(x)}" for x in n.notes]
        parts += [shlex.join(c) for c in n.prelude + n.commands]
    return "\n".join(parts) + "\n"


def write_scripts(scripts: list[Script], folder: str | os.PathLike, force: bool = False) -> list[Path]:
    """Write each script into `folder`; never overwrite a file unless `force`.

    Each script is written to a temporary file in the same folder and renamed into place, so no
    half-written script is ever left behind.
    """
    d = Path(folder)
    try:
        os.lstat(d)
    except FileNotFoundError:
        pass
    except OSError as e:                     # a name too long, a part that is a file ...
        raise PlannerError(f"{d}: cannot create the folder ({e.strerror or e})") from None
    if d.exists() and not d.is_dir():
        raise PlannerError(f"{d} exists and is not a folder")
    if not d.exists() and d.is_symlink():
        raise PlannerError(f"{d}: is a dangling symbolic link (to {os.readlink(d)}); not creating a folder there")
    paths = [d / s.name for s in scripts]
    for s in scripts:     # the last guard: no control character but the line ends reaches a script
        if has_controls(s.text.replace("\n", "")):
            raise PlannerError(f"{s.name}: a line holds a control character ({printable(s.text)[:80]}...); "
                               "not writing it")
    if not force:
        existing = [str(p) for p in paths if os.path.lexists(p)]     # a dangling link too
        if existing:
            raise PlannerError(f"{', '.join(existing)} already exist(s); choose another folder or force")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PlannerError(f"{d}: cannot create the folder ({e.strerror or e})") from None
    for s, p in zip(scripts, paths):
        try:
            fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{p.name}.", suffix=".tmp")
        except OSError as e:
            raise PlannerError(f"{d}: cannot write a script there ({e.strerror or e})") from None
        try:
            with os.fdopen(fd, "w") as f:
                f.write(s.text)
            os.chmod(tmp, 0o755)
            os.replace(tmp, p)
        except BaseException as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(e, OSError):
                raise PlannerError(f"{p}: cannot write ({e.strerror or e})") from None
            raise
    return paths


def node_scripts(launches: list[NodeLaunch]) -> list[Script]:
    return [Script(f"node{n.node_rank}.sh", n.script()) for n in launches]


def export_scripts(launches: list[NodeLaunch], folder: str | os.PathLike, force: bool = False) -> list[Path]:
    """Write node<rank>.sh per node into `folder` (see write_scripts)."""
    return write_scripts(node_scripts(launches), folder, force)


class HFServingEngine:
    """An engine that serves Hugging Face checkpoints (vLLM, SGLang): the formats of profiles/formats, its
    memory model `fit(entry, fmt, profile, gpus, nodes, ctx, opts, sequences=)` (a core module), and its
    per-node commands `node_launches(entry, fmt, gpus, nodes, ctx, opts)`."""

    accepts_model_file = False
    quantizes = False

    # what every Hugging Face serving engine reads (plan_formats.options_from_request, ctx_sequences, speed)
    HF_OPTIONS = frozenset({"cache_type_k", "parallel", "ubatch", "head_address", "checkpoint"})

    def __init__(self, name: str, label: str, fit: FitFn,
                 node_launches: Callable[[ModelEntry, Format, int, int, int, EngineOptions], list[NodeLaunch]],
                 parse_commands: Callable[[list[list[str]], PlanRequest], CommandRequest | None],
                 own_options: frozenset[str] = frozenset()):
        self.name = name
        self.label = label
        self.own_options = self.HF_OPTIONS | own_options
        self.fit = fit
        self.node_launches = node_launches
        self.parse_commands = parse_commands

    def parse_command(self, commands: list[list[str]], base: PlanRequest) -> CommandRequest | None:
        return self.parse_commands(commands, base)

    def scheme_ids(self, entry: ModelEntry) -> list[str]:
        return [f.id for f in formats_for(entry)]

    def plan_schemes(self, req: PlanRequest, entry: ModelEntry, profile, gpus: int, nodes: int,
                     options: EngineOptions | None = None) -> list[SchemePlan]:
        return plan_formats(self.name, self.fit, req, entry, profile, gpus, nodes, options=options)

    def plan(self, req: PlanRequest, model: ModelInput, hardware: Hardware, shared: dict | None = None) -> Plan:
        # shared is not used: a checkpoint format's bytes are the published files' of that model
        if model.entry is None:
            raise PlannerError(f"{self.label} serves Hugging Face checkpoints: use --model ID|DIR")
        if req.rpc:
            raise PlannerError(f"--rpc devices are llama.cpp's; {self.label} joins nodes itself (--nodes)")
        entry = model.entry
        if entry.hparams.arch == "deepseek4":
            raise PlannerError(f"{self.label} plans of deepseek4 (DeepSeek-V4: compressed attention caches, "
                               "hyper-connections) are not modelled: plan it with --engine llama.cpp")
        if entry.hparams.arch == "deepseek32":
            raise PlannerError(f"{self.label} plans of deepseek32 (DeepSeek Sparse Attention) are not modelled: "
                               "plan it with --engine llama.cpp")
        schemes = self.plan_schemes(req, entry, hardware.profile, hardware.summary.gpus, req.nodes)
        summary = ModelSummary(id=entry.id, name=entry.name, architecture=entry.hparams.arch,
                               params=schemes[0].params if schemes else 0, layout=None, source=entry.source)
        return Plan(model=summary, engine=self.name, hardware=hardware.summary, context=req.ctx, kv_mode=None,
                    schemes=schemes)

    def node_launches_for(self, req: PlanRequest, entry: ModelEntry, fmt_id: str, gpus: int, nodes: int,
                          options: EngineOptions | None = None) -> list[NodeLaunch]:
        check_counts(gpus, nodes)
        opts = options_from_request(req, options)
        fmt = resolve_format(fmt_id)
        fmt.check_applies(entry)
        return self.node_launches(entry, fmt, gpus, nodes, req.ctx, opts)

    def launch_commands(self, req: PlanRequest, entry: ModelEntry, fmt_id: str, gpus: int, nodes: int,
                        options: EngineOptions | None = None) -> list[list[list[str]]]:
        """Per node, the commands to run in order (argv lists)."""
        return [n.commands for n in self.node_launches_for(req, entry, fmt_id, gpus, nodes, options)]

    def launch(self, plan: Plan, req: PlanRequest, scheme_id: str) -> Launch:
        from planner.remote import is_remote

        if is_remote(req.model):          # hf:// / ms://: the config.json already read for the plan
            from planner.remote.models import remote_model_entry

            entry = remote_model_entry(req.model)
        else:
            entry = resolve_model(req.model)   # planner.model_files: a catalog id or a local folder
        fmt = resolve_format(scheme_id)
        src = local_bf16_checkpoint(req) if fmt.recipe else None
        if src is None:
            launches = self.node_launches_for(req, entry, scheme_id, plan.hardware.gpus, req.nodes)
        else:                                # make the format from the user's BF16 checkpoint first
            step, out = quantize_step(self.name, fmt, src)
            opts = options_from_request(req)
            opts.model_path = out
            launches = self.node_launches_for(req, entry, scheme_id, plan.hardware.gpus, req.nodes, opts)
            launches[0].prelude.append(step)
            notes = [f"first: {fmt.id} made from the BF16 checkpoint {src} by llm-compressor (pip install "
                     f"'dq-planner[compress]')"]
            if fmt.recipe.get("calibration"):
                notes.append(f"{CALIBRATION_PLACEHOLDER}: your calibration text (one sample per line, or JSON "
                             "lines with a \"text\" field)")
            if len(launches) > 1:
                notes.append(f"then copy {out} to the same path on every node")
            launches[0].notes[:0] = notes
        return Launch(lines=print_commands(launches).rstrip("\n").split("\n"), scripts=node_scripts(launches))
