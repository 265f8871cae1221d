"""A pasted llama.cpp command line (llama-server, llama-cli, llama-bench ...) as a plan request.

`dq-planner --headless --from-command 'llama-server -m F.gguf -ngl 99 -ot exps=CPU -c 32768'` plans the
run the user pasted. The flags follow llama.cpp's common/arg.cpp: short and long spellings, values in
the next word or after '=', -ot repeatable (and comma-separated inside one value, as
parse_tensor_buffer_overrides splits it), -fa with or without a value (older builds took none).

Flags that change memory and are planned: -m, -c, -ngl, -ts, -ot, --cpu-moe, --n-cpu-moe, -fa, -ub, -b,
-ctk, -ctv, -np, -mg, -sm (layer, none), --rpc, --kv-unified (one cache of -c cells), --no-op-offload /
--op-offload. Flags that change memory and
are not modelled are refused in one line (exit 2). Flags known not to change memory are accepted and listed in a note.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import replace

from planner.core.engine import CommandRequest
from planner.core.llamacpp.memory import FFN_EXPS_REGEX
from planner.core.plan import PlanRequest
from planner.errors import PlannerError
from planner.options import OPTIONS, split_list
from planner.engines.command_text import program_name
from planner.safe_text import printable


# planned flags: spelling -> request field; llama.cpp's spellings of the plan options (planner/options.py
# Option.llama_cpp), and -m/--model, which names the GGUF (dq-planner's --model is a catalog id)
_PLANNED: dict[str, str] = {f: o.dest for o in OPTIONS for f in o.llama_cpp if o.dest != "flash_attn"}
_PLANNED.update({"-m": "model_file", "--model": "model_file"})

# memory-changing flags the planner does not model: refused
_UNMODELLED = {
    "-nkvo": "the KV cache on the host", "--no-kv-offload": "the KV cache on the host",
    "-dev": "a device subset", "--device": "a device subset",
    "-md": "a draft model", "--model-draft": "a draft model", "-ngld": "a draft model", "--gpu-layers-draft": "a draft model",
    "--mmproj": "a multimodal projector", "-mm": "a multimodal projector", "--mmproj-url": "a multimodal projector",
    "--lora": "LoRA adapters", "--lora-scaled": "LoRA adapters",
    "--swa-full": "a full-size SWA cache",
    "-ncffn": "dense FFN weights on the CPU", "--n-cpu-ffn": "dense FFN weights on the CPU",
    "--override-kv": "metadata overrides", "-dt": "KV defragmentation", "--defrag-thold": "KV defragmentation",
    "-cram": "a host prompt cache", "--cache-ram": "a host prompt cache",
    "-fitt": "llama.cpp's own fitting target", "--fit-target": "llama.cpp's own fitting target",
    "-fitc": "llama.cpp's own fitting context", "--fit-ctx": "llama.cpp's own fitting context",
    "--spec-type": "speculative decoding", "-hf": "a model from Hugging Face", "-hfr": "a model from Hugging Face",
    "--hf-repo": "a model from Hugging Face", "-mu": "a model URL", "--model-url": "a model URL",
}

# flags known not to change the memory llama.cpp allocates, with the number of values they take
_NEUTRAL: dict[str, int] = {}
for _names, _arity in (
    (("--host", "--port", "-t", "--threads", "-tb", "--threads-batch", "--threads-http", "-a", "--alias",
      "--temp", "--top-p", "--top-k", "--min-p", "--repeat-penalty", "--repeat-last-n", "--presence-penalty",
      "--frequency-penalty", "-s", "--seed", "-n", "--n-predict", "--predict", "--api-key", "--api-key-file",
      "--chat-template", "--chat-template-file", "--reasoning-format", "--reasoning-budget", "--prio",
      "--prio-batch", "--numa", "-lv", "--verbosity", "--log-verbosity", "--log-file", "--timeout", "-to",
      "--slot-save-path", "--path", "--api-prefix", "-C", "--cpu-mask", "-Cb", "--cpu-mask-batch", "--cpu-range",
      "--poll", "--keep", "--samplers", "--dry-multiplier", "--mirostat", "--typical", "--xtc-probability",
      "--xtc-threshold", "--top-nsigma", "--ctx-checkpoints", "-p", "--prompt", "-f", "--file", "-sys",
      "--system-prompt", "--rope-scaling", "--rope-scale", "--rope-freq-base", "--rope-freq-scale",
      "--yarn-orig-ctx", "-r", "--reverse-prompt", "--grammar", "--grammar-file", "-j", "--json-schema",
      "--media-path", "--sleep-idle-seconds", "-ps", "--slot-prompt-similarity", "--ssl-key-file",
      "--ssl-cert-file", "--chat-template-kwargs", "--tools", "-lm", "--load-mode"), 1),
    (("--jinja", "--no-jinja", "--mlock", "--no-mmap", "--mmap", "-v", "--verbose", "--no-warmup", "--warmup",
      "--metrics", "--slots", "--no-slots", "--props", "--cont-batching", "-cb", "--no-cont-batching", "-nocb",
      "--no-webui", "--webui", "-cnv", "--conversation", "-no-cnv", "--no-conversation", "-i", "--interactive",
      "--log-disable", "--log-colors", "--log-prefix", "--log-timestamps", "--no-perf", "--perf", "-sp",
      "--special", "--embedding", "--embeddings", "--reranking", "--no-context-shift", "--context-shift",
      "--check-tensors", "--escape", "--no-escape", "-st", "--single-turn", "--direct-io", "--no-direct-io",
      "--offline", "--simple-io", "--no-display-prompt", "-e"), 0),
):
    for _n in _names:
        _NEUTRAL[_n] = _arity

_FA = {"on": "on", "off": "off", "auto": "auto", "1": "on", "0": "off", "true": "on", "false": "off",
       "enabled": "on", "disabled": "off"}
_KNOWN_BINARIES = ("llama-server", "llama-cli", "llama-bench", "llama-completion", "llama-fit-params",
                   "llama-perplexity", "llama-batched-bench", "server", "main")



_STOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def _int(flag: str, v: str, low: int = 0, notes: list[str] | None = None) -> int:
    """An integer argument as llama.cpp reads it (common/arg.cpp: std::stoi): leading white space, a
    sign and ASCII digits, the rest ignored (`-c 32_768` is 32: a note says so); no digit at all, or
    another script's digits, is refused as llama.cpp refuses it; so is a value outside 32 bits."""
    m = _STOI.match(v)
    if not m:
        raise PlannerError(f"--from-command: {flag} must be an integer, got {printable(v)!r} (llama.cpp's "
                           "std::stoi refuses it)")
    n = int(m[1])
    if not -(1 << 31) <= n < 1 << 31:
        raise PlannerError(f"--from-command: {flag} {n} is outside llama.cpp's 32-bit integers")
    if m.end() != len(v) and notes is not None:
        notes.append(f"{flag} {printable(v)}: llama.cpp reads {n} (std::stoi stops at "
                     f"{printable(v[m.end()])!r}), so the plan is of {n}")
    if n < low:
        raise PlannerError(f"{flag} must be at least {low}, got {n}")
    return n


def _converted(conv, v: str):
    """A value read by one of the plan options' converters (planner.options), as a PlannerError."""
    try:
        return conv(v)
    except argparse.ArgumentTypeError as e:
        raise PlannerError(str(e)) from None


def parse_command(text: str, base: PlanRequest | None = None) -> CommandRequest:
    """The PlanRequest of a pasted llama.cpp command line (over `base`, the other plan options)."""
    try:
        words = shlex.split(text, comments=False)
    except ValueError as e:
        raise PlannerError(f"--from-command: cannot split the command line: {e}") from None
    if not words:
        raise PlannerError("--from-command: the command line is empty")
    prog = words[0]
    name = program_name(prog)
    if name not in _KNOWN_BINARIES:
        raise PlannerError(f"--from-command: '{prog}' is not a llama.cpp program ({', '.join(_KNOWN_BINARIES[:4])}, ...)")
    return _parse_words(words, name, base or PlanRequest())


def parse_commands(commands: list[list[str]], base: PlanRequest) -> CommandRequest | None:
    """The plan request of a llama.cpp deployment's commands: one llama.cpp program (llama-server ...),
    with the rpc-server commands of the other nodes (read by planner.engines.llamacpp.rpc_servers); None
    when no command is a llama.cpp program."""
    mains = [c for c in commands if program_name(c[0]) in _KNOWN_BINARIES]
    if not mains:
        return None
    if len(mains) > 1:
        raise PlannerError(f"--from-command: {len(mains)} llama.cpp programs; a deployment runs one, on the head")
    from planner.engines.llamacpp.rpc_servers import RPC_SERVER, read_rpc_servers

    others = [c for c in commands if c is not mains[0]]
    bad = [c for c in others if program_name(c[0]) != RPC_SERVER]
    if bad:
        raise PlannerError(f"--from-command: '{printable(bad[0][0])}' is not part of a llama.cpp deployment "
                           "(a llama.cpp program and the rpc-server of other nodes)")
    servers = read_rpc_servers(others)
    parsed = _parse_words(mains[0], program_name(mains[0][0]), base)
    if servers:
        parsed.notes.append(servers.note(parsed.request.rpc))
    return parsed


def _parse_words(words: list[str], name: str, req: PlanRequest) -> CommandRequest:
    kw: dict = {}
    overrides: list[str] = []
    neutral: list[str] = []
    notes: list[str] = []
    i = 1
    while i < len(words):
        w = words[i]
        i += 1
        flag, eq, inline = w.partition("=") if w.startswith("--") else (w, "", "")
        if not flag.startswith("-") or flag == "-":
            raise PlannerError(f"--from-command: unexpected word '{w}' (llama.cpp takes no positional arguments)")

        def value() -> str:
            nonlocal i
            if eq:
                return inline
            if i >= len(words):
                raise PlannerError(f"--from-command: {flag} needs a value")
            i += 1
            return words[i - 1]

        if flag in ("-fa", "--flash-attn"):
            nxt = inline if eq else (words[i] if i < len(words) else "")
            if nxt.lower() in _FA:
                kw["flash_attn"] = _FA[nxt.lower()]
                if not eq:
                    i += 1
            elif eq:
                raise PlannerError(f"--from-command: {flag} takes on, off or auto, got '{inline}'")
            else:
                kw["flash_attn"] = "on"          # older builds: -fa alone turns it on
            continue
        if flag in ("-cmoe", "--cpu-moe"):
            overrides.append(f"{FFN_EXPS_REGEX}=CPU")
            continue
        if flag in ("--no-op-offload", "--op-offload"):
            kw["op_offload"] = flag == "--op-offload"
            continue
        if flag in ("-kvu", "--kv-unified"):
            kw["kv_unified"] = True
            continue
        if flag in ("-no-kvu", "--no-kv-unified"):
            kw["kv_unified"] = False
            continue
        if flag == "--fit":
            v = value()
            if v.lower() not in ("off", "0", "false"):
                notes.append(f"--fit {v}: llama.cpp may change -ngl/-ot/-c to fit free memory; "
                             "the plan is of the flags as written")
            continue
        if flag in _PLANNED:
            dest = _PLANNED[flag]
            v = value()
            if dest == "tensor_overrides":
                overrides += [x for x in v.split(",") if x]
            elif dest in ("ctx", "ubatch", "batch", "parallel"):
                n = _int(flag, v, 0 if dest == "ctx" else 1, notes)
                if dest == "ctx" and n == 0:
                    raise PlannerError("--from-command: -c 0 takes the model's training context; give it "
                                       "explicitly (the planner does not read it from the command)")
                kw[dest] = n
            elif dest == "ngl":
                if v.lower() in ("auto", "all"):
                    kw["ngl"] = None
                else:
                    n = _int(flag, v, -(1 << 31), notes)
                    kw["ngl"] = None if n < 0 else n
            elif dest in ("n_cpu_moe", "main_gpu"):
                kw[dest] = _int(flag, v, 0, notes)
            elif dest == "tensor_split":
                kw[dest] = _converted(split_list, v)
            elif dest == "split_mode":
                if v == "row":
                    raise PlannerError("--from-command: -sm row (matrices split by rows across GPUs) is not "
                                       "modelled; use -sm layer or none")
                if v not in ("layer", "none"):
                    raise PlannerError(f"--from-command: unknown -sm '{v}'; valid: none, layer, row")
                kw[dest] = v
            elif dest == "rpc":
                # llama.cpp's --rpc names no memory: the same device given to dq-planner as HOST:PORT=MEM keeps it
                given = {x.partition("=")[0]: x for x in req.rpc}
                kw[dest] = [given.get(x.partition("=")[0], x) for x in v.split(",") if x]
            elif dest == "model_file":
                kw[dest] = v
            else:
                kw[dest] = v
            continue
        if flag in _UNMODELLED:
            raise PlannerError(f"--from-command: {flag} ({_UNMODELLED[flag]}) changes memory and is not modelled")
        if flag in _NEUTRAL:
            for _ in range(_NEUTRAL[flag]):
                if not eq:
                    value()
            neutral.append(flag)
            continue
        raise PlannerError(f"--from-command: {flag} is not a llama.cpp flag the planner knows; "
                           "remove it if it does not change memory")
    if name == "llama-server" and "parallel" not in kw:
        # common/arg.cpp: llama-server's slots default to auto (-1); tools/server/server.cpp makes auto 4
        # slots over one unified KV cache of -c cells (unless the command turns it off)
        kw["parallel"] = 4
        kw.setdefault("kv_unified", True)
        notes.append("llama-server without -np runs 4 slots" + (" over one unified KV cache of -c cells; planned so"
                                                                 if kw["kv_unified"] else "; planned so"))
    if "model_file" not in kw:
        raise PlannerError("--from-command: the command has no -m MODEL.gguf")
    if overrides:
        kw["tensor_overrides"] = overrides
    if neutral:
        notes.append("accepted, memory unchanged: " + " ".join(dict.fromkeys(neutral)))
    if req.nodes > 1:
        # one llama.cpp process drives the deployment: the other nodes' GPUs are its --rpc devices
        notes.append(f"--nodes {req.nodes}: a llama.cpp command runs on one node; the other nodes' devices are "
                     "its --rpc devices (rpc-server on each of them)")
    kw.update(engine="llama.cpp", nodes=1)
    return CommandRequest(replace(req, **kw), name, notes)
