"""The published serving rows (tests/fixtures/serving/published.toml): well formed, sourced, and backed by their text.

Each figure must be readable in the row's verbatim text (the test finds the number there), so a stored figure
cannot drift from its quotation; ids name catalog entries or are declared as catalog gaps.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "fixtures" / "serving" / "published.toml"
KINDS = {"serving", "phase_throughput", "card_single_stream", "card_max_throughput"}
ENGINES = {"vllm", "sglang", "llama.cpp"}
# figures that are quoted, so each must appear in the verbatim text
QUOTED = (
    "ttft_ms_mean", "ttft_ms_median", "tpot_ms_mean", "tpot_ms_median", "itl_ms_mean", "itl_ms_median",
    "ttft_ms", "tpot_ms", "e2e_latency_s", "e2e_latency_ms", "e2e_latency_ms_mean", "e2e_latency_ms_median", "output_tps", "total_tps", "output_tps_per_gpu",
    "total_tps_per_gpu", "requests_per_s", "max_qps", "qpd", "ttft_s_mean", "e2e_latency_s_mean", "throughput_tps", "input_tps_per_node", "output_tps_per_node",
)
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _ids(folder: str) -> set[str]:
    return {tomllib.loads(p.read_text())["id"] for p in (ROOT / "profiles" / folder).glob("*.toml")}


@pytest.fixture(scope="module")
def data() -> dict:
    return tomllib.loads(DATA.read_text())


def _rows(data):
    return data.get("run", []) + data.get("ratio", [])


def test_ids_unique_and_rows_sourced(data):
    rows = _rows(data)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    for r in rows:
        assert r["source"].startswith("https://"), r["id"]
        assert r.get("source_where"), r["id"]
        assert r["verbatim"].strip(), r["id"]
        # the source's date where it is known (YYYY-MM-DD, or YYYY-MM where only the month is)
        assert re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", r.get("published", "0000-00")), r["id"]


def test_ids_name_catalog_entries(data):
    gaps = data["catalog_gaps"]
    models, gpus, formats = _ids("models"), _ids("hardware"), _ids("formats")
    # a gap that the catalog has since gained must leave the list
    assert not set(gaps["gpu"]) & gpus and not set(gaps["format"]) & formats
    for r in _rows(data):
        if "model" in r:
            assert r["model"] in models, (r["id"], r["model"])
        if "gpu" in r:
            assert r["gpu"] in gpus | set(gaps["gpu"]), (r["id"], r["gpu"])
        for key in ("format", "baseline_format"):
            if key in r:
                assert r[key] in formats | set(gaps["format"]), (r["id"], r[key])


def test_runs_are_complete(data):
    for r in data["run"]:
        assert r["kind"] in KINDS and r["engine"] in ENGINES, r["id"]
        assert r["gpus"] >= 1 and r["prompt_tokens"] >= 1 and r["gen_tokens"] >= 1, r["id"]
        measured = [k for k in QUOTED if k in r]
        assert measured, f"{r['id']}: no measured figure"
        if r["kind"] == "card_single_stream":
            assert r["concurrency"] == 1 and "e2e_latency_s" in r, r["id"]
        if r["kind"] == "card_max_throughput":
            assert "max_qps" in r, r["id"]
        if r["kind"] == "serving":
            assert "concurrency" in r or "request_rate" in r, r["id"]
        assert r.get("twin", "exact") in ("exact", "near"), r["id"]
        if r.get("twin"):
            assert "twin" in r["note"], f"{r['id']}: a twin row says so in its note"
        if r["kind"] == "phase_throughput":
            assert r["phase"] in ("prefill", "decode"), r["id"]


def test_every_figure_is_in_its_quotation(data):
    for r in _rows(data):
        quoted = {float(n.replace(",", "")) for n in NUMBER.findall(r["verbatim"])}
        keys = [k for k in QUOTED if k in r] + [k for k in ("ratio", "ratio_low", "ratio_high") if k in r]
        for k in keys:
            assert float(r[k]) in quoted, f"{r['id']}: {k} = {r[k]} is not in its verbatim text"
