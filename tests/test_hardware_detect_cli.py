"""`dq-planner detect` for real on this machine (no accelerators here, as in CI), and the host figures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from planner.hardware import detect, host, npu_smi, nvml

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "DQ_PLANNER_DETECT")}
    e.update(env)
    return subprocess.run([sys.executable, "-m", "planner.cli", "detect", *args], capture_output=True, text=True,
                          cwd=ROOT, env=e, timeout=120)


@pytest.fixture(scope="module")
def bare_machine():
    nvml._STATE.clear()
    if nvml.query().available or npu_smi.present():
        pytest.skip("this machine has accelerators")
    nvml._STATE.clear()


def test_cli_text_on_a_machine_without_accelerators(bare_machine):
    r = _cli()
    assert r.returncode == 0 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0].startswith("no accelerators detected (NVIDIA: ")
    assert "Ascend: no Ascend driver" in lines[0]
    assert lines[1].startswith("Host: ") and " GiB RAM (" in lines[1] and " CPU cores" in lines[1]
    assert lines[2] == "Plans use the h100 profile unless --device is given."


def test_cli_json_on_a_machine_without_accelerators(bare_machine):
    r = _cli("--json", "--disk", str(ROOT / "profiles"))
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert doc["accelerators"] == [] and doc["profile"] is None and doc["planned"] == []
    h = doc["host"]
    assert h["memory_total_bytes"] == psutil.virtual_memory().total
    assert 0 < h["memory_available_bytes"] <= h["memory_total_bytes"]
    assert h["cpu_cores"] == len(os.sched_getaffinity(0))
    assert h["disk_path"] == str(ROOT / "profiles") and 0 < h["disk_free_bytes"] <= shutil.disk_usage(ROOT).total
    assert doc["nvidia"]["error"] and doc["ascend"]["error"]


def test_cli_usage_error_is_one_line():
    r = _cli("--gpu")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "unrecognized arguments: --gpu" in r.stderr


def test_detection_can_be_switched_off():
    det = detect.detect(env={"DQ_PLANNER_DETECT": "0"})
    assert det.accelerators == [] and det.notes == ["accelerator detection is off (DQ_PLANNER_DETECT)"]
    assert detect.hardware_for_plan(det) is None and det.host.memory_total_bytes > 0


def test_detection_is_fast_here(bare_machine):
    nvml._STATE.clear()
    det = detect.detect(env={})
    assert det.elapsed_s < 1.0                      # tens of milliseconds; generous for a loaded machine


def _cpulist(text: str) -> set[int]:
    out: set[int] = set()
    for part in filter(None, text.strip().split(",")):
        lo, _, hi = part.partition("-")
        out |= set(range(int(lo), int(hi or lo) + 1))
    return out


@pytest.mark.skipif(not host.NODE_DIR.is_dir(), reason="no NUMA information in /sys here")
def test_numa_nodes_of_this_machine():
    nodes = host.numa_nodes()
    online = _cpulist((host.NODE_DIR / "online").read_text())
    assert {n.id for n in nodes} >= online
    assert set(os.sched_getaffinity(0)) <= set().union(*(_cpulist(n.cpus) for n in nodes))
    assert 0 < sum(n.memory_total_bytes for n in nodes) <= psutil.virtual_memory().total
    assert host.numa_nodes(host.NODE_DIR / "absent") == []


def test_disk_free_at_a_path_not_yet_created(tmp_path):
    deep = tmp_path / "a" / "b" / "model.gguf"
    free = host.disk_free_bytes(deep)
    assert free is not None and abs(free - host.disk_free_bytes(tmp_path)) < 256 << 20
