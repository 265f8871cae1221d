"""NVML detection on values captured from real machines (tests/fixtures/nvml/), pynvml replaced at the module
boundary by tests/nvml_fake.py; CUDA_VISIBLE_DEVICES; MIG; every NVML failure without a traceback."""

from __future__ import annotations

import sys

import pynvml as real
import pytest

import nvml_fake
from planner.commands import detect as detect_cmd
from planner.hardware import detect, npu_smi, nvml
from planner.core.devices.profiles import profiles

MiB = 1 << 20
H100_UUIDS = ["GPU-b42dd28e-ffdd-8720-1df0-98bd8cdc05b1", "GPU-7c3cadbd-17e5-0913-f69b-c618122ea0cd",
              "GPU-2d50cdf6-dd67-9f2e-855e-0d4d6d395a2f", "GPU-d1838e76-90e6-4408-711d-aeeaa2e1fd14",
              "GPU-72be6e5d-3c1b-0d37-98ac-d3ef159f2589", "GPU-52378fbc-3124-3895-13b6-1dd179563e0f",
              "GPU-83a5aebb-b71c-c570-aa83-185e1233fe97", "GPU-33135771-a848-ece1-b61e-489e221d663c"]
CTX = profiles()["h100"].process_context_bytes


@pytest.fixture
def use(monkeypatch):
    """use(fixture_name_or_dict, **make_kwargs) -> installs the fake pynvml for this test."""
    def install(data, **kw):
        if isinstance(data, str):
            data = nvml_fake.load(data)
        mod = nvml_fake.make(data, **kw)
        nvml_fake.install(monkeypatch, mod)
        return mod
    yield install
    nvml._STATE.clear()
    detect.detect_hardware.cache_clear()


def run(env: dict | None = None) -> detect.Detection:
    return detect.detect(env=env or {}, sources=("nvidia",))


def test_h100_node_every_field(use):
    use("h100-x8-nvlink.json")
    rep = nvml.query()
    assert rep.available and rep.error is None
    assert (rep.driver_version, rep.cuda_driver_version) == ("565.57.01", "12.7")
    assert [g.uuid for g in rep.gpus] == H100_UUIDS
    assert [g.pci_bus_id for g in rep.gpus] == [f"0000:{b}:00.0" for b in
                                                ("18", "2a", "3a", "5d", "9a", "ab", "ba", "db")]
    g = rep.gpus[0]
    assert (g.name, g.memory_total_bytes, g.memory_free_bytes) == ("NVIDIA H100 80GB HBM3", 81559 * MiB, 81106 * MiB)
    assert g.memory_reserved_bytes == 454 * MiB and g.memory_used_bytes == (81559 - 81106) * MiB
    assert g.compute_capability == (9, 0) and g.nvlink_links == 18 and not g.mig_enabled
    assert len(rep.links) == 28 and {lk.kind for lk in rep.links} == {"NVLink"}
    assert (rep.links[0].a, rep.links[0].b, rep.links[-1].a, rep.links[-1].b) == (0, 1, 6, 7)


def test_h100_node_plans_eight_devices_with_free_memory(use):
    use("h100-x8-nvlink.json")
    det = run()
    assert det.profile == "h100" and det.env == {}
    hw = detect.hardware_for_plan(det)
    assert hw.gpus == 8 and hw.labels == [f"CUDA{i}" for i in range(8)]
    assert hw.capacities == [81106 * MiB - CTX] * 8 and hw.free_bytes == [81106 * MiB] * 8
    assert hw.profile.id == "h100" and not hw.mixed
    assert hw.notes[0] == ("planning with the detected free memory of 8 x NVIDIA H100 80GB HBM3 (profile h100), "
                           "less 768 MiB per device for the CUDA runtime context")
    d = det.to_dict()
    assert set(d) >= {"accelerators", "host", "profile"} and d["profile"] == "h100"
    a0 = d["accelerators"][0]
    assert {k: a0[k] for k in ("index", "name", "vendor", "memory_total_bytes", "memory_free_bytes")} == {
        "index": 0, "name": "NVIDIA H100 80GB HBM3", "vendor": "nvidia",
        "memory_total_bytes": 81559 * MiB, "memory_free_bytes": 81106 * MiB}
    assert a0["label"] == "CUDA0" and a0["uuid"] == H100_UUIDS[0] and a0["compute_capability"] == "9.0"
    assert set(d["host"]) >= {"memory_total_bytes", "memory_available_bytes", "cpu_cores"}
    assert len(d["links"]) == 28 and d["nvidia"]["cuda_driver_version"] == "12.7"


def test_nvml_is_initialised_once(use):
    calls: list[str] = []
    use("h100-x8-nvlink.json", calls=calls)
    nvml.query()
    nvml.query()
    assert calls.count("nvmlInit") == 1 and calls.count("nvmlDeviceGetCount") == 2


def test_detect_hardware_is_cached(use):
    use("l40s-x1-pcie.json")
    assert detect.detect_hardware() is detect.detect_hardware()


@pytest.mark.parametrize("cvd, expect, note", [
    ("2,0", [(2, "CUDA0"), (0, "CUDA1")], None),
    (" 3 , 5 ", [(3, "CUDA0"), (5, "CUDA1")], None),
    ("GPU-83a5", [(6, "CUDA0")], None),                           # a unique UUID prefix
    ("gpu-33135771-a848-ece1-b61e-489e221d663c,1", [(7, "CUDA0"), (1, "CUDA1")], None),
    ("1,9,2", [(1, "CUDA0")], "'9' names no device; CUDA ignores it and the 1 entry after it"),
    ("4,4,5", [(4, "CUDA0")], "'4' appears twice"),
    ("GPU-,0", [], "'GPU-' names no device"),                    # a prefix of every UUID is no device
    ("-1", [], "'-1' names no device"),
    ("", [], "set but empty"),
])
def test_cuda_visible_devices(use, cvd, expect, note):
    use("h100-x8-nvlink.json")
    det = run({"CUDA_VISIBLE_DEVICES": cvd})
    assert [(a.index, a.label) for a in det.planned] == expect
    if note:
        assert any(note in n for n in det.notes), det.notes
    hidden = [a for a in det.accelerators if not a.visible]
    assert all(a.why_not_planned == "hidden by CUDA_VISIBLE_DEVICES" for a in hidden)
    assert len(hidden) == 8 - len(expect)
    if not expect:
        assert detect.hardware_for_plan(det) is None


def test_mig_devices_are_listed_not_planned(use):
    use("a100-40g-x8-mig.json")
    rep = nvml.query()
    g0 = rep.gpus[0]
    assert g0.mig_enabled and g0.memory_reserved_bytes is None                 # v2 refused: v1 used
    assert [(m.name, m.gpu_instance_id, m.compute_instance_id, m.memory_total_bytes // MiB) for m in g0.mig_devices] == [
        ("NVIDIA A100-SXM4-40GB MIG 4g.20gb", 2, 0, 20096), ("NVIDIA A100-SXM4-40GB MIG 1c.2g.10gb", 3, 0, 9984),
        ("NVIDIA A100-SXM4-40GB MIG 1c.2g.10gb", 3, 1, 9984), ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", 9, 0, 4864)]
    assert g0.mig_devices[0].memory_free_bytes == (20096 - 142) * MiB
    assert rep.gpus[1].pci_bus_id == "" and rep.gpus[0].pci_bus_id == "0000:10:1c.0"
    assert len(rep.links) == 21                                               # among the 7 whole GPUs

    det = run()
    migs = [a for a in det.accelerators if a.mig]
    assert len(migs) == 4 and all(not a.planned and a.parent_index == 0 for a in migs)
    assert det.accelerators[0].why_not_planned == "MIG mode on"
    hw = detect.hardware_for_plan(det)
    assert hw.labels == [f"CUDA{i}" for i in range(7)] and hw.profile.id == "a100-40g"
    assert hw.capacities == [40336 * MiB - CTX] * 7
    uuids = [a.uuid for a in det.accelerators if not a.mig][1:]
    assert hw.env == {"CUDA_VISIBLE_DEVICES": ",".join(uuids)}
    assert any("must run with CUDA_VISIBLE_DEVICES=GPU-934e3c41" in n for n in hw.notes)


@pytest.mark.parametrize("cvd, mig_visible", [
    ("MIG-c42101f0-a1fa-5b68-8908-7c5c887f28bd,3", 0),
    ("MIG-GPU-9e4aeb94-01c0-5173-4811-4ca60f77b3a9/3/1,3", 2),      # the older MIG-GPU-<uuid>/<gi>/<ci> form
    ("0:9/0,3", 3),                                                  # <index>:<gi>/<ci>
])
def test_cuda_visible_devices_with_mig(use, cvd, mig_visible):
    use("a100-40g-x8-mig.json")
    det = run({"CUDA_VISIBLE_DEVICES": cvd})
    migs = [a for a in det.accelerators if a.mig]
    assert [a.visible for a in migs] == [i == mig_visible for i in range(4)]
    assert [(a.index, a.label) for a in det.planned] == [(3, "CUDA0")]
    assert det.env == {"CUDA_VISIBLE_DEVICES": "GPU-ba4fa428-9d41-74cf-86e6-0824b0de1b09"}


def test_pcie_gpu_without_nvlink_or_mig(use):
    use("l40s-x1-pcie.json")
    rep = nvml.query()
    g = rep.gpus[0]
    assert g.nvlink_links is None and not g.mig_enabled and rep.links == []
    assert g.compute_capability == (8, 9) and g.memory_reserved_bytes == 479 * MiB
    hw = detect.hardware_for_plan(run())
    assert hw.profile.id == "l40s" and hw.capacities == [45589 * MiB - CTX]


def test_unknown_gpu_gets_a_generic_profile(use):
    use("gh200-x1.json")
    det = run()
    assert det.profile == "generic"
    hw = detect.hardware_for_plan(det)
    p = hw.profile
    assert p.generic and p.name == "NVIDIA GH200 480GB" and p.memory_bytes == 97871 * MiB
    assert p.reserve_bytes == 1103 * MiB + CTX and p.process_context_bytes == CTX   # its own Reserved, h100's context
    assert hw.capacities == [96767 * MiB - CTX]
    assert "profile generic 'NVIDIA GH200 480GB'" in hw.notes[0]


def test_mixed_gpus(use):
    h100, l40s = nvml_fake.load("h100-x8-nvlink.json"), nvml_fake.load("l40s-x1-pcie.json")
    mixed = dict(h100, devices=h100["devices"][:2] + l40s["devices"], p2p={"nvlink": "NOT_SUPPORTED", "read": "OK"})
    use(mixed)
    det = run()
    hw = detect.hardware_for_plan(det)
    assert hw.mixed and hw.profile.id == "h100" and [p.id for p in hw.profiles] == ["h100", "h100", "l40s"]
    assert hw.capacities == [81106 * MiB - CTX, 81106 * MiB - CTX, 45589 * MiB - CTX]
    assert "2 x NVIDIA H100 80GB HBM3, 1 x NVIDIA L40S" in hw.notes[0]
    assert any("mixed devices" in n for n in hw.notes)
    assert any("CUDA_DEVICE_ORDER=PCI_BUS_ID" in n for n in det.notes)
    assert {lk["kind"] for lk in det.links} == {"PCIe P2P"}
    assert not any("CUDA_DEVICE_ORDER" in n for n in run({"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}).notes)


@pytest.mark.parametrize("code, reason", [
    (real.NVML_ERROR_LIBRARY_NOT_FOUND, "NVIDIA driver library (libnvidia-ml.so.1) not found"),
    (real.NVML_ERROR_DRIVER_NOT_LOADED, "NVIDIA kernel driver not loaded"),
    (real.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "NVML library and NVIDIA kernel driver versions differ"),
    (real.NVML_ERROR_NO_PERMISSION, "no permission to query the NVIDIA driver"),
    (real.NVML_ERROR_UNKNOWN, "NVML error 999"),
])
def test_init_failures_become_one_reason(use, capsys, code, reason):
    use(None, init_error=code)
    rep = nvml.query()
    assert not rep.available and rep.gpus == [] and rep.error.startswith(reason)
    assert detect.hardware_for_plan(run()) is None
    if npu_smi.present():
        return                                  # the command would also list this machine's Ascend NPUs
    rc = detect_cmd.main([])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("no accelerators detected (NVIDIA: " + reason)


def test_missing_calls_and_lost_gpus_do_not_break_detection(use):
    use("h100-x8-nvlink.json", fail={"nvmlDeviceGetUUID": real.NVML_ERROR_NOT_SUPPORTED,
                                     "nvmlSystemGetDriverVersion": real.NVML_ERROR_FUNCTION_NOT_FOUND,
                                     "nvmlDeviceGetNvLinkState": real.NVML_ERROR_NOT_SUPPORTED,
                                     "nvmlDeviceGetP2PStatus": real.NVML_ERROR_NOT_SUPPORTED})
    rep = nvml.query()
    assert rep.available and len(rep.gpus) == 8 and rep.driver_version == ""
    assert all(g.uuid == "" and g.nvlink_links is None for g in rep.gpus) and rep.links == []
    assert "call not provided by this NVIDIA driver" in rep.notes[0]
    assert detect.hardware_for_plan(run()).gpus == 8

    use("h100-x8-nvlink.json", fail={"nvmlDeviceGetHandleByIndex": real.NVML_ERROR_GPU_IS_LOST})
    det = run()
    assert len(det.accelerators) == 8 and det.planned == []
    assert det.accelerators[0].why_not_planned == "not readable: GPU is lost (fell off the bus)"

    use("h100-x8-nvlink.json", fail={"nvmlDeviceGetCount": real.NVML_ERROR_FUNCTION_NOT_FOUND})
    rep = nvml.query()
    assert not rep.available and rep.error.startswith("NVIDIA GPUs could not be counted")
    assert rep.driver_version == "565.57.01"


def test_memory_v1_only_drivers(use):
    data = nvml_fake.load("h100-x8-nvlink.json")
    for d in data["devices"]:
        d["memory_mib"]["reserved"] = None
    use(data)
    g = nvml.query().gpus[0]
    assert g.memory_reserved_bytes is None and g.memory_used_bytes == (81559 - 81106) * MiB
    assert detect.hardware_for_plan(run()).capacities[0] == 81106 * MiB - CTX


def test_pynvml_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)          # makes `import pynvml` raise ImportError
    nvml._STATE.clear()
    try:
        rep = nvml.query()
    finally:
        nvml._STATE.clear()
    assert not rep.available and rep.error == "nvidia-ml-py (pynvml) is not installed"


def test_text_report_of_an_h100_node(use, capsys):
    use("h100-x8-nvlink.json")
    text = detect_cmd.render(run())
    assert "NVIDIA driver 565.57.01, CUDA 12.7" in text
    assert "GPU links: NVLink between all 8 GPUs (28 pairs)" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("7 "))
    assert row.split()[:2] == ["7", "CUDA7"] and "79.2" in row and "NVLink x18" in row
    assert "Plans use 8 devices (CUDA0, CUDA1, CUDA2, CUDA3, CUDA4, CUDA5, CUDA6, CUDA7) with profile h100" in text


def test_without_any_nvidia_driver_pynvml_is_not_even_imported(monkeypatch):
    if nvml.driver_present():
        pytest.skip("this machine has an NVIDIA driver")
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    nvml._STATE.clear()
    try:
        rep = nvml.query()
        assert "pynvml" not in sys.modules
    finally:
        nvml._STATE.clear()
    assert not rep.available and rep.error == "no NVIDIA driver (no /dev/nvidiactl, /proc/driver/nvidia or /dev/dxg)"
