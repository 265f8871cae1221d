"""The recommendation's sentences (planner.render.recommendation), the JSON document and the memory
figures the tables and the TUI print: each names the device whose headroom it prints."""

from __future__ import annotations

import re

from rich.console import Console

from planner.core.plan import PlanRequest
from planner.make_plan import make_plan
from planner.render import recommendation as rtext
from planner.render.json_doc import plan_document
from planner.render.table import render_plan
from planner.units import GiB, human
from planner.tui import format as fmt

from test_recommend import H100, r1_plan


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def _text(renderable) -> str:
    c = Console(record=True, width=300, color_system=None)
    c.print(renderable)
    return c.export_text()


def _rpc_plan():
    """Two H100s and a 20 GiB RPC device: the RPC device holds the least, yet has the least headroom."""
    return make_plan(PlanRequest(model="deepseek-r1-distill-qwen-32b", device="h100", gpus=2,
                                 rpc=["127.0.0.1:50052=20G"], schemes=["BF16", "Q8_0", "Q4_K_M", "Q3_K_M"]))


def test_unequal_devices_sentences_name_the_device_whose_headroom_they_print():
    p = _rpc_plan()
    r = p.recommendation
    sp = p.scheme(r.scheme)
    d = sp.tightest_device
    fullest = max(sp.memory.per_device, key=lambda x: x.total_bytes)
    assert d.device.startswith("RPC[") and fullest.device != d.device      # the case that went wrong
    assert d.headroom_bytes == sp.headroom_bytes == min(x.headroom_bytes for x in sp.memory.per_device)
    fit = next(x for x in rtext.reasons(r) if "free" in x)
    m = re.search(r"([\d.]+) GiB on the tightest device \((.+?)\) of ([\d.]+) GiB, ([\d.]+) GiB free", fit)
    assert m[2] == d.device
    assert (m[1], m[3], m[4]) == tuple(_gib(n).split()[0] for n in (d.total_bytes, d.capacity_bytes, d.headroom_bytes))
    assert "1 RPC device(s)" in fit and "2x " in fit
    for line in rtext.alternatives(r):                                 # "fits (X GiB free)" is that device's
        e = next(e for e in r.ranked + r.excluded if line.startswith(e.scheme + ":"))
        assert e.device == p.scheme(e.scheme).tightest_device.device
        if "free)" in line:
            assert f"fits ({_gib(e.headroom_bytes)} free)" in line
    # the table's "tightest device" column and its headroom are one device's
    table = render_plan(p).split("\n\n")[1].splitlines()            # the scheme table
    assert "tightest device" in table[0]
    rows = 0
    for row in table[2:]:
        t = p.scheme(row.split()[0]).tightest_device
        assert f"{human(t.total_bytes)} {human(t.headroom_bytes)}" in " ".join(row.split())
        rows += 1
    assert rows == len(p.schemes)
    # the TUI's fit line: the same device, its headroom, its total and capacity
    fits = _text(fmt.fits_text(sp))
    assert f"{human(d.headroom_bytes)} free on the tightest device ({d.device}: {human(d.total_bytes)} of " \
           f"{human(d.capacity_bytes)})" in fits


def test_json_document_keeps_the_interface_and_adds_the_data():
    p = r1_plan("h100", "NVIDIA H100 SXM 80GB", H100, "CUDA")
    from planner.core.accuracy.recommend import recommend

    p.recommendation = recommend(p)
    doc = plan_document(p)
    rec = doc["recommendation"]
    assert list(rec)[:3] == ["scheme", "reasons", "alternatives"]
    assert rec["scheme"] == "DQ3_K_M"
    assert all(isinstance(x, str) for x in rec["reasons"] + rec["alternatives"])
    assert rec["reasons"] == rtext.reasons(p.recommendation)
    assert [e["scheme"] for e in rec["ranked"]] == ["DQ3_K_M", "Q4_K_M", "UD-Q2_K_XL", "Q3_K_M"]
    assert rec["tie_points"] == p.recommendation.tie_points and rec["basis"] == "suite"
    # every ranked figure is in the sentences, as the ranking line prints it
    ranking_line = next(x for x in rec["reasons"] if "measured scheme(s) that fit" in x)
    for e in rec["ranked"]:
        assert f"{e['scheme']} {e['score']:.2f}" in ranking_line
    assert p.to_dict()["recommendation"]["ranked"] == rec["ranked"]       # the core's document: data only
    assert "reasons" not in p.to_dict()["recommendation"]


def test_tui_accuracy_drop_has_the_sign_of_a_drop():
    """R1 Q4_K_M is 0.68% below FP8 (Official API): the Plan tab must not show it as a gain."""
    p = r1_plan("h100", "NVIDIA H100 SXM 80GB", H100, "CUDA")
    sp = p.scheme("Q4_K_M")
    assert sp.accuracy.drop_pct == 0.68
    row = next(x for x in _text(fmt.summary(p, sp, "h100")).splitlines() if x.startswith("Accuracy"))
    m = re.search(r"(drop )?([+-]?\d+\.\d+)% vs", row)
    change = -float(m[2]) if m[1] else float(m[2])
    assert change == -0.68 and "85.24" in row


def test_tui_devices_row_is_the_fewest_that_would_fit():
    p = r1_plan("h100", "NVIDIA H100 SXM 80GB", H100, "CUDA")
    sp = p.scheme("DQ3_K_M")
    sp.memory.fewest_devices = 6
    row = next(x for x in _text(fmt.summary(p, sp, "h100")).splitlines() if x.startswith("Devices"))
    assert "fewest" in row and "6" in row and "8" in row and "hold it" not in row
