"""The CUDA memory model against published llama.cpp runs on NVIDIA GPUs (tests/fixtures/cuda_logs)."""

import sys
from pathlib import Path

import pytest

from planner.engines.llamacpp.logs import parse_memory, shows_as_mib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import bench_cuda_logs as bench  # noqa: E402

CASES = bench.load_cases()


def test_every_case_is_a_mainline_file_listed_in_the_readme():
    readme = (bench.CASES / "README.md").read_text()
    for c in CASES:
        assert (bench.CASES / c["file"]).is_file() and not c["file"].startswith("fork/")
        assert c["file"] in readme and c["source"].split()[0] in readme
    for f in (bench.CASES / "fork").glob("*.txt"):
        assert f"fork/{f.name}" in readme and "FORK" in f.read_text().splitlines()[0]


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_model_and_kv_buffers_to_the_mib_and_compute_within_ten_percent(case):
    rows = bench.compare(case)
    assert rows, "no buffer line compared"
    for r in rows:
        if r.kind in ("model", "KV"):
            assert f"{r.planned_mib:.2f}" == f"{r.logged_mib:.2f}", r
        else:
            assert abs(r.error) < 0.10, r


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["file"])
def test_host_compute_buffer_is_the_graph_inputs(case):
    """CUDA_Host holds the graph inputs (with flash attention on or off): the f32 KQ mask [n_kv, T] (f32 even with flash attention), the
    token embeddings [n_embd, T] f32, token ids, positions and output ids: the published pattern
    n_ubatch x (n_ctx + n_embd) x 4 bytes plus 3 x n_ubatch x 4."""
    from planner.core.catalog import catalog
    from planner.core.sizing import resolve_catalog_model

    rep = parse_memory((bench.CASES / case["file"]).read_text().splitlines())
    hp = resolve_catalog_model(catalog()[case["model"]], case.get("layout")).hparams
    t = min(case["ubatch"], case["ctx"])
    pattern = t * (case["ctx"] + hp.n_embd) * 4
    host = rep.compute_mib[f"{case.get('device', 'CUDA')}_Host"]
    assert shows_as_mib(pattern + 3 * t * 4, host)
    assert shows_as_mib(bench.plan_case(case).host.compute_bytes, host)


def test_host_weights_are_copied_to_the_first_gpu_from_32_rows():
    """-ot exps=CPU: ggml-cuda computes ops of at least 32 rows on the GPU, the scheduler copies each host
    weight into the first GPU's compute buffer (one split per weight): the largest expert tensor is
    alive with the feed-forward activations. Below 32 rows (-ub 16) the op stays on the CPU."""
    from planner.core.catalog import catalog
    from planner.core.memory import MemoryOptions, Slot, plan_memory
    from planner.core.schemes import resolve_scheme
    from planner.core.sizing import resolve_catalog_model, size_scheme

    model = resolve_catalog_model(catalog()["deepseek-r1"], "mla")
    sp = size_scheme(model, resolve_scheme("Q4_K_M"))
    biggest = max(t.bytes for t in sp.tensors if "exps" in t.name)
    hp = model.hparams

    def gpu0(ub, rules=(("exps", "CPU"),)):
        mem = plan_memory(hp, sp.tensors, [Slot("CUDA0", 1 << 40), Slot("CUDA1", 1 << 40)],
                          MemoryOptions(ctx=8192, ubatch=ub, batch=max(ub, 2048), tensor_overrides=rules,
                                        backend="CUDA"))
        return mem.per_device[0].compute_bytes, mem.per_device[1].compute_bytes

    on, other = gpu0(512)
    t = 512
    ffn = t * (3 * hp.n_ff_exp * hp.n_expert_used + 3 * hp.n_expert + 2 * hp.n_embd + 6 * hp.n_embd) * 4
    assert on == biggest + ffn                  # the copy with the stage it feeds
    assert other < biggest                      # only the first GPU computes with host weights
    small, _ = gpu0(16)
    assert small < biggest
    none, _ = gpu0(512, rules=())
    assert none < biggest                       # nothing on the host: no copy
