"""Argument lists for llama-quantize, llama-server and the RPC server, built from a plan.

Lists, never shell strings: every path or pattern reaches the child as one argument whatever it contains.
`shell_line()` only renders a list for people (--print-command), quoted so it can be pasted into a shell.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from typing import Sequence

from planner.core.llamacpp.schemes import Scheme
from planner.errors import PlannerError

# Above this many rules a recipe goes to llama-quantize as --tensor-type-file (one token per rule);
# below, as --tensor-type arguments, which show up readably in the printed command.
TENSOR_TYPE_FILE_THRESHOLD = 48


def shell_line(argv: Sequence[str | os.PathLike]) -> str:
    return " ".join(shlex.quote(os.fspath(a)) for a in argv)


def _abs(p: str | os.PathLike) -> str:
    # absolute paths cannot start with '-' (taken for an option) nor be read as an ftype name
    return os.path.abspath(os.fspath(p))


# ---------------------------------------------------------------------------------------------------
# llama-quantize
# ---------------------------------------------------------------------------------------------------

def tensor_type_file_text(scheme: Scheme) -> str:
    """The rules as a --tensor-type-file: llama-quantize reads whitespace-separated name=type tokens."""
    args = scheme.tensor_type_args()
    for a in args:
        if re.search(r"\s", a):
            raise PlannerError(f"recipe {scheme.id}: pattern {a.split('=')[0]!r} contains whitespace, "
                               "which a --tensor-type-file cannot hold")
    return "\n".join(args) + ("\n" if args else "")


def check_rules(scheme: Scheme) -> None:
    """What llama-quantize's own parser would reject (tools/quantize/quantize.cpp parse_tensor_type)."""
    for a in scheme.tensor_type_args():
        pat = a.rsplit("=", 1)[0]
        if "=" in pat:
            raise PlannerError(f"recipe {scheme.id}: pattern {pat!r} contains '=', which llama-quantize "
                               "takes as the end of the tensor name")


def quantize_argv(binary: str | os.PathLike, src: str | os.PathLike, dst: str | os.PathLike | None,
                  scheme: Scheme, *, imatrix: str | os.PathLike | None = None, threads: int | None = None,
                  dry_run: bool = False, tensor_type_file: str | os.PathLike | None = None,
                  allow_requantize: bool = False) -> list[str]:
    """llama-quantize [options] SRC [DST] FTYPE [THREADS].

    The recipe's rules go as --tensor-type PATTERN=TYPE in order (llama-quantize keeps their order and
    takes the first match), or, when `tensor_type_file` is given, as --tensor-type-file (the caller has
    written tensor_type_file_text(scheme) there).
    """
    check_rules(scheme)
    argv = [os.fspath(binary)]
    if imatrix is not None:
        argv += ["--imatrix", _abs(imatrix)]
    if tensor_type_file is not None:
        argv += ["--tensor-type-file", _abs(tensor_type_file)]
    else:
        for a in scheme.tensor_type_args():
            argv += ["--tensor-type", a]
    if allow_requantize:
        # the source holds quantized tensors that change type (DeepSeek-V4's converter writes q8_0 and
        # mxfp4): llama-quantize refuses them without it ("requantizing from type q8_0 is disabled")
        argv.append("--allow-requantize")
    if dry_run:
        argv.append("--dry-run")
    argv.append(_abs(src))
    if not dry_run:
        if dst is None:
            raise ValueError("an output path is needed unless dry_run")
        argv.append(_abs(dst))
    argv.append(scheme.base)
    if threads is not None:
        argv.append(str(threads))
    return argv


# ---------------------------------------------------------------------------------------------------
# RPC devices
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RpcDevice:
    host: str
    port: int
    memory_bytes: int | None = None     # None: ask the server (llama.cpp uses its reported free memory)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def label(self) -> str:
        """How the plan names the device."""
        return f"RPC[{self.endpoint}]"


def parse_rpc(spec: str) -> RpcDevice:
    """HOST:PORT[=MEM], as the plan reads it (planner.core.devices.hardware.parse_rpc: MEM like 24G, 24GiB,
    80GB, 81559MiB, or a bare number of GiB)."""
    from planner.core.devices.hardware import parse_rpc as plan_parse_rpc

    try:
        addr, mem = plan_parse_rpc(spec.strip())
    except PlannerError as e:
        if "--rpc" in str(e):
            raise
        raise PlannerError(f"bad --rpc device '{spec}': {e}") from None
    if addr.startswith("["):                     # [::1]:50052
        host, _, port = addr[1:].partition("]:")
    else:
        host, _, port = addr.rpartition(":")
    if not host or not (0 < int(port) < 65536):
        raise PlannerError(f"bad --rpc device '{spec}'; expected HOST:PORT[=MEM], e.g. 127.0.0.1:50052=24G")
    return RpcDevice(host, int(port), mem)


def parse_rpc_list(specs: Sequence[str] | str | None) -> list[RpcDevice]:
    if specs is None:
        return []
    if isinstance(specs, str):
        specs = [specs]
    out = [parse_rpc(x) for s in specs for x in s.split(",") if x.strip()]
    seen = set()
    for d in out:
        if d.endpoint in seen:
            raise PlannerError(f"bad --rpc: device {d.endpoint} is listed twice")
        seen.add(d.endpoint)
    return out


def rpc_server_argv(binary: str | os.PathLike, port: int, host: str = "127.0.0.1", threads: int | None = None,
                    devices: str | None = None) -> list[str]:
    argv = [os.fspath(binary), "-H", host, "-p", str(port)]
    if threads is not None:
        argv += ["-t", str(threads)]
    if devices:
        argv += ["-d", devices]
    return argv


# ---------------------------------------------------------------------------------------------------
# llama-server
# ---------------------------------------------------------------------------------------------------

@dataclass
class ServerOptions:
    """What llama-server is told, all explicit so that llama.cpp's own fitting changes nothing."""

    model_file: str
    ctx: int
    n_gpu_layers: int                    # n_layer + 1 puts every layer (and the output) on the devices
    tensor_split: list[float] | None = None
    flash_attn: str = "auto"
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    parallel: int = 1
    kv_unified: bool = False             # --kv-unified: the slots share one cache of ctx cells
    ubatch: int = 512
    batch: int = 2048
    n_cpu_moe: int = 0
    override_tensors: list[str] | None = None     # -ot PATTERN=BUFFER values
    main_gpu: int = 0
    split_mode: str = "layer"
    op_offload: bool = True              # False: --no-op-offload
    rpc: list[RpcDevice] | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    threads: int | None = None
    verbosity: int | None = 4            # -lv: the memory lines are info level (3); 4 adds the trace lines
    extra: list[str] | None = None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def server_argv(binary: str | os.PathLike, o: ServerOptions) -> list[str]:
    argv = [os.fspath(binary), "-m", _abs(o.model_file), "--host", o.host, "--port", str(o.port),
            "-c", str(o.ctx), "-ngl", str(o.n_gpu_layers), "-sm", o.split_mode]
    if o.main_gpu:
        argv += ["-mg", str(o.main_gpu)]
    if o.tensor_split:
        argv += ["-ts", ",".join(_num(x) for x in o.tensor_split)]
    argv += ["-fa", o.flash_attn, "-ctk", o.cache_type_k, "-ctv", o.cache_type_v,
             "-np", str(o.parallel), "--kv-unified" if o.kv_unified else "--no-kv-unified",
             "-ub", str(o.ubatch), "-b", str(o.batch)]
    if o.n_cpu_moe:
        argv += ["--n-cpu-moe", str(o.n_cpu_moe)]
    for rule in o.override_tensors or []:        # one -ot each: llama.cpp appends them in order
        argv += ["-ot", rule]
    if not o.op_offload:
        argv.append("--no-op-offload")
    if o.rpc:
        argv += ["--rpc", ",".join(d.endpoint for d in o.rpc)]
    argv += ["--fit", "off"]
    if o.threads is not None:
        argv += ["-t", str(o.threads)]
    if o.verbosity is not None:
        argv += ["-lv", str(o.verbosity)]
    argv += list(o.extra or [])
    return argv


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for llama.cpp children: without LLAMA_ARG_* variables, which llama.cpp reads as
    defaults for options (an inherited LLAMA_ARG_N_GPU_LAYERS would change the planned run)."""
    env = dict(os.environ if base is None else base)
    for k in list(env):
        if k.startswith("LLAMA_ARG_"):
            del env[k]
    return env
