"""What the user can choose, read from the core and the profiles, and the request as command-line options.

The option lists are the core's own (catalog, schemes, hardware profiles, engines, KV modes); nothing here
sizes anything.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import fields, replace
from pathlib import Path

from planner.core.catalog import model_ids
from planner.core.plan import PlanRequest
from planner.core.gguf_plan import KV_MODES
from planner.engines.registry import engine_names
from planner.core.schemes import all_ids
from planner.errors import PlannerError
from planner.core.devices import profiles

# llama.cpp's accepted --cache-type-k/-v values (common/arg.cpp: kv_cache_types)
CACHE_TYPES = ("f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1", "f32")
FLASH_ATTN = ("auto", "on", "off")
TASKS = ("general", "math", "code", "chinese")
PATH_CHOICE = "__path__"
AUTO_DEVICE = "auto"
AUTO_MODEL = "auto"                 # --model auto: the core compares every catalog model with accuracy


def model_options() -> list[tuple[str, str]]:
    # sorted by id, so that a name comes before its longer variants (deepseek-r1, then deepseek-r1-0528)
    return ([(m, m) for m in sorted(model_ids())] + [("auto: every measured model", AUTO_MODEL),
                                                       ("local path...", PATH_CHOICE)])


def scheme_options(ids: list[str] | None = None) -> list[tuple[str, str]]:
    return [(s, s) for s in (ids if ids is not None else all_ids())]


def device_options() -> list[tuple[str, str]]:
    return [("auto (detected)", AUTO_DEVICE)] + [(p, p) for p in profiles()]


def engine_options() -> list[tuple[str, str]]:
    return [(e, e) for e in engine_names()]


def kv_options() -> list[tuple[str, str]]:
    return [(k, k) for k in KV_MODES]


_DEFAULTS = PlanRequest()


def request_args(req: PlanRequest, *, with_model: bool = True) -> list[str]:
    """The plan options that reproduce `req` on the command line (defaults left out)."""
    a: list[str] = []
    if with_model:
        if req.model_file:
            a += ["--model-file", req.model_file]
        elif req.model != _DEFAULTS.model:
            a += ["--model", req.model]
    if req.engine != _DEFAULTS.engine:
        a += ["--engine", req.engine]
    if req.device:
        a += ["--device", req.device]
    if req.device_file:
        a += ["--device", req.device_file]
    if req.gpus is not None:
        a += ["--gpus", str(req.gpus)]
    if req.nodes != _DEFAULTS.nodes:
        a += ["--nodes", str(req.nodes)]
    if req.rpc:
        a += ["--rpc", ",".join(req.rpc)]
    if req.ctx != _DEFAULTS.ctx:
        a += ["--ctx", str(req.ctx)]
    if req.kv_mode:
        a += ["--kv-mode", req.kv_mode]
    if req.layout:
        a += ["--layout", req.layout]
    for flag, name in (("--cache-type-k", "cache_type_k"), ("--cache-type-v", "cache_type_v"),
                       ("--flash-attn", "flash_attn"), ("--parallel", "parallel"), ("--ubatch", "ubatch"),
                       ("--batch", "batch"), ("--n-cpu-moe", "n_cpu_moe"), ("--task", "task")):
        v = getattr(req, name)
        if v != getattr(_DEFAULTS, name):
            a += [flag, str(v)]
    if req.ngl is not None:
        a += ["--ngl", str(req.ngl)]
    if req.tensor_split:
        a += ["--tensor-split", ",".join(f"{x:g}" for x in req.tensor_split)]
    if req.imatrix is True:
        a.append("--imatrix")
    elif req.imatrix is False:
        a.append("--no-imatrix")
    return a


def base_request(req: PlanRequest) -> PlanRequest:
    """The request without the scheme selection: what the all-schemes plan depends on."""
    return replace(req, schemes=None, with_tensors=False)


def same_request(a: PlanRequest, b: PlanRequest) -> bool:
    return all(getattr(a, f.name) == getattr(b, f.name) for f in fields(PlanRequest))


def parse_rpc(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_split(text: str) -> list[float] | None:
    if not text.strip():
        return None
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        raise PlannerError(f"tensor split must be numbers separated by commas, got '{text}'") from None
    if any(p < 0 for p in parts) or not any(p > 0 for p in parts):
        raise PlannerError(f"tensor split needs non-negative proportions, not all zero: '{text}'")
    return parts


def default_gguf_name(model: str, scheme: str) -> str:
    return f"{Path(model).name}-{scheme}.gguf"


def write_new_file(path: str | Path, text: str) -> Path:
    """Write `text` to a new file: never overwrites, never leaves a half-written file behind."""
    p = Path(path).expanduser()
    if p.exists():
        raise PlannerError(f"{p} already exists; choose another name")
    if not p.parent.is_dir():
        raise PlannerError(f"{p.parent} is not a folder")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)          # atomic, and fails if the name was taken meanwhile
        except FileExistsError:
            raise PlannerError(f"{p} already exists; choose another name") from None
        except OSError:
            if p.exists():
                raise PlannerError(f"{p} already exists; choose another name") from None
            os.replace(tmp, p)       # filesystems without hard links
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p
