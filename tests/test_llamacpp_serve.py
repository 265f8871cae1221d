"""dq-planner serve with the real llama-server: planned against measured memory, RPC over loopback, and
no process left behind in any case."""

from __future__ import annotations

import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llamacpp_support import ROOT, dq, free_port, processes_using, require_llama_cpp
from llamacpp_support import rpc_servers as start_rpc_servers
from planner.engines.llamacpp.argv import (ServerOptions, parse_rpc, parse_rpc_list, server_argv)
from planner.errors import PlannerError


@pytest.fixture(scope="module")
def lc():
    return require_llama_cpp("llama-server", "rpc-server")


@pytest.fixture()
def model(tiny_gguf, tmp_path):
    """A private copy (its path identifies the processes that use it) in a folder with an odd name."""
    d = tmp_path / "models; 'n' \"q\""
    d.mkdir()
    p = d / "tiny ds.gguf"
    shutil.copy(tiny_gguf("deepseek2-mla"), p)
    return p


def opt(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def rows(stdout: str) -> dict[tuple[str, str], list[str]]:
    out = {}
    for line in stdout.splitlines():
        parts = [p for p in line.split("  ") if p.strip()]
        if len(parts) >= 4 and parts[1].strip() in ("weights", "KV cache", "compute", "output buffer"):
            out[(parts[0].strip(), parts[1].strip())] = [p.strip() for p in parts[2:]]
    return out


def test_serve_cpu_planned_vs_measured(lc, model):
    port = free_port()
    r = dq("serve", "--model-file", model, "--ctx", "4096", "--port", str(port), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "planned vs measured" in r.stdout
    t = rows(r.stdout)
    # weights and the KV cache are exact: the planned bytes print as llama.cpp's MiB figures
    assert t[("Host", "weights")][2] == "exact" and t[("Host", "KV cache")][2] == "exact"
    assert t[("Host", "KV cache")][1] == "7.50"          # 3 layers x 4096 cells x 320 latent x f16
    assert ("Host", "compute") in t
    assert "memory breakdown at exit" in r.stdout       # printed by llama-server as it stopped
    assert "--fit off" in r.stderr and "-ngl 0" in r.stderr
    assert processes_using(model) == []


def test_print_command_is_one_pasteable_line(lc, model):
    r = dq("serve", "--model-file", model, "--ctx", "8000", "--flash-attn", "on", "--cache-type-k", "q8_0",
           "--cache-type-v", "q8_0", "--parallel", "2", "--ubatch", "256", "--port", "9999", "--print-command")
    assert r.returncode == 0, r.stderr
    [line] = r.stdout.strip().splitlines()
    argv = shlex.split(line)
    assert Path(argv[0]).name == "llama-server"
    assert opt(argv, "-m") == str(model)                  # the odd path is one argument
    assert [opt(argv, f) for f in ("-c", "-fa", "-ctk", "-ctv", "-np", "-ub", "--port", "--fit", "-sm")] == [
        "8000", "on", "q8_0", "q8_0", "2", "256", "9999", "off", "layer"]
    assert processes_using(model) == []


@pytest.fixture()
def rpc_servers(lc):
    """Two rpc-server processes on loopback, stopped (process group) after the test."""
    with start_rpc_servers(lc, 2) as addrs:
        yield addrs


def test_serve_over_two_loopback_rpc_servers(lc, model, rpc_servers):
    a, b = rpc_servers
    port = free_port()
    r = dq("serve", "--model-file", model, "--ctx", "4096", "--port", str(port), "--rpc", f"{a}=1G,{b}=1G",
           timeout=300)
    assert r.returncode == 0, r.stderr
    cmd = next(l for l in r.stderr.splitlines() if l.startswith("starting: "))
    argv = shlex.split(cmd[len("starting: "):])
    assert opt(argv, "--rpc") == f"{a},{b}" and opt(argv, "-ngl") == "4"   # 3 blocks + the output layer
    assert opt(argv, "-ts") == "2,2"                                       # equal devices: two layers each
    t = rows(r.stdout)
    for dev in (f"RPC[{a}]", f"RPC[{b}]"):
        assert t[(dev, "weights")][2] == "exact", r.stdout
        assert t[(dev, "KV cache")][2] == "exact", r.stdout
    assert t[("Host", "weights")][2] == "exact"                          # token_embd stays on the host
    assert ("Host", "KV cache") not in t                                 # every layer is on the RPC devices
    assert processes_using(model) == []


@pytest.mark.parametrize("options, ts", [
    (["--n-cpu-moe", "3"], "5,4"),                        # experts of blocks 1-2 in host RAM
    (["--ngl", "5"], "3,2"),                              # blocks 0-3 on the host
    (["--tensor-split", "3,1"], "7,2"),
    (["--parallel", "3", "--ctx", "5000"], "5,4"),
    (["--cache-type-k", "q8_0", "--cache-type-v", "q8_0", "--flash-attn", "on"], "5,4"),
])
def test_rpc_placements_match_llama_cpp(lc, tmp_path, rpc_servers, options, ts):
    """Weights and KV cache on every device exactly as planned, for the placement options."""
    from planner.gguf.writer import model_from_hparams, write_gguf
    from tiny_models import tiny_deepseek2_hparams

    path = write_gguf(tmp_path / "ds8.gguf", model_from_hparams(tiny_deepseek2_hparams(n_layer=8)))[0]
    a, b = rpc_servers
    r = dq("serve", "--model-file", path, "--ctx", "4096", "--port", str(free_port()), "--rpc",
           f"{a}=1G,{b}=1G", *options, timeout=300)
    assert r.returncode == 0, r.stderr
    cmd = next(l for l in r.stderr.splitlines() if l.startswith("starting: "))
    assert opt(shlex.split(cmd[len("starting: "):]), "-ts") == ts
    t = rows(r.stdout)
    checked = [(k, v) for k, v in t.items() if k[1] in ("weights", "KV cache")]
    assert len(checked) >= 5
    assert all(v[2] == "exact" for k, v in checked), r.stdout
    assert processes_using(path) == []


def test_serve_fails_cleanly_when_the_port_is_taken(lc, model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = dq("serve", "--model-file", model, "--ctx", "4096", "--port", str(port), timeout=300)
    # refused before anything starts: a server already on that port would answer /health for us
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"dq-planner: port {port} on 127.0.0.1 is already in use; "
                                             "choose another with --port"], r.stderr
    assert processes_using(model) == []


def test_keep_running_until_interrupted(lc, model):
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "planner.cli", "serve", "--model-file", str(model), "--ctx", "4096",
                          # no timed requests: the interrupt is meant for the running server
                          "--port", str(port), "--keep-running", "--speed-requests", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        import urllib.request

        while True:
            assert p.poll() is None, p.communicate()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as h:
                    if h.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        server = [q for q in processes_using(model) if q != p.pid]
        assert len(server) == 1
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert out.count("planned vs measured") == 1 and "memory breakdown at exit" in out
    assert not Path(f"/proc/{server[0]}").exists()
    assert processes_using(model) == []


def test_rpc_specs():
    assert parse_rpc("10.0.0.2:50052") == parse_rpc("10.0.0.2:50052 ")
    d = parse_rpc("10.0.0.2:50052=24G")
    assert (d.host, d.port, d.memory_bytes, d.label) == ("10.0.0.2", 50052, 24 << 30, "RPC[10.0.0.2:50052]")
    assert parse_rpc("h:1=512MiB").memory_bytes == 512 << 20 and parse_rpc("h:1=80GB").memory_bytes == 80 * 10**9
    assert parse_rpc("[::1]:50052").host == "::1"
    assert [x.endpoint for x in parse_rpc_list(["a:1,b:2", "c:3"])] == ["a:1", "b:2", "c:3"]
    for bad in ("nohost", "h:0", "h:99999", "h:1=lots", ":1"):
        with pytest.raises(PlannerError, match="--rpc"):
            parse_rpc(bad)
    with pytest.raises(PlannerError, match="twice"):
        parse_rpc_list("a:1,a:1")


def test_server_argv_is_explicit():
    o = ServerOptions(model_file="/m/x y.gguf", ctx=32768, n_gpu_layers=62, tensor_split=[31.0, 31.0],
                      flash_attn="on", cache_type_k="q8_0", cache_type_v="q8_0", parallel=1, n_cpu_moe=3,
                      override_tensors=[r"blk\.(3|4)\.ffn_.*_exps=CPU"], rpc=parse_rpc_list("a:1,b:2"))
    argv = server_argv("/bin/llama-server", o)
    assert argv[:3] == ["/bin/llama-server", "-m", "/m/x y.gguf"]
    s = " ".join(argv[3:])
    for part in ("-c 32768", "-ngl 62", "-sm layer", "-ts 31,31", "-fa on", "-ctk q8_0", "-ctv q8_0", "-np 1",
                 "--n-cpu-moe 3", r"-ot blk\.(3|4)\.ffn_.*_exps=CPU", "--rpc a:1,b:2", "--fit off"):
        assert part in s


def test_unreachable_rpc_server_is_one_line_exit_1(lc, model):
    port = free_port()            # nothing listens there
    r = dq("serve", "--model-file", model, "--ctx", "4096", "--rpc", f"127.0.0.1:{port}", timeout=120)
    assert r.returncode == 1
    [line] = r.stderr.strip().splitlines()
    assert line == (f"dq-planner: llama-server --list-devices was killed by SIGABRT: "
                    f"Failed to connect to 127.0.0.1:{port}")
    assert processes_using(model) == []

