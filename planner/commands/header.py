"""dq-planner header --model ID|DIR --scheme S --output F.gguf [--layout mla|legacy]

Writes the GGUF that llama-quantize would produce for the model and scheme, header complete (the metadata
llama.cpp's converter writes, a vocabulary of the model's size, every tensor's info with its real shape
and the type llama-quantize's rules give it) and the tensor data as a hole: a sparse file of the full
length that uses only the header's disk blocks. llama.cpp's own `llama-fit-params` or `llama-server --fit`
can then place it on real devices before anything is downloaded (they check every tensor's shape).

The file is written under a temporary name beside F.gguf and published without replacing anything: an
existing F.gguf is an error (exit 2), as it is for quantize.
"""

from __future__ import annotations

import os
import sys

from planner.errors import PlannerError


def parser():
    from planner.arg_parser import Parser

    p = Parser(prog="dq-planner header",
                description="Write the GGUF llama-quantize would produce (full header, sparse data) for "
                            "llama.cpp's own fit tools.")
    p.add_argument("--model", required=True, metavar="ID|DIR", help="catalog id or a local Hugging Face folder")
    p.add_argument("--scheme", required=True, metavar="S", help="a llama-quantize ftype, a recipe id or a recipe .toml")
    p.add_argument("--output", required=True, metavar="F.gguf", help="the file to write (never replaced)")
    p.add_argument("--layout", choices=["mla", "legacy"],
                   help="DeepSeek GGUF layout (deepseek2 only): split attn_k_b/attn_v_b, or the early-2025 "
                        "attn_kv_b [mla]")
    return p


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)

    from planner.model_files import resolve_model
    from planner.core.llamacpp.schemes import resolve_scheme
    from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
    from planner.gguf.writer import write_sparse_gguf

    entry = resolve_model(a.model)
    arch = entry.hparams.arch
    if a.layout is not None and arch != "deepseek2":
        raise PlannerError(f"--layout applies to deepseek2 models; {entry.id} is {arch}")
    scheme = resolve_scheme(a.scheme)
    if not scheme.applies_to(arch):
        raise PlannerError(f"scheme {scheme.id} is a recipe for {', '.join(scheme.architectures)}, not {arch}")
    out = os.path.abspath(a.output)
    if not os.path.isdir(os.path.dirname(out)):
        raise PlannerError(f"{a.output}: its folder does not exist")
    if os.path.lexists(out):
        raise PlannerError(f"{a.output} exists; not overwriting it")
    model = resolve_catalog_model(entry, a.layout)
    plan = size_scheme(model, scheme)
    try:
        path = write_sparse_gguf(out, model, types=plan, file_type=scheme.base)
    except OSError as e:
        raise PlannerError(f"{a.output}: {e.strerror or e}") from None
    st = os.stat(path)
    print(f"wrote {a.output}: {model.name} ({arch}{', ' + model.layout + ' layout' if model.layout else ''}) "
          f"as {scheme.id}, {len(plan.tensors)} tensors, {plan.size_bytes} bytes of tensor data "
          f"({plan.size_bytes / 2**30:.2f} GiB, {plan.bpw:.2f} bpw); file length {st.st_size} bytes, "
          f"{st.st_blocks * 512} on disk (sparse: the data is a hole)")
    if plan.requires_imatrix:
        print(f"note: llama-quantize makes {scheme.id} only with --imatrix; the types are planned with one",
              file=sys.stderr)
    return 0
