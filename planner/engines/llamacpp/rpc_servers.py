"""rpc-server command lines of a pasted llama.cpp deployment (the other nodes' commands).

rpc-server's flags (tools/rpc/rpc-server.cpp, rpc_server_params_parse): -H/--host, -p/--port, -d/--device
(a comma-separated list), -m/--mem (MB per device), -c/--cache, -t/--threads. The head's --rpc list names
the devices the plan places layers on; the rpc-server commands are read to check that they expose as many
devices as the head lists at most (each server one device per --rpc endpoint, as the plan runs them; the
head may list more, run elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.errors import PlannerError
from planner.safe_text import printable

RPC_SERVER = "rpc-server"
_VALUED = {"-H": "host", "--host": "host", "-p": "port", "--port": "port", "-d": "device", "--device": "device",
           "-m": "mem", "--mem": "mem", "-t": "threads", "--threads": "threads"}
_BARE = {"-c", "--cache"}


@dataclass
class RpcServers:
    ports: list[int]
    devices: list[int]            # devices per server (1 without -d: all of the node's, counted as 1)

    def note(self, rpc: list[str]) -> str:
        if len(rpc) < len(self.ports):
            raise PlannerError(f"--from-command: {len(self.ports)} rpc-server command(s), but the head's --rpc "
                               f"lists {len(rpc)} device(s): one rpc-server per --rpc endpoint")
        many = [p for p, n in zip(self.ports, self.devices) if n > 1]
        if many:
            raise PlannerError(f"--from-command: the rpc-server on port {many[0]} exposes several devices behind one "
                               "--rpc endpoint; planned are rpc-servers of one device each (-d CUDAn)")
        return (f"{len(self.ports)} rpc-server(s) on the other nodes, one device each: the head's --rpc devices "
                "(planned with the --device profile's memory unless --rpc gives HOST:PORT=MEM)")


def read_rpc_servers(commands: list[list[str]]) -> RpcServers | None:
    if not commands:
        return None
    ports, devices = [], []
    for words in commands:
        port, n = 50052, 1
        i = 1
        while i < len(words):
            w = words[i]
            i += 1
            if w in _BARE:
                continue
            if w not in _VALUED:
                raise PlannerError(f"--from-command: rpc-server {printable(w)} is not an rpc-server flag "
                                   "(-H, -p, -d, -m, -c, -t)")
            if i >= len(words):
                raise PlannerError(f"--from-command: rpc-server {w} needs a value")
            v = words[i]
            i += 1
            if _VALUED[w] == "port":
                if not v.isdigit() or not 0 < int(v) < 65536:
                    raise PlannerError(f"--from-command: rpc-server {w} {printable(v)} is not a port")
                port = int(v)
            elif _VALUED[w] == "device":
                n = len([x for x in v.replace("/", ",").split(",") if x])
            elif _VALUED[w] == "mem":
                raise PlannerError("--from-command: rpc-server -m (a device's memory in MB) is not read here: give it "
                                   "to the head's device as --rpc HOST:PORT=MEM")
        ports.append(port)
        devices.append(n)
    return RpcServers(ports, devices)
