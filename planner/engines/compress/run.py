"""Running llm-compressor on a Hugging Face checkpoint as a child process, publishing its output folder.

- `check_input()`: the input folder holds config.json and weights, in a layout quantized here, not
  already quantized;
- `run_compress()`: the child (planner.engines.compress.worker) writes into a temporary folder beside
  the output (`.OUT.partial-PID`); the tokenizer files are copied in, the result is verified by the
  caller's `verify` and then renamed into place: without `overwrite` never onto an existing path, even one
  that appears at the last moment (two runs into one folder: the first rename wins, the other run is
  told and its folder removed). On failure, Ctrl-C, SIGTERM or SIGHUP the child's process group is
  stopped and the temporary folder removed; the folder of a run killed outright (SIGKILL) is removed
  by the next run into the same output.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from planner.core.catalog import ModelEntry
from planner.core.data_files import read_json_object
from planner.engines.compress.recipe import Recipe
from planner.engines.compress.worker import PREFIX
from planner.engines.llamacpp.process import Child, signal_name, terminate_as_interrupt
from planner.engines.output_files import OutputAppeared, publish_folder, remove_stale_partials, temp_output_path
from planner.errors import PlannerError, RunError

WEIGHT_SUFFIXES = (".safetensors", ".bin")
# files of the input copied beside the quantized weights (what vLLM/SGLang load besides them)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja",
                   "chat_template.json", "generation_config.json")
MAX_COPIED_BYTES = 256 << 20
TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


def check_input(src: Path) -> dict:
    """The input's config.json (PlannerError, exit 2, for a folder that is not an unquantized checkpoint)."""
    if not src.exists():
        raise PlannerError(f"--input {src}: no such folder")
    if not src.is_dir():
        raise PlannerError(f"--input {src}: not a folder (give the Hugging Face checkpoint's folder)")
    cfg_path = src / "config.json"
    if not cfg_path.exists():
        raise PlannerError(f"--input {src}: no config.json in this folder")
    cfg = read_json_object(cfg_path, "config")
    try:
        names = os.listdir(src)
    except OSError as e:
        raise PlannerError(f"--input {src}: cannot list the folder ({e.strerror or e})") from None
    if not any(n.endswith(WEIGHT_SUFFIXES) for n in names):
        raise PlannerError(f"--input {src}: no weights (*.safetensors) in this folder")
    qc = cfg.get("quantization_config")
    if isinstance(qc, dict):
        raise PlannerError(f"--input {src}: already quantized ({qc.get('quant_method', 'quantization_config')}); "
                           "quantize from the BF16 checkpoint")
    return cfg


def has_tokenizer(src: Path) -> bool:
    return any((src / n).is_file() for n in TOKENIZER_MARKERS)


def check_library() -> None:
    import importlib.util

    missing = [m for m in ("llmcompressor", "torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise PlannerError(f"{', '.join(missing)} not installed: quantizing for vLLM/SGLang needs llm-compressor "
                           "(pip install 'dq-planner[compress]')")


# ---------------------------------------------------------------------------------------------------
# the output folder

def check_output(dst: Path, src: Path, force: bool) -> None:
    if not dst.parent.is_dir():
        raise PlannerError(f"--output {dst}: folder {dst.parent} does not exist")
    if os.path.lexists(dst):
        if not force:
            raise PlannerError(f"--output {dst} exists; pass --force to replace it")
        if dst.is_symlink() or not dst.is_dir():
            raise PlannerError(f"--output {dst} exists and is not a folder; not replacing it")
        try:
            if os.path.samefile(dst, src) or src.resolve().is_relative_to(dst.resolve()):
                raise PlannerError("--output is the input folder (or holds it); choose another")
        except OSError:
            pass
    if not os.access(dst.parent, os.W_OK):
        raise PlannerError(f"--output {dst}: folder {dst.parent} is not writable")


def copy_side_files(src: Path, tmp: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        s, d = src / name, tmp / name
        if d.exists() or not s.is_file() or s.stat().st_size > MAX_COPIED_BYTES:
            continue
        shutil.copyfile(s, d)
        copied.append(name)
    return copied


# ---------------------------------------------------------------------------------------------------
# the child

@dataclass
class CompressResult:
    argv: list[str]
    seconds: float
    device: str
    lines: list[str] = field(default_factory=list)


def child_env(td: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               HF_DATASETS_CACHE=os.path.join(td, "datasets"), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _last_error(lines: list[str]) -> str:
    for line in reversed(lines):
        if line.startswith(PREFIX):
            try:
                doc = json.loads(line[len(PREFIX):])
            except ValueError:
                continue
            if doc.get("stage") == "error":
                return str(doc.get("message"))
    tail = [x.strip() for x in lines if x.strip()]
    return tail[-1] if tail else "no output"


def run_compress(src: Path, dst: Path, entry: ModelEntry, recipe: Recipe, *, calibration: list[str] | None,
                 max_seq_len: int, threads: int | None, overwrite: bool,
                 verify: Callable[[Path], None],
                 on_start: Callable[[Child], None] | None = None,
                 on_stage: Callable[[dict], None] | None = None) -> CompressResult:
    """Quantize `src` into `dst`. `verify(folder)` checks the finished temporary folder before it is
    published (raising keeps it from being published; the folder is removed). RunError for a failed
    child, OutputAppeared when another run published `dst` first; KeyboardInterrupt (also SIGTERM,
    SIGHUP) after stopping the child. The temporary folder never outlives the call."""
    remove_stale_partials(dst)
    tmp = temp_output_path(dst)
    t0 = time.monotonic()
    child: Child | None = None
    ok = False
    device = "cpu"
    with tempfile.TemporaryDirectory(prefix="dq-planner-compress-") as td:
        spec = {"input": os.path.abspath(src), "output": os.path.abspath(tmp), "recipe": recipe.to_json(),
                "calibration": calibration, "max_seq_len": max_seq_len, "threads": threads}
        spec_path = Path(td) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        argv = [sys.executable, "-m", "planner.engines.compress.worker", str(spec_path)]
        try:
            with terminate_as_interrupt():
                try:
                    os.mkdir(tmp)
                except OSError as e:
                    raise RunError(f"--output {dst}: cannot create {tmp.name} in {dst.parent} "
                                   f"({e.strerror or e})") from None
                # the worker imports planner from wherever this process does
                env = child_env(td)
                root = str(Path(__file__).resolve().parents[3])
                env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
                child = Child(argv, env=env, cwd=td, keep_lines=2000)
                if on_start is not None:
                    on_start(child)
                for line in child.iter_lines():
                    if not line.startswith(PREFIX):
                        continue
                    try:
                        doc = json.loads(line[len(PREFIX):])
                    except ValueError:
                        continue
                    if doc.get("stage") == "loaded":
                        device = str(doc.get("device", device))
                    if on_stage is not None:
                        on_stage(doc)
                rc = child.wait()
                if rc != 0:
                    sig = signal_name(rc)
                    err = _last_error(child.all_lines)
                    if sig is not None:
                        raise RunError(f"llm-compressor was killed by {sig} (out of memory?); last output: {err}")
                    hint = ""
                    if "No space left" in err or "errno 28" in err.lower():
                        hint = f" (the disk of {dst.parent} is full)"
                    raise RunError(f"llm-compressor failed (exit {rc}): {err}{hint}")
                copy_side_files(src, tmp)
                verify(tmp)
                try:
                    publish_folder(tmp, dst, overwrite=overwrite)
                except FileExistsError:
                    raise OutputAppeared(f"{dst} appeared while quantizing (another run?); not replacing it "
                                         "(--force would): this run's result was removed") from None
                except OSError as e:
                    if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                        raise OutputAppeared(f"{dst} appeared while quantizing (another run?); not replacing "
                                             "it: this run's result was removed") from None
                    raise RunError(f"cannot rename {tmp} to {dst}: {e.strerror or e}") from None
                ok = True
        finally:
            if child is not None:
                child.stop()
            if not ok:
                shutil.rmtree(tmp, ignore_errors=True)
    return CompressResult(argv, time.monotonic() - t0, device, child.all_lines if child else [])
