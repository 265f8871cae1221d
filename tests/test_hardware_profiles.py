"""Hardware profiles: every shipped device loads, carries its sources, and maps back from its NVML/npu-smi names."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from planner.errors import PlannerError
from planner.hardware.detect import match_profile
from planner.core.devices.profiles import DeviceProfile, load_profile, profiles, resolve_device

MiB = 1 << 20
IDS = ["a100", "a100-40g", "a800", "h100", "h800", "h20", "h200", "b200", "l40s", "rtx4090", "mi300x", "910b"]
FIELDS = set(DeviceProfile.__dataclass_fields__)


def test_every_interface_device_is_shipped():
    assert set(IDS) <= set(profiles())


@pytest.mark.parametrize("pid", IDS)
def test_profile_is_consistent_and_sourced(pid):
    p = profiles()[pid]
    assert 0 < p.process_context_bytes <= p.reserve_bytes < p.memory_bytes
    assert p.usable_bytes == p.memory_bytes - p.reserve_bytes
    assert p.devices_per_node == 8 and p.backend in ("CUDA", "ROCm", "CANN")
    assert len(p.source) > 40 and p.match
    assert set(p.unverified) <= FIELDS, f"unknown field in unverified: {set(p.unverified) - FIELDS}"
    text = Path(p.path).read_text()
    # the memory figure and the reserve are each explained by comment lines right above them
    for key in ("memory_bytes", "reserve_bytes"):
        above = text.split(f"\n{key} =")[0].rstrip().splitlines()[-1]
        assert above.startswith("#"), f"{pid}: {key} has no source comment"


@pytest.mark.parametrize("pid", IDS)
def test_totals_and_reserves_are_the_files_figures(pid):
    """The loaded figures are the file's own (which cites where each comes from: a driver's total, a
    reserve derived in its comments); what is derived from them is derived here the same way."""
    p = profiles()[pid]
    raw = tomllib.loads(Path(p.path).read_text())
    assert (p.memory_bytes, p.reserve_bytes) == (raw["memory_bytes"], raw["reserve_bytes"])
    assert p.process_context_bytes == raw.get("context_bytes", raw["reserve_bytes"])
    assert p.driver_reserved_bytes == raw["reserve_bytes"] - p.process_context_bytes
    assert p.usable_bytes == raw["memory_bytes"] - raw["reserve_bytes"]
    # drivers report whole MiB; a measured total (not one marked unverified) is one of them
    if "memory_bytes" not in p.unverified and p.vendor != "amd":
        assert p.memory_bytes % MiB == 0


def test_unknown_figures_are_marked():
    p = profiles()
    assert p["910b"].bandwidth_gbs == 0 and "bandwidth_gbs" in p["910b"].unverified
    assert p["h100"].fp8_tflops > 0 and not p["a100"].has_fp8


@pytest.mark.parametrize("pid", IDS)
def test_match_names_map_back(pid):
    p = profiles()[pid]
    for name in p.match:
        got, note = match_profile(name, p.memory_bytes, p.backend, p.vendor)
        assert got.id == pid and note is None


def test_match_names_are_unique():
    seen: dict[str, str] = {}
    for p in profiles().values():
        for name in p.match:
            key = re.sub(r"^nvidia ", "", name.lower())
            assert key not in seen, f"{name} in both {seen.get(key)} and {p.id}"
            seen[key] = p.id


def test_mapping_by_name_and_memory():
    # older drivers name the A100 without "NVIDIA " and report 40537 MiB: still the a100-40g (within 2%)
    assert match_profile("A100-SXM4-40GB", 40537 * MiB, "CUDA", "nvidia")[0].id == "a100-40g"
    # a known name with other memory: generic, with a note saying why
    prof, note = match_profile("NVIDIA H800", 143771 * MiB, "CUDA", "nvidia", reserved_bytes=700 * MiB)
    assert prof.generic and prof.id == "generic" and prof.memory_bytes == 143771 * MiB
    assert "h800" in note and "143771 MiB" in note
    assert prof.reserve_bytes == 700 * MiB + profiles()["h100"].process_context_bytes
    # "h20" must not match inside "GH200"
    prof, note = match_profile("NVIDIA GH200 480GB", 97871 * MiB, "CUDA", "nvidia")
    assert prof.generic and note is None
    # the 32 GB 910B4 is not the 64 GB 910b
    prof, _ = match_profile("910B4", 32768 * MiB, "CANN", "huawei")
    assert prof.generic and prof.backend == "CANN" and prof.process_context_bytes == profiles()["910b"].process_context_bytes


def test_resolve_device_is_case_insensitive_and_reads_files(tmp_path):
    assert resolve_device("910B").id == "910b"
    assert resolve_device("H100").id == "h100"
    f = tmp_path / "mine.toml"
    f.write_text('id = "mine"\nname = "My GPU"\nvendor = "nvidia"\nbackend = "CUDA"\nmemory_bytes = 1000\n'
                 'reserve_bytes = 100\ndevices_per_node = 2\nsource = "me"\n')
    p = resolve_device(str(f))
    assert p.id == "mine" and p.usable_bytes == 900 and p.process_context_bytes == 100
    with pytest.raises(PlannerError, match="unknown device 'nope'"):
        resolve_device("nope")


@pytest.mark.parametrize("extra, message", [
    ("context_bytes = 200\n", "context_bytes"),
    ("bandwidth_gbs = -1\n", "bandwidth_gbs"),
    ('match = "H100"\n', "match"),
    ("bf16_tflops = true\n", "bf16_tflops"),
])
def test_bad_profiles_are_refused_in_one_line(tmp_path, extra, message):
    f = tmp_path / "bad.toml"
    f.write_text('id = "bad"\nname = "Bad"\nvendor = "nvidia"\nbackend = "CUDA"\nmemory_bytes = 1000\n'
                 'reserve_bytes = 100\ndevices_per_node = 1\nsource = "x"\n' + extra)
    with pytest.raises(PlannerError, match=message) as e:
        load_profile(f)
    assert "\n" not in str(e.value)
