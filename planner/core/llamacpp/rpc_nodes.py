"""Several nodes under llama.cpp: one llama-server on the first node, the other nodes' GPUs as RPC devices.

llama.cpp spans nodes with its RPC backend: every other node runs rpc-server, which exposes its GPUs
(tools/rpc/rpc-server.cpp: `-d/--device` selects them, `-p` the port, `-H` the address to bind), and the
head's llama-server lists them with `--rpc HOST:PORT,...`. The head's model then sees the RPC devices
first, in the order of the --rpc list, and its own GPUs after them (llama_model_load: "add RPC servers at
the front of the list"), and splits layers over that order (-ts).

The plan runs one rpc-server per GPU (node n's GPU i on port 50052 + i, rpc-server's default port plus
the device's index), so every RPC device is one endpoint, as --rpc devices are planned (their memory is
the profile's GPU, the same per-device figures as a --rpc device given without =MEM). The other nodes'
addresses are placeholders (NODE1_IP ...) the launch script says to replace.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from planner.core.devices.hardware import Hardware
from planner.core.plan import PlanRequest

RPC_BASE_PORT = 50052


def node_address(node: int) -> str:
    return f"NODE{node}_IP"


@dataclass(frozen=True)
class NodeDevice:
    """One GPU of a node other than the head, served by its own rpc-server."""

    node: int
    device: str        # the node's own device name: CUDA3
    index: int

    @property
    def port(self) -> int:
        return RPC_BASE_PORT + self.index

    @property
    def endpoint(self) -> str:
        return f"{node_address(self.node)}:{self.port}"

    @property
    def label(self) -> str:
        return f"RPC[{self.endpoint}]"


def node_devices(nodes: int, gpus: int, backend: str) -> list[NodeDevice]:
    """The other nodes' GPUs, in the head's --rpc order (node by node, device by device)."""
    return [NodeDevice(n, f"{backend}{i}", i) for n in range(1, nodes) for i in range(gpus)]


def with_rpc_nodes(hw: Hardware, req: PlanRequest) -> Hardware:
    """The devices of a multi-node llama.cpp plan as llama.cpp orders them: the --rpc devices given, the
    other nodes' GPUs (RPC devices), then the head's GPUs. One node, or detected devices: unchanged."""
    if req.nodes <= 1 or hw.summary.source != "profile" or hw.profile is None:
        return hw
    gpus = hw.summary.gpus
    given = hw.slots[:len(req.rpc)]
    local = hw.slots[len(req.rpc):]
    others = [replace(local[d.node * gpus + d.index], label=d.label)
              for d in node_devices(req.nodes, gpus, hw.profile.backend)]
    note = (f"{req.nodes} nodes under llama.cpp: llama-server on node 0, the {len(others)} GPUs of the other "
            "node(s) as its RPC devices (an rpc-server per GPU), first in llama.cpp's device order")
    notes = hw.notes + [note]
    return replace(hw, slots=given + others + local[:gpus], notes=notes,
                   summary=replace(hw.summary, notes=list(hw.summary.notes) + [note]))
