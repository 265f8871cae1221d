"""Command line: argparse, headless output, exit codes (0 ok, 1 a run failed, 2 bad input, 128 + signal when
interrupted: 130 SIGINT, 143 SIGTERM, 129 SIGHUP).

No sizing logic lives here: arguments become a PlanRequest, the core computes the Plan, renderers print it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from planner.arg_parser import PROG, Parser
from planner.errors import PlannerError, RunError
from planner.safe_text import printable

SUBCOMMANDS = ("inspect", "quantize", "serve", "detect", "bench", "header")


def add_plan_options(p: argparse.ArgumentParser) -> None:
    """The plan options, generated from their one declaration (planner/options.py)."""
    from planner.options import add_plan_options as add

    add(p)


def request_from_args(a: argparse.Namespace):
    from planner.options import request_from_namespace

    return request_from_namespace(a, with_tensors=getattr(a, "tensors", False))


def main_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Plan DeepSeek deployments: exact GGUF sizes, memory per device, "
                "accuracy-backed recommendations. Without --headless (and without a command) opens the TUI.",
                epilog=f"commands: {PROG} {{inspect,quantize,serve,detect}} --help")
    p.add_argument("--headless", action="store_true", help="print the plan instead of opening the TUI")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--tensors", action="store_true", help="list every tensor with its type and bytes")
    p.add_argument("--plot", action="store_true", help="draw accuracy against memory per device in the terminal")
    p.add_argument("--print-commands", action="store_true",
                   help="print the launch commands of the recommended (or only) scheme")
    p.add_argument("--export-commands", metavar="DIR",
                   help="write the launch commands as one script per node into DIR (never overwrites)")
    p.add_argument("--force", action="store_true", help="with --export-commands: overwrite existing scripts")
    p.add_argument("--compare", action="append", metavar="ENGINE:SCHEME@NODESxGPUS[/DEVICE]",
                   help="compare deployments across engines, e.g. --compare vllm:FP8@2x8 --compare llama.cpp:DQ3_K_M@1x8")
    p.add_argument("--workload", default="throughput", choices=["throughput", "latency"],
                   help="what --compare optimises for")
    p.add_argument("--from-command", metavar="'llama-server -m F.gguf ...'",
                   help="plan the run of pasted launch commands: llama.cpp (-m, -c, -ngl, -ts, -ot, --rpc, ...), "
                        "vllm serve or python -m sglang.launch_server; several nodes' commands one per line")
    add_plan_options(p)
    return p


# Above this many per-device rows a document is written without indentation: json's C encoder only
# serves unindented output, and a --model auto plan on 384 devices (about 120,000 rows, 40 MiB indented)
# takes 2.4 s to indent against 0.3 s compact.
JSON_INDENT_MAX_ROWS = 4096


def _device_rows(doc: Any) -> int:
    n = 0
    for s in doc.get("schemes") or []:
        n += len(((s or {}).get("memory") or {}).get("per_device") or [])
    for c in doc.get("candidates") or []:
        n += _device_rows(c)
    return n


def _emit_json(doc: Any) -> None:
    # one write: json.dump would issue a write per token, which a large plan pays for
    indent = 2 if _device_rows(doc) <= JSON_INDENT_MAX_ROWS else None
    sys.stdout.write(json.dumps(doc, indent=indent) + "\n")


def run_headless(a: argparse.Namespace) -> int:
    from planner.make_plan import make_plan
    from planner.render.table import render_plan

    req = request_from_args(a)
    if getattr(a, "from_command", None):
        from planner.engines.registry import parse_command

        parsed = parse_command(a.from_command, base=req)
        req = parsed.request
        for note in parsed.notes:
            print(f"{PROG}: note: {printable(note)}", file=sys.stderr)
    if a.compare:
        from planner.engines.compare import compare_deployments
        from planner.make_plan import candidates_from_specs
        from planner.render.table import render_comparison

        ranked = compare_deployments(candidates_from_specs(req, a.compare), a.workload)
        if a.json:
            _emit_json({"workload": a.workload, "deployments": [
                {"rank": r.rank, "engine": r.candidate.engine, "model": r.candidate.model,
                 "scheme": r.candidate.scheme.to_dict(), "device": r.candidate.device, "gpus": r.candidate.gpus,
                 "nodes": r.candidate.nodes, "max_sequences": r.candidate.max_sequences, "fits": r.fits,
                 "reasons": r.reasons} for r in ranked]})
        else:
            print(printable(render_comparison(ranked, a.workload), keep="\n"))
        return 0
    if req.model == "auto":
        from planner.make_plan import make_auto_plan
        from planner.render.table import render_candidates

        plan, candidates = make_auto_plan(req)
        if a.json:
            from planner.render.json_doc import auto_document

            _emit_json(auto_document(plan, candidates, with_tensors=a.tensors))
        else:
            print(printable(render_candidates(candidates, plan), keep="\n"))
        return 0
    plan = make_plan(req)
    if a.json:
        from planner.render.json_doc import plan_document

        _emit_json(plan_document(plan, with_tensors=a.tensors))
    else:
        print(printable(render_plan(plan, with_tensors=a.tensors), keep="\n"))
    if a.plot:
        from planner.render.plot import plot_accuracy_memory

        print(plot_accuracy_memory(plan, a.task))
    if a.print_commands or a.export_commands:
        _launch(plan, req, a)
    return 0


def _launch(plan, req, a: argparse.Namespace) -> None:
    """Launch commands for the recommended scheme (or the only one planned)."""
    scheme = plan.recommendation.scheme if plan.recommendation else (
        plan.schemes[0].id if len(plan.schemes) == 1 else None)
    if scheme is None:
        raise PlannerError("no scheme to launch: nothing is recommended; name one with --scheme")
    from planner.engines.registry import engine

    launch = engine(plan.engine).launch(plan, req, scheme)
    if a.print_commands:
        print("\n".join(printable(line) for line in launch.lines), file=sys.stderr if a.json else sys.stdout)
    if a.export_commands:
        from planner.engines.hf_serving import write_scripts

        for p in write_scripts(launch.scripts, a.export_commands, force=a.force):
            print(f"wrote {p}", file=sys.stderr)


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        mod = importlib.import_module(f"planner.commands.{argv[0]}")
        return mod.main(argv[1:])
    a = main_parser().parse_args(argv)
    if a.headless or a.json or a.tensors or a.plot or a.from_command:
        return run_headless(a)
    from planner.tui.app import run_tui

    return run_tui(request_from_args(a))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except PlannerError as e:
        print(f"{PROG}: {printable(e)}", file=sys.stderr)
        return e.exit_code
    except RunError as e:         # may quote a child's output over several lines
        print(f"{PROG}: {printable(e, keep=chr(10))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:      # Ctrl-C, or SIGTERM/SIGHUP during a run: 128 + the signal
        code = getattr(e, "exit_code", 130)
        print(f"{PROG}: interrupted" + ("" if code == 130 else f" by {e}"), file=sys.stderr)
        return code
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
