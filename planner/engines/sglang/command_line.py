"""Pasted `python -m sglang.launch_server` commands (one per node) as a plan request.

The flags are SGLang 0.4.3's (profiles/engines/sglang.toml; the full list is kept in
tests/fixtures/engine_flags/sglang-0.4.3.txt and every one of them is classified below), read as its
argparse reads them (`--tp 16` is --tp-size). Planned: --model-path, --tp-size (one tensor-parallel
group over every node), --nnodes, --node-rank, --dist-init-addr, --enable-dp-attention with --dp-size
(equal to the TP size, as SGLang runs it), --enable-ep-moe with --ep-size (equal to the TP size, as
ServerArgs sets it), --context-length, --mem-fraction-static, --kv-cache-dtype, --max-running-requests,
and --quantization/--dtype where they keep the checkpoint as it is. Flags that change memory in ways
not modelled are refused in one line.

Several nodes run the same command with their own --node-rank; given together, the commands must agree
in everything else and name distinct ranks below --nnodes.
"""

from __future__ import annotations

from planner.core.engine import CommandRequest
from planner.core.plan import PlanRequest
from planner.engines.command_text import PREFIX, Flag, FlagTable, fraction, integer, program_name, python_module
from planner.engines.hf_command_line import (
    cache_type,
    check_dtype,
    check_quantization,
    entry_of,
    request_over,
    served_checkpoint,
)
from planner.engines.sglang.memory import layout_for
from planner.errors import PlannerError
from planner.safe_text import printable


def _flags() -> list[Flag]:
    out = []

    def add(names: str, arity=1, dest=None, refused=None):
        out.append(Flag(tuple(names.split()), arity, dest, refused))

    add("--model-path --model", dest="model")
    add("--tensor-parallel-size --tp-size", dest="tp")
    add("--data-parallel-size --dp-size", dest="dp")
    add("--enable-dp-attention", 0, dest="dp_attention")
    add("--enable-ep-moe", 0, dest="ep_moe")
    add("--expert-parallel-size --ep-size", dest="ep")
    add("--nnodes", dest="nnodes")
    add("--node-rank", dest="node_rank")
    add("--dist-init-addr --nccl-init-addr", dest="dist_init_addr")
    add("--context-length", dest="ctx")
    add("--mem-fraction-static", dest="mem_fraction_static")
    add("--kv-cache-dtype", dest="kv_cache_dtype")
    add("--max-running-requests", dest="max_num_seqs")
    add("--quantization", dest="quantization")
    add("--dtype", dest="dtype")
    for n in ("--tokenizer-path --host --port --tokenizer-mode --load-format --quantization-param-path "
              "--served-model-name --chat-template --revision --schedule-policy --schedule-conservativeness "
              "--stream-interval --random-seed --constrained-json-whitespace-pattern --watchdog-timeout "
              "--download-dir --log-level --log-level-http --decode-log-interval --api-key "
              "--file-storage-pth --load-balance-method --json-model-override-args --sampling-backend "
              "--grammar-backend --tool-call-parser --attention-backend --base-gpu-id").split():
        add(n)
    for n in ("--skip-tokenizer-init --trust-remote-code --is-embedding --stream-output --log-requests "
              "--show-time-cost --enable-metrics --enable-cache-report --disable-radix-cache "
              "--disable-jump-forward --disable-outlines-disk-cache --disable-custom-all-reduce "
              "--disable-overlap-schedule --enable-nan-detection --enable-p2p-check "
              "--triton-attention-reduce-in-fp32 --delete-ckpt-after-loading --allow-auto-truncate "
              "--enable-custom-logit-processor --return-hidden-states --enable-request-id-headers "
              "--enable-flashinfer-mla --disable-cuda-graph-padding --enable-nccl-nvls").split():
        add(n, 0)
    for names, why in (
        ("--device", "another device type"),
        ("--max-total-tokens", "a fixed KV pool"),
        ("--chunked-prefill-size --max-prefill-tokens --enable-mixed-chunk", "another prefill chunk"),
        ("--cpu-offload-gb", "weights offloaded to the CPU"),
        ("--prefill-only-one-req", "another prefill batch"),
        ("--lora-paths --max-loras-per-batch --lora-backend", "LoRA adapters"),
        ("--speculative-algorithm --speculative-draft-model-path --speculative-num-steps "
         "--speculative-num-draft-tokens --speculative-eagle-topk", "speculative decoding"),
        ("--enable-double-sparsity --ds-channel-config-path --ds-heavy-channel-num --ds-heavy-token-num "
         "--ds-heavy-channel-type --ds-sparse-decode-threshold", "double sparsity"),
        ("--disable-cuda-graph --cuda-graph-max-bs --cuda-graph-bs --enable-torch-compile "
         "--torch-compile-max-bs --num-continuous-decode-steps", "other CUDA graphs"),
        ("--disable-mla", "the MLA cache off"),
        ("--torchao-config", "torchao quantization"),
        ("--triton-attention-num-kv-splits", "other attention buffers"),
        ("--enable-memory-saver", "released memory"),
        ("--enable-hierarchical-cache", "a host KV cache"),
        # later SGLang versions
        ("--pipeline-parallel-size --pp-size", "pipeline parallelism"),
        ("--moe-dense-tp-size --enable-deepep-moe --moe-a2a-backend", "expert parallelism"),
    ):
        for n in names.split():
            add(n, "?", refused=why)
    return out


TABLE = FlagTable("sglang.launch_server", _flags())
SERVE = ["sglang", "serve"]          # later versions' own command


def _launch_start(words: list[str]) -> int | None:
    mod, start = python_module(words)
    if mod == "sglang.launch_server":
        return start
    if [program_name(words[0])] + words[1:2] == SERVE:
        return 2
    return None


def parse_commands(commands: list[list[str]], base: PlanRequest) -> CommandRequest | None:
    launches = [(c, s) for c in commands if (s := _launch_start(c)) is not None]
    if not launches:
        return None
    other = [c for c in commands if all(c is not x for x, _ in launches)]
    if other:
        raise PlannerError(f"{PREFIX}: '{printable(' '.join(other[0][:2]))}' is not part of an SGLang deployment "
                           "(one sglang.launch_server per node)")
    read = [TABLE.read(c, s) for c, s in launches]
    planned, neutral, positional = read[0]
    if positional:
        raise PlannerError(f"{PREFIX}: sglang.launch_server takes no positional arguments, got "
                           f"{printable(positional[0])}")
    ranks = [integer("--node-rank", p.get("node_rank", "0"), 0, 1 << 16) for p, _, _ in read]
    for p, _, _ in read[1:]:
        a = {k: v for k, v in p.items() if k != "node_rank"}
        b = {k: v for k, v in planned.items() if k != "node_rank"}
        if a != b:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise PlannerError(f"{PREFIX}: the nodes' sglang.launch_server commands differ in {', '.join(diff)}; "
                               "they must agree in all but --node-rank")
    nnodes = integer("--nnodes", planned.get("nnodes", "1"), 1, 1024)
    if len(set(ranks)) != len(ranks) or max(ranks) >= nnodes:
        raise PlannerError(f"{PREFIX}: --node-rank {', '.join(map(str, ranks))} with --nnodes {nnodes}: each node "
                           "needs its own rank below --nnodes")
    if nnodes > 1 and "dist_init_addr" not in planned:
        raise PlannerError(f"{PREFIX}: --nnodes {nnodes} needs --dist-init-addr HOST:PORT (the first node's)")
    path = planned.get("model")
    if not isinstance(path, str):
        raise PlannerError(f"{PREFIX}: the sglang.launch_server command has no --model-path")
    model, fmt, checkpoint = served_checkpoint(path, base)
    entry = entry_of(model)
    if "quantization" in planned:
        check_quantization("--quantization", str(planned["quantization"]), fmt)
    if "dtype" in planned:
        check_dtype("--dtype", str(planned["dtype"]))
    tp = integer("--tp-size", planned.get("tp", "1"), 1, 4096)
    if tp % nnodes:
        raise PlannerError(f"{PREFIX}: --tp-size {tp} over --nnodes {nnodes}: SGLang needs the same number of "
                           "GPUs on every node")
    dp_attention = bool(planned.get("dp_attention"))
    dp = integer("--dp-size", planned.get("dp", str(tp if dp_attention else 1)), 1, 4096)
    if dp_attention and dp != tp:
        raise PlannerError(f"{PREFIX}: --enable-dp-attention with --dp-size {dp} and --tp-size {tp}: planned "
                           "with the DP size equal to the TP size only")
    if not dp_attention and dp > 1:
        raise PlannerError(f"{PREFIX}: --dp-size {dp} without --enable-dp-attention ({dp} replicas) changes "
                           "memory and is not modelled")
    ep_moe = bool(planned.get("ep_moe"))
    if "ep" in planned:
        ep = integer("--ep-size", planned["ep"], 1, 4096)
        if ep_moe and ep != tp or not ep_moe and ep > 1:
            raise PlannerError(f"{PREFIX}: --ep-size {ep}: SGLang's expert parallelism is --enable-ep-moe with the "
                               f"EP size equal to the TP size ({tp})")
    notes: list[str] = []
    if "ctx" in planned:
        ctx = integer("--context-length", planned["ctx"], 1, 1 << 24)
    else:
        ctx = entry.hparams.n_ctx_train
        notes.append(f"no --context-length: SGLang takes the model's {ctx:,} tokens; planned so")
    kw: dict = dict(engine="sglang", model=model, model_file=None, schemes=[fmt.id], checkpoint=checkpoint,
                    gpus=tp // nnodes, nodes=nnodes, ctx=ctx, dp_attention=dp_attention, ep_moe=ep_moe,
                    cache_type_k="f16", cache_type_v="f16")
    if "dist_init_addr" in planned:
        host = str(planned["dist_init_addr"]).rsplit(":", 1)[0]
        if host:
            kw["head_address"] = host
    if "mem_fraction_static" in planned:
        kw["mem_fraction_static"] = fraction("--mem-fraction-static", planned["mem_fraction_static"])
    if "kv_cache_dtype" in planned:
        kw["cache_type_k"] = kw["cache_type_v"] = cache_type("--kv-cache-dtype", str(planned["kv_cache_dtype"]))
    if "max_num_seqs" in planned:
        kw["max_num_seqs"] = integer("--max-running-requests", planned["max_num_seqs"], 1, 1 << 20)
    if dp_attention and entry.hparams.arch != "deepseek2":
        raise PlannerError(f"{PREFIX}: SGLang's DP attention serves DeepSeek (MLA) models only; {entry.id} is "
                           f"{entry.hparams.arch}")
    layout, why = layout_for(entry, fmt, tp // nnodes, nnodes, dp_attention, ep_moe)
    if layout.tp != tp:
        raise PlannerError(f"{PREFIX}: SGLang would not start with --tp-size {tp}: {why}")
    if len(read) < nnodes:
        notes.append(f"{len(read)} of the {nnodes} nodes' commands given; the others run the same with their own "
                     "--node-rank")
    if neutral:
        notes.append("accepted, memory unchanged: " + " ".join(dict.fromkeys(n for _, ns, _ in read for n in ns)))
    return CommandRequest(request_over(base, **kw), "sglang", notes)
