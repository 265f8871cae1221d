"""npu-smi: the parser on real captured outputs (tests/fixtures/npu-smi/), mapping, visibility, and the runner."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from planner.hardware import detect, npu_smi, nvml
from planner.hardware.host import host_info

FIX = Path(__file__).parent / "fixtures" / "npu-smi"
MiB = 1 << 20


def parse(name: str) -> npu_smi.NpuSmiReport:
    return npu_smi.parse_npu_smi_info((FIX / f"{name}.txt").read_text())


def assemble(rep: npu_smi.NpuSmiReport, env: dict | None = None) -> detect.Detection:
    return detect.assemble(nvml.NvmlReport(error="no NVIDIA"), rep, host_info(), env or {})


def test_910b3_node_idle():
    rep = parse("910b3-x8-idle")
    assert (rep.npu_smi_version, rep.driver_version) == ("23.0.7", "23.0.7")
    assert [c.npu for c in rep.chips] == list(range(8))
    assert {c.name for c in rep.chips} == {"910B3"} and {c.health for c in rep.chips} == {"OK"}
    assert [c.bus_id for c in rep.chips] == ["0000:C1:00.0", "0000:C2:00.0", "0000:81:00.0", "0000:82:00.0",
                                             "0000:01:00.0", "0000:02:00.0", "0000:41:00.0", "0000:42:00.0"]
    assert [c.memory_used_bytes // MiB for c in rep.chips] == [3338, 3337, 3334, 3334, 3334, 3334, 3334, 3338]
    assert {c.memory_total_bytes for c in rep.chips} == {65536 * MiB}
    assert all(c.chip == 0 and c.phy_id is None and c.processes == 0 for c in rep.chips)


def test_910b4_node_busy_reads_pairs_without_space_and_processes():
    rep = parse("910b4-x8-busy")
    assert [c.memory_used_bytes // MiB for c in rep.chips] == [29589, 29578, 29577, 29578, 2827, 2828, 2827, 2829]
    assert {c.memory_total_bytes for c in rep.chips} == {32768 * MiB}
    assert [c.processes for c in rep.chips] == [1, 1, 1, 1, 0, 0, 0, 0]
    assert [c.aicore_pct for c in rep.chips][:4] == [8.0, 8.0, 7.0, 8.0]


def test_atlas_a3_two_chips_per_npu_with_phy_id():
    rep = parse("atlas-a3-x16-busy")
    assert len(rep.chips) == 16 and rep.driver_version == "25.2.1"
    assert [(c.npu, c.chip, c.phy_id) for c in rep.chips[:4]] == [(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3)]
    assert rep.chips[15].phy_id == 15 and rep.chips[15].bus_id == "0000:83:00.0"
    assert rep.chips[0].memory_used_bytes == 26690 * MiB and rep.chips[0].memory_free_bytes == (65536 - 26690) * MiB
    assert all(c.processes == 1 for c in rep.chips)


def test_not_an_npu_smi_table():
    with pytest.raises(ValueError, match="no NPU chip rows"):
        npu_smi.parse_npu_smi_info("npu-smi: command failed\n+----+\n| nothing |\n")


def test_910b3_node_plans_with_free_memory_less_cann_context():
    det = assemble(parse("910b3-x8-idle"))
    assert det.profile == "910b"
    hw = detect.hardware_for_plan(det)
    assert hw.labels == [f"CANN{i}" for i in range(8)] and hw.env == {}
    used = [3338, 3337, 3334, 3334, 3334, 3334, 3334, 3338]
    assert hw.capacities == [(65536 - u - 192) * MiB for u in used]
    assert hw.profile.id == "910b" and not hw.mixed
    assert "8 x 910B3" in hw.notes[0] and "192 MiB" in hw.notes[0]
    d = det.to_dict()
    assert d["profile"] == "910b" and d["accelerators"][0]["vendor"] == "huawei"
    assert d["ascend"]["driver_version"] == "23.0.7"


def test_32gb_910b4_gets_a_generic_profile_and_busy_chips_are_named():
    hw = detect.hardware_for_plan(assemble(parse("910b4-x8-busy")))
    assert hw.profile.generic and hw.profile.name == "910B4" and hw.profile.memory_bytes == 32768 * MiB
    assert hw.capacities[0] == (32768 - 29589 - 192) * MiB and hw.capacities[7] == (32768 - 2829 - 192) * MiB
    busy = [n for n in hw.notes if "in use by other processes" in n]
    assert busy and busy[0].startswith("CANN0, CANN1, CANN2, CANN3:")


def test_ascend_rt_visible_devices_selects_and_renumbers():
    det = assemble(parse("910b3-x8-idle"), {"ASCEND_RT_VISIBLE_DEVICES": "6,7,x,1"})
    assert [(a.index, a.label) for a in det.planned] == [(6, "CANN0"), (7, "CANN1")]
    assert any("'x'" in n for n in det.notes)
    assert det.accelerators[1].why_not_planned == "hidden by ASCEND_RT_VISIBLE_DEVICES"


def test_unhealthy_chip_is_left_out_and_the_rest_pinned():
    # the idle 910B3 capture with NPU 3 reported in alarm (only its Health cell changed)
    lines = (FIX / "910b3-x8-idle.txt").read_text().splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith("| 3     910B3"))
    lines[i] = lines[i].replace("| OK            |", "| Alarm         |")
    det = assemble(npu_smi.parse_npu_smi_info("\n".join(lines)))
    assert det.accelerators[3].why_not_planned == "health Alarm"
    assert [a.label for a in det.planned] == [f"CANN{i}" for i in range(7)]
    assert det.env == {"ASCEND_RT_VISIBLE_DEVICES": "0,1,2,4,5,6,7"}
    assert any("ASCEND_RT_VISIBLE_DEVICES=0,1,2,4,5,6,7" in n for n in detect.hardware_for_plan(det).notes)


def _fake_npu_smi(tmp_path: Path, body: str) -> dict:
    exe = tmp_path / "npu-smi"
    exe.write_text(f"#!{sys.executable}\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_runner_reads_a_real_npu_smi_output_through_a_subprocess(tmp_path, monkeypatch):
    src = FIX / "910b3-x8-idle.txt"
    env = _fake_npu_smi(tmp_path, f"import sys\nassert sys.argv[1:] == ['info']\nprint(open({str(src)!r}).read())")
    monkeypatch.setenv("PATH", env["PATH"])
    rep = npu_smi.query()
    assert rep.available and len(rep.chips) == 8 and rep.chips[7].memory_used_bytes == 3338 * MiB


def test_runner_times_out_and_reports_failures(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_npu_smi(tmp_path, "import time\ntime.sleep(30)")["PATH"])
    rep = npu_smi.query(timeout=0.5)
    assert not rep.available and rep.error == "npu-smi info did not answer within 0.5 s"
    monkeypatch.setenv("PATH", _fake_npu_smi(tmp_path, "import sys\nprint('dcmi init failed', file=sys.stderr)\n"
                                                       "sys.exit(3)")["PATH"])
    rep = npu_smi.query()
    assert not rep.available and rep.error == "npu-smi info failed (exit 3): dcmi init failed"


def test_no_ascend_driver_here():
    if npu_smi.present():
        pytest.skip("this machine has an Ascend driver")
    rep = npu_smi.query()
    assert not rep.available and rep.error == "no Ascend driver (no /dev/davinci*, no npu-smi)"
