"""deepseek32 compute buffers (the lightning indexer's graph, planner/core/llamacpp/memory.py _dsa_attention_bytes)
against the real llama.cpp.

- Tiny generated deepseek32 models, real llama-completion runs on the CPU: the per-cell terms derived
  from the graph are exact (the compute buffer grows by n_kv x T x 8 bytes with flash attention: the
  indexer scores f32 and the two f16 masks; by n_kv x T x 22 plus the latent V copy without it, with
  two heads: KQ, the f32 MLA mask, the indexer's f16 mask, the filled mask and the sparse mask), and over
  a grid of contexts, ubatch sizes, flash attention on/off and slots the plan follows llama.cpp's
  "compute buffer size" (median and worst error asserted and printed).
- Full scale: the `dq-planner header` file of DeepSeek-V3.2 placed by llama-fit-params over four loopback
  RPC devices (CPU backend) with even and uneven --tensor-split, 8K to 128K cells, flash attention on and
  off: the plan's compute buffer of every device is within 5% of llama.cpp's estimate.
"""

from __future__ import annotations

import statistics
import subprocess
from dataclasses import replace

import pytest

from llamacpp_support import dq, require_llama_cpp, run_logged
from planner.core.plan import PlanRequest
from planner.engines.llamacpp.logs import parse_memory
from planner.gguf.writer import model_from_hparams, write_gguf
from planner.make_plan import make_plan
from test_memory_llamacpp import rpc_servers  # noqa: F401  (the fixture: four loopback rpc-servers)
from test_newgen_deepseek32 import tiny_deepseek32_hparams

MiB = 1 << 20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny deepseek32 of test_newgen_deepseek32 (4 indexer heads of 128, top-k 256, 3 blocks in the
    graph), a variant with 32 indexer heads and top-k 128 (its peak is the indexer's query projection, not
    the scores) and one of 6 blocks in the graph (the top-k zeros of 5 later layers alive in the first)."""
    out = {}
    d = tmp_path_factory.mktemp("dsa")
    for name, hp in (("ih4", tiny_deepseek32_hparams()),
                     ("ih32", tiny_deepseek32_hparams(indexer_n_head=32, indexer_top_k=128)),
                     ("L6", tiny_deepseek32_hparams(n_layer=7))):
        out[name] = write_gguf(d / f"{name}.gguf", model_from_hparams(hp, id=f"tiny-ds32-{name}"))[0]
    return out


def _run(path, ctx: int, ub: int, fa: str, np_: int = 1) -> tuple[float, float]:
    """(llama.cpp's CPU compute buffer, the plan's), MiB."""
    exe = str(require_llama_cpp("llama-completion").binary("llama-completion"))
    b = max(ub, 2048)
    cmd = [exe, "-m", str(path), "-c", str(ctx), "-n", "1", "-p", "hi", "-no-cnv", "-lv", "4", "-t", "1",
           "--no-warmup", "-np", str(np_), "-fa", fa, "-ngl", "0", "-ub", str(ub), "-b", str(b)]
    r = run_logged(cmd, needs=r"CPU compute buffer size")
    rep = parse_memory(r.stderr.splitlines())
    assert "CPU" in rep.compute_mib, r.stderr[-3000:]
    plan = make_plan(PlanRequest(model_file=str(path), device="h100", gpus=1, ngl=0, ctx=ctx, parallel=np_,
                                 flash_attn=fa, ubatch=ub, batch=b))
    return rep.compute_mib["CPU"], plan.schemes[0].memory.host.compute_bytes / MiB


def test_per_cell_terms_are_exact(tiny):
    """Doubling the cells from 4096 to 8192 (ubatch 512): llama.cpp's buffer and the plan's grow alike."""
    t, cells = 512, 4096
    hp = tiny_deepseek32_hparams()
    on = [_run(tiny["ih4"], c, t, "on") for c in (cells, 2 * cells)]
    off = [_run(tiny["ih4"], c, t, "off") for c in (cells, 2 * cells)]
    want_on = cells * t * 8
    want_off = cells * t * (4 * hp.n_head + 4 + 2 + 2 * 4) + cells * hp.n_lora_kv * 2
    assert round((on[1][0] - on[0][0]) * MiB) == want_on == round((on[1][1] - on[0][1]) * MiB)
    assert round((off[1][0] - off[0][0]) * MiB) == want_off == round((off[1][1] - off[0][1]) * MiB)


GRID = [(c, u, f, n) for c in (1024, 4096) for u in (128, 512) for f in ("on", "off") for n in (1, 2)]


@pytest.mark.parametrize("kind", ["ih4", "ih32", "L6"])
def test_grid_follows_llama_cpp(tiny, kind):
    errs = []
    for ctx, ub, fa, np_ in GRID:
        got, plan = _run(tiny[kind], ctx, ub, fa, np_)
        errs.append((plan - got) / got)
        print(f"{kind} -c {ctx} -ub {ub} -fa {fa} -np {np_}: llama.cpp {got:.2f} MiB, plan {plan:.2f} MiB "
              f"({100 * errs[-1]:+.1f}%)")
    med, worst = statistics.median(abs(e) for e in errs), max(errs, key=abs)
    print(f"{kind}: median |error| {100 * med:.1f}%, worst {100 * worst:+.1f}%")
    assert med < 0.05 and abs(worst) < 0.15


@pytest.mark.parametrize("split,ctx,fa", [("3,1,2,1", 32768, "on"), ("1,1,1,1", 32768, "on"), ("3,1,2,1", 8192, "on"),
                                         ("1,1,1,1", 131072, "on"), ("3,1,2,1", 32768, "off")])
def test_full_scale_rpc_compute(rpc_servers, tmp_path_factory, split, ctx, fa):  # noqa: F811
    require_llama_cpp("llama-fit-params")
    out = tmp_path_factory.getbasetemp() / "v32-q4_k_m-compute.gguf"
    if not out.exists():
        r = dq("header", "--model", "deepseek-v3.2", "--scheme", "Q4_K_M", "--output", out)
        assert r.returncode == 0, r.stderr
    theirs = _fit_params(out, split, rpc_servers, ctx, fa)
    plan = make_plan(PlanRequest(model="deepseek-v3.2", device="h100", gpus=1, ngl=None, schemes=["Q4_K_M"],
                                 ctx=ctx, tensor_split=[float(x) for x in split.split(",")] + [0.0],
                                 rpc=list(rpc_servers), flash_attn=fa))
    rpc = [d for d in plan.scheme("Q4_K_M").memory.per_device if d.device.startswith("RPC")]
    for i, d in enumerate(rpc):
        got = theirs[f"RPC{i}"].compute_mib
        print(f"-c {ctx} -fa {fa} -ts {split} RPC{i} ({len(d.layers)} layers): llama.cpp {got} MiB, plan {d.compute_bytes / MiB:.0f} MiB "
              f"({100 * (d.compute_bytes / MiB - got) / got:+.1f}%)")
        assert abs(d.compute_bytes / MiB - got) / got < 0.05


def _fit_params(model, split: str, rpc: list[str], ctx: int, fa: str) -> dict:
    """llama-fit-params' per-device estimate (as fit_params_by_device, with -fa as given)."""
    from planner.engines.llamacpp.logs import parse_fit_params

    exe = str(require_llama_cpp("llama-fit-params").binary("llama-fit-params"))
    r = subprocess.run([exe, "-m", str(model), "-c", str(ctx), "-fa", fa, "-ngl", "99", "-ts", split, "--rpc",
                        ",".join(rpc), "--fit", "off", "--fit-print", "on"],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-2000:]
    fit = parse_fit_params(r.stdout.splitlines())
    return {d.name.split("[")[0] if d.name.startswith("RPC") else d.name: d for d in fit.devices}
