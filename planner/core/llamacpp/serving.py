"""llama-server with N slots under concurrency: time to first token, time per output token, throughput,
request rate, saturation and the largest concurrency the slots hold, for given prompt and output lengths.

Capacity. llama-server runs -np slots over -c cells. Without --kv-unified each slot has its own stream of
pad(ctx / np, 256) cells (planner/core/llamacpp/memory.py padded_ctx): a request of prompt + generated
tokens fits a slot or none, so the plan holds np requests at once or none. With --kv-unified the slots
share one cache of pad(ctx, 256) cells: floor(cells / (prompt + gen)) requests at once, at most np.
Requests beyond the slots that fit wait in llama-server's queue.

Decode step at batch b (planner/core/llamacpp/speed.py decode_step): llama-server decodes one token of
every generating slot in one batch. The weights are read once per step whatever b (for a mixture of
experts: the experts the batch touches, 1 - (1 - k/E)^b of them, each token routed to k of E
independently); the math grows with b at the kernels' ubatch rate (the host's measured gemm and
MUL_MAT_ID rates, or the device's FLOPS x the prefill factor): per weight type the step takes the larger
of the read and the math, so it is flat while memory-bound and grows linearly once compute-bound. Each
sequence reads its own cache: b sequences at a mean depth of prompt + gen/2 (the generated tokens' mean
position). The fixed costs (per layer and graph) are paid once per step.

Prefill: a prompt of P tokens in ubatches of min(-ub, -b) (speed.prefill_seconds), the same as the
single-stream prefill.

Concurrency (a closed loop: C clients, each sending its next request when the last one ends; the steady
state). b = min(C, max_concurrency) requests decode together. llama-server spends, per request, one
prefill of its prompt and gen - 1 decode steps shared by b requests, so it completes
  X = 1 / (prefill + (gen - 1) x step(b) / b)  requests per second,
and by Little's law a request spends C / X seconds in the server: b / X in a slot (its prefill, then its
gen - 1 tokens, slowed by the prefills of the others that llama-server interleaves with the steps) and
the rest in the queue. TTFT = queue + half a step (a new prompt waits for the running step; not with
b = 1) + its prefill; TPOT = the rest of its time in the slot over its gen - 1 later tokens. Output
tokens/s = X x gen. Saturation: the concurrency of the curve (1, 2, 4, ... and the largest) with the most
requests per second; more concurrency only queues.

Not modelled: the unified cache's attention over every used cell (llama.cpp masks the other sequences'
cells; their scan is not counted), speculative decoding, prompt caching between requests, and the HTTP
and sampling costs per token outside the graph.
"""

from __future__ import annotations

from planner.core.llamacpp.memory import padded_ctx
from planner.core.llamacpp.speed import Speed, SpeedLayout, decode_step, prefill_seconds
from planner.core.plan import PlanRequest, Saturation, SchemePlan, Serving, ServingPoint
from planner.errors import PlannerError

MAX_TOKENS = 1 << 31                     # prompt + generated tokens: llama.cpp's 32-bit positions


def max_concurrency(ctx: int, parallel: int, kv_unified: bool, prompt: int, gen: int) -> int:
    """The requests of prompt + gen tokens that -np slots over -c cells hold at once (see the module)."""
    need = prompt + gen
    if kv_unified:
        n_ctx, _ = padded_ctx(ctx, 1)
        return min(parallel, n_ctx // need)
    _, n_ctx_seq = padded_ctx(ctx, parallel)
    return parallel if need <= n_ctx_seq else 0


def step_seconds(lay: SpeedLayout, batch: int, depth: float, expert_batch: int | None = None) -> float:
    """One decode step of `batch` sequences at a mean depth of `depth` cached tokens each."""
    sec, _, _ = decode_step(lay, batch, batch * depth, expert_batch)
    return sum(sec.values())


def concurrency_curve(limit: int) -> list[int]:
    """1, 2, 4, ... below `limit`, and `limit` itself."""
    out, c = [], 1
    while c < limit:
        out.append(c)
        c *= 2
    return out + [limit] if limit >= 1 else []


def serving_point(lay: SpeedLayout, concurrency: int, slots: int, prompt: int, gen: int,
                  prefill_s: float | None = None) -> ServingPoint:
    """The steady state of `concurrency` clients on `slots` slots (see the module's docstring)."""
    b = min(concurrency, slots)
    step = step_seconds(lay, b, prompt + gen / 2.0)
    pre = prefill_seconds(lay, prompt) if prefill_s is None else prefill_s
    per_request = pre + (gen - 1) * step / b            # the server's time per request, all slots busy
    rate = 1.0 / per_request
    in_slot = b / rate
    queue = concurrency / rate - in_slot
    wait = step / 2.0 if b > 1 else 0.0
    ttft = queue + wait + pre
    tpot = (in_slot - wait - pre) / (gen - 1) if gen > 1 else step
    return ServingPoint(concurrency=concurrency, ttft_s=ttft, tpot_s=tpot, output_tps=rate * gen,
                        requests_per_s=rate)


def llamacpp_serving(speed: Speed | None, ctx: int, parallel: int, kv_unified: bool, concurrency: int,
                     prompt: int, gen: int, gpus: int = 1) -> Serving | None:
    """The Serving figures of one llama.cpp plan (its Speed's layout) for `concurrency` clients sending
    requests of `prompt` + `gen` tokens; None without a speed prediction or when no request of these
    lengths fits a slot (max_concurrency 0). gpus: the devices it runs on (figures per GPU; the bound names
    the place or link with the largest share of the step; beyond the slots requests queue, which the
    figures say: max_concurrency below the concurrency)."""
    if concurrency < 1 or prompt < 1 or gen < 1:
        raise PlannerError("concurrency, prompt and generated tokens must each be at least 1")
    if prompt + gen > MAX_TOKENS:
        raise PlannerError(f"prompt + generated tokens must be below {MAX_TOKENS}")
    if speed is None or speed.layout is None:
        return None
    slots = max_concurrency(ctx, parallel, kv_unified, prompt, gen)
    if slots < 1:
        return None
    lay = speed.layout
    pre = prefill_seconds(lay, prompt)
    curve = [serving_point(lay, c, slots, prompt, gen, pre) for c in concurrency_curve(slots)]
    best = max(curve, key=lambda p: p.requests_per_s)
    at = next((p for p in curve if p.concurrency == concurrency), None) or \
        serving_point(lay, concurrency, slots, prompt, gen, pre)
    sec, _, _ = decode_step(lay, min(concurrency, slots), min(concurrency, slots) * (prompt + gen / 2.0))
    bound = max(sec, key=lambda k: sec[k])
    return Serving(concurrency=concurrency, prompt_tokens=prompt, gen_tokens=gen, ttft_s=at.ttft_s,
                   tpot_s=at.tpot_s, output_tps=at.output_tps, requests_per_s=at.requests_per_s,
                   max_concurrency=slots,
                   saturation=Saturation(best.concurrency, best.requests_per_s, best.output_tps), curve=curve,
                   gpus=max(1, gpus), bound=bound)


def scheme_serving(sp: SchemePlan, req: PlanRequest) -> Serving | None:
    """A planned scheme's Serving under the request's load (--concurrency, --prompt, --gen) with its slots
    (-np, -c, --kv-unified); per GPU: the devices that hold its layers."""
    gpus = sum(1 for d in sp.memory.per_device if d.layers) if sp.memory is not None else 0
    return llamacpp_serving(sp.speed, req.ctx, req.parallel, req.kv_unified, req.concurrency, req.prompt,
                            req.gen_tokens, gpus)
