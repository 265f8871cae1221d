"""A pasted `vllm serve` command (and the `ray start` lines of its nodes) as a plan request.

The flags are vLLM 0.7.3's (profiles/engines/vllm.toml; the full list is kept in
tests/fixtures/engine_flags/vllm-0.7.3.txt and every one of them is classified below): planned are the
served checkpoint (positional or --model), --tensor-parallel-size/-tp (the GPUs of a node), 
--pipeline-parallel-size/-pp (one stage per node, the planner's vLLM layout), --max-model-len,
--gpu-memory-utilization, --kv-cache-dtype, --max-num-seqs, and --quantization/--dtype where they keep
the checkpoint as it is. Flags that change memory in ways not modelled are refused in one line; so are
later vLLM versions' layout flags (data and expert parallelism, multi-node without Ray).

Several nodes: `ray start --head` on the head, `ray start --address=HEAD:PORT` on each other node, then
`vllm serve ... --pipeline-parallel-size N --distributed-executor-backend ray` on the head. Given with
the command, the `ray start` lines must make a cluster of N nodes.
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
from planner.engines.vllm.memory import layout_for
from planner.errors import PlannerError
from planner.safe_text import printable

def _flags() -> list[Flag]:
    out = []

    def add(names: str, arity=1, dest=None, refused=None):
        out.append(Flag(tuple(names.split()), arity, dest, refused))

    # planned
    add("--model", dest="model")
    add("--tensor-parallel-size -tp", dest="tp")
    add("--pipeline-parallel-size -pp", dest="pp")
    add("--max-model-len", dest="ctx")
    add("--gpu-memory-utilization", dest="gpu_memory_utilization")
    add("--kv-cache-dtype", dest="kv_cache_dtype")
    add("--max-num-seqs", dest="max_num_seqs")
    add("--quantization -q", dest="quantization")
    add("--dtype", dest="dtype")
    add("--distributed-executor-backend", dest="backend")
    # neutral: the server, the tokenizer, logging, scheduling order, where files come from
    for n in ("--host --port --uvicorn-log-level --allowed-origins --allowed-methods --allowed-headers --api-key "
              "--chat-template --chat-template-content-format --response-role --ssl-keyfile --ssl-certfile "
              "--ssl-ca-certs --ssl-cert-reqs --root-path --middleware --reasoning-parser --tool-call-parser "
              "--tool-parser-plugin --task --tokenizer --revision --code-revision --tokenizer-revision "
              "--tokenizer-mode --intial-incremental-detokenization-offset --allowed-local-media-path "
              "--download-dir --load-format --config-format --guided-decoding-backend --logits-processor-pattern "
              "--model-impl --max-parallel-loading-workers --num-lookahead-slots --seed --swap-space "
              "--max-logprobs --rope-theta --tokenizer-pool-size --tokenizer-pool-type "
              "--tokenizer-pool-extra-config --limit-mm-per-prompt --mm-processor-kwargs --num-scheduler-steps "
              "--multi-step-stream-outputs --scheduler-delay-factor --model-loader-extra-config "
              "--ignore-patterns --preemption-mode --otlp-traces-endpoint --collect-detailed-traces "
              "--scheduling-policy --override-neuron-config --override-pooler-config --worker-cls "
              "--generation-config --override-generation-config --max-log-len").split():
        add(n)
    add("--served-model-name", "+")
    for n in ("--allow-credentials --enable-ssl-refresh --return-tokens-as-token-ids "
              "--disable-frontend-multiprocessing --enable-request-id-headers --enable-auto-tool-choice "
              "--enable-reasoning --skip-tokenizer-init --trust-remote-code --ray-workers-use-nsight "
              "--enable-prefix-caching --no-enable-prefix-caching --disable-sliding-window "
              "--use-v2-block-manager --disable-log-stats --disable-custom-all-reduce "
              "--disable-mm-preprocessor-cache --disable-async-output-proc --enable-sleep-mode "
              "--calculate-kv-scales --disable-log-requests --disable-fastapi-docs "
              "--enable-prompt-tokens-details").split():
        add(n, 0)
    # refused: memory the plan does not model
    for names, why in (
        ("--lora-modules --enable-lora --enable-lora-bias --max-loras --max-lora-rank --lora-extra-vocab-size "
         "--lora-dtype --long-lora-scaling-factors --max-cpu-loras --fully-sharded-loras "
         "--qlora-adapter-name-or-path", "LoRA adapters"),
        ("--prompt-adapters --enable-prompt-adapter --max-prompt-adapters --max-prompt-adapter-token",
         "prompt adapters"),
        ("--block-size", "another KV block size"),
        ("--cpu-offload-gb", "weights offloaded to the CPU"),
        ("--num-gpu-blocks-override", "a fixed KV block count"),
        ("--max-num-batched-tokens", "another profiling batch"),
        ("--enable-chunked-prefill", "the chunked-prefill setting"),
        ("--enforce-eager", "no CUDA graphs"),
        ("--max-seq-len-to-capture --compilation-config -O", "other CUDA graphs"),
        ("--rope-scaling --hf-overrides", "another model configuration"),
        ("--device", "another device type"),
        ("--kv-transfer-config", "a disaggregated KV cache"),
        ("--speculative-model --speculative-model-quantization --num-speculative-tokens "
         "--speculative-disable-mqa-scorer --speculative-draft-tensor-parallel-size -spec-draft-tp "
         "--speculative-max-model-len --speculative-disable-by-batch-size --ngram-prompt-lookup-max "
         "--ngram-prompt-lookup-min --spec-decoding-acceptance-method "
         "--typical-acceptance-sampler-posterior-threshold --typical-acceptance-sampler-posterior-alpha "
         "--disable-logprobs-during-spec-decoding", "speculative decoding"),
        # later vLLM versions' layouts: the planner's vLLM layout is TP in a node and PP across nodes
        ("--data-parallel-size -dp --data-parallel-size-local --data-parallel-address --data-parallel-rpc-port "
         "--data-parallel-start-rank --data-parallel-backend", "data parallelism"),
        ("--enable-expert-parallel", "expert parallelism"),
        ("--nnodes --node-rank --master-addr --master-port --headless",
         "multi-node without Ray: TP across nodes"),
    ):
        for n in names.split():
            add(n, "?", refused=why)
    return out


TABLE = FlagTable("vllm serve", _flags())
SERVE = ["vllm", "serve"]
RAY_FLAGS = FlagTable("ray start", [Flag(("--head",), 0), Flag(("--block",), 0), Flag(("--node-ip-address",)),
                                    Flag(("--port",)), Flag(("--address",), dest="address"),
                                    Flag(("--num-gpus",), dest="num_gpus"),
                                    Flag(("--dashboard-host",)), Flag(("--include-dashboard",))])


def _serve_start(words: list[str]) -> int | None:
    """Where a `vllm serve` command's arguments start (None: not one)."""
    if [program_name(words[0])] + words[1:2] == SERVE:
        return 2
    mod, start = python_module(words)
    if mod in ("vllm.entrypoints.openai.api_server", "vllm.entrypoints.cli.main"):
        return start
    return None


def parse_commands(commands: list[list[str]], base: PlanRequest) -> CommandRequest | None:
    serves = [(c, s) for c in commands if (s := _serve_start(c)) is not None]
    if not serves:
        return None
    if len(serves) > 1:
        raise PlannerError(f"{PREFIX}: {len(serves)} vllm serve commands; a deployment runs one, on the head")
    rays = [c for c in commands if program_name(c[0]) == "ray" and c[1:2] == ["start"]]
    other = [c for c in commands if c is not serves[0][0] and c not in rays]
    if other:
        raise PlannerError(f"{PREFIX}: '{printable(' '.join(other[0][:2]))}' is not part of a vLLM deployment "
                           "(vllm serve and ray start)")
    words, start = serves[0]
    planned, neutral, positional = TABLE.read(words, start)
    notes: list[str] = []
    if len(positional) > 1:
        raise PlannerError(f"{PREFIX}: vllm serve takes one model, got {' '.join(map(printable, positional))}")
    path = positional[0] if positional else planned.get("model")
    if not isinstance(path, str):
        raise PlannerError(f"{PREFIX}: the vllm serve command names no model")
    model, fmt, checkpoint = served_checkpoint(path, base)
    entry = entry_of(model)
    if "quantization" in planned:
        check_quantization("--quantization", str(planned["quantization"]), fmt)
    if "dtype" in planned:
        check_dtype("--dtype", str(planned["dtype"]))
    tp = integer("--tensor-parallel-size", planned.get("tp", "1"), 1, 1024)
    pp = integer("--pipeline-parallel-size", planned.get("pp", "1"), 1, 1024)
    backend = str(planned.get("backend", "ray" if pp > 1 else "mp"))
    if pp > 1 and backend != "ray":
        raise PlannerError(f"{PREFIX}: --pipeline-parallel-size {pp} across nodes needs "
                           "--distributed-executor-backend ray (vLLM 0.7.3)")
    if rays:
        heads = [c for c in rays if "--head" in c]
        if len(heads) != 1 or len(rays) > pp:
            raise PlannerError(f"{PREFIX}: the ray start lines make a cluster of {len(rays)} node(s) "
                               f"({len(heads)} head), but --pipeline-parallel-size is {pp}: one node per stage")
        for c in rays:
            RAY_FLAGS.read(c, 2)
        if len(rays) < pp:
            notes.append(f"{len(rays)} of the {pp} nodes' ray start lines given; the others join the head the same way")
    if "ctx" in planned:
        ctx = integer("--max-model-len", planned["ctx"], 1, 1 << 24)
    else:
        ctx = entry.hparams.n_ctx_train
        notes.append(f"no --max-model-len: vLLM takes the model's {ctx:,} tokens; planned so")
    kw: dict = dict(engine="vllm", model=model, model_file=None, schemes=[fmt.id], checkpoint=checkpoint,
                    gpus=tp, nodes=pp, ctx=ctx, cache_type_k="f16", cache_type_v="f16")
    if "gpu_memory_utilization" in planned:
        kw["gpu_memory_utilization"] = fraction("--gpu-memory-utilization", planned["gpu_memory_utilization"])
    if "kv_cache_dtype" in planned:
        kw["cache_type_k"] = kw["cache_type_v"] = cache_type("--kv-cache-dtype", str(planned["kv_cache_dtype"]))
    if "max_num_seqs" in planned:
        kw["max_num_seqs"] = integer("--max-num-seqs", planned["max_num_seqs"], 1, 1 << 20)
    layout, why = layout_for(entry, fmt, tp, pp)
    if layout.tp != tp:
        raise PlannerError(f"{PREFIX}: vLLM would not start with --tensor-parallel-size {tp}: {why}")
    if pp > 1:
        notes.append(f"--pipeline-parallel-size {pp}: one stage per node of {tp} GPUs (the planner's vLLM layout)")
    if neutral:
        notes.append("accepted, memory unchanged: " + " ".join(dict.fromkeys(neutral)))
    return CommandRequest(request_over(base, **kw), "vllm", notes)
