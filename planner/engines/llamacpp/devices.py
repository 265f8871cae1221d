"""The devices llama.cpp itself sees (`llama-server [--rpc ...] --list-devices`), as the plan's slots.

llama.cpp's device order is the order it prints: RPC devices first, then the local GPUs; the CPU is not
listed (it is the host). Free memory is what llama.cpp would split layers by without -ts.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from planner.engines.llamacpp.argv import RpcDevice, child_env
from planner.engines.llamacpp.locate import LlamaCpp
from planner.errors import RunError
from planner.engines.llamacpp.process import run_captured

MIB = 1024 * 1024
# "  CUDA0: NVIDIA H100 80GB HBM3 (81079 MiB, 80552 MiB free)"  "  RPC0: 127.0.0.1:50052 (24105 MiB, ...)"
_DEV = re.compile(r"^\s+(?P<name>\S+): (?P<desc>.*) \((?P<total>\d+) MiB, (?P<free>\d+) MiB free\)\s*$")


@dataclass
class ListedDevice:
    name: str            # "CUDA0", "RPC0"
    description: str     # "NVIDIA H100 80GB HBM3", "127.0.0.1:50052"
    total_bytes: int
    free_bytes: int

    @property
    def label(self) -> str:
        """The plan's device label: RPC devices by endpoint (their names restart at RPC0 per server)."""
        if self.name.startswith("RPC"):
            return f"RPC[{self.description.strip()}]"
        return self.name


def parse_list_devices(text: str) -> list[ListedDevice]:
    out = []
    started = False
    for line in text.splitlines():
        if line.startswith("Available devices:"):
            started = True
            continue
        if started and (m := _DEV.match(line)):
            out.append(ListedDevice(m.group("name"), m.group("desc"), int(m.group("total")) * MIB,
                                    int(m.group("free")) * MIB))
    return out


def list_devices(lc: LlamaCpp, rpc: list[RpcDevice] | None = None, timeout: float = 60.0) -> list[ListedDevice]:
    argv = [str(lc.binary("llama-server"))]
    if rpc:
        argv += ["--rpc", ",".join(d.endpoint for d in rpc)]
    argv.append("--list-devices")
    try:
        r = run_captured(argv, timeout=timeout, env=child_env())
    except subprocess.TimeoutExpired:
        raise RunError(f"llama-server --list-devices did not answer in {timeout:.0f} s "
                       "(an RPC server that does not respond?)") from None
    text = r.stdout + r.stderr
    if r.returncode != 0 or "Available devices:" not in text:
        from planner.engines.llamacpp.process import signal_name
        from planner.engines.llamacpp.server import server_error

        how = f"was killed by {signal_name(r.returncode)}" if r.returncode < 0 else f"exited with status {r.returncode}"
        raise RunError(f"llama-server --list-devices {how}: {server_error(text.splitlines())}")
    return parse_list_devices(text)
