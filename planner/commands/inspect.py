"""dq-planner inspect FILE.gguf [--scheme S] [--json]

Reads only the GGUF header (so a partly downloaded file or the first shard of a split model is
enough; the other shards present are followed) and reports the architecture, file type, every
tensor's name/shape/type/bytes/offset, the totals, the metadata (giant arrays summarised) and the plan
the file implies (planner.core.llamacpp.sizing.size_file). With --scheme, the tensors whose type differs from
what that scheme's plan gives them (predicted against actual).

JSON (--json): the interface's keys {"path", "architecture", "file_type", "tensor_count", "tensor_bytes",
"tensors": [{"name", "shape", "type", "bytes", "offset"}], "metadata"} plus "file_type_id", "version",
"alignment", "data_offset", "file_size", "data_complete", "split_count", "shards", "missing_shards" (and,
of those, "empty_shards": present but 0 bytes, counted as missing),
"model" (id, name, architecture, layout, params, source; null for unsupported architectures), "plan"
(the file's SchemePlan: size_bytes, bpw, type_bytes ...) and, with --scheme, "scheme": {"id",
"size_bytes", "bpw", "differences": [{"name", "shape", "predicted", "actual", "predicted_bytes",
"actual_bytes"}]}. Tensor offsets are absolute byte positions in their file; split models add "shard"
(1-based) to each tensor.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from planner.errors import PlannerError


def parser():
    from planner.arg_parser import Parser

    p = Parser(prog="dq-planner inspect",
                description="Read a GGUF header (no tensor data needed): architecture, file type, tensors, "
                            "metadata and the plan the file implies.")
    p.add_argument("file", metavar="FILE.gguf", help="a GGUF file, or any shard of a split model; or a published "
                   "one: https://..., hf://OWNER/REPO/PATH, hf://OWNER/REPO with --quant, ms://OWNER/REPO/PATH "
                   "(only header bytes are read)")
    p.add_argument("--quant", metavar="NAME", help="with hf://OWNER/REPO or ms://OWNER/REPO: the GGUF set "
                   "(folder or shard set) of that name")
    p.add_argument("--scheme", metavar="S",
                   help="list the tensors whose type differs from this scheme's plan (ftype, recipe id or .toml)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p


def _table(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:  # type: ignore[assignment]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def _size(n: int) -> str:
    from planner.units import human

    h = human(n)
    return h if h.endswith(" B") else f"{h} ({n} bytes)"


def _value(v: Any) -> str:
    if isinstance(v, dict) and "length" in v and "head" in v:
        head = ", ".join(json.dumps(x, ensure_ascii=False) for x in v["head"])
        return f"[{v['length']} x {v['type'][6:-1]}: {head}, ...]"
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= 200 else s[:197] + "..."


def scheme_differences(model, scheme, present: set[str] | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """(the scheme's plan for the model's tensors, the tensors whose actual type differs from it).

    present: the names of the tensors the header(s) read hold; the others (of missing shards) have
    no actual type to compare."""
    from planner.core.ggml.tensor_types import tensor_bytes, type_name
    from planner.core.llamacpp.sizing import size_scheme

    plan = size_scheme(model, scheme)
    diffs = []
    for spec, p in zip(model.tensors, plan.tensors):
        if present is not None and spec.name not in present:
            continue
        actual = type_name(spec.src_type)
        if actual != p.type:
            diffs.append({"name": spec.name, "shape": list(spec.shape), "predicted": p.type, "actual": actual,
                          "predicted_bytes": p.bytes, "actual_bytes": tensor_bytes(spec.shape, spec.src_type)})
    return plan, diffs


def inspect_document(path: str, scheme_id: str | None = None, quant: str | None = None) -> dict[str, Any]:
    """Everything inspect reports, as the JSON document."""
    from planner.core.llamacpp.sizing import size_file
    from planner.gguf.header import read_gguf
    from planner.gguf.model import model_from_header

    from planner.remote import is_remote

    if is_remote(path):                  # published files: header bytes over ranged reads (planner/gguf/remote.py)
        from planner.gguf.remote import read_remote_gguf

        h = read_remote_gguf(path, quant)
    elif quant:
        raise PlannerError("--quant chooses a GGUF set of a hf:// or ms:// repository; a local file is read as it is")
    else:
        h = read_gguf(path)
    doc = h.to_dict()
    try:
        model = model_from_header(h)
    except PlannerError as e:
        if scheme_id:
            raise
        doc["model"] = None
        doc["plan"] = None
        doc["notes"] = [f"no plan: {e}"]
        return doc
    doc["model"] = {"id": model.id, "name": model.name, "architecture": model.hparams.arch,
                    "layout": model.layout, "params": model.params, "source": model.source}
    doc["plan"] = size_file(model).to_dict()
    doc["notes"] = []
    if scheme_id:
        from planner.core.llamacpp.schemes import resolve_scheme

        scheme = resolve_scheme(scheme_id)
        if not scheme.applies_to(model.hparams.arch):
            raise PlannerError(f"scheme {scheme.id} is a recipe for {', '.join(scheme.architectures)}, "
                               f"not {model.hparams.arch}")
        plan, diffs = scheme_differences(model, scheme, {t.name for t in h.tensors})
        doc["scheme"] = {"id": plan.id, "size_bytes": plan.size_bytes, "bpw": round(plan.bpw, 4),
                         "requires_imatrix": plan.requires_imatrix, "differences": diffs}
    return doc


def render(doc: dict[str, Any]) -> str:
    from planner.units import human

    out: list[str] = []
    complete = "data complete" if doc["data_complete"] else "data INCOMPLETE (header only or partial download)"
    out.append(f"{doc['path']}: GGUF v{doc['version']}, header {doc['data_offset']} bytes, {complete}")
    if doc["split_count"] > 1:
        present = len(doc["shards"])
        line = f"split model: {present} of {doc['split_count']} shards read"
        if doc["missing_shards"]:
            empty = set(doc.get("empty_shards", []))
            line += "; missing: " + ", ".join(m + (" (0 bytes)" if m in empty else "") for m in doc["missing_shards"])
        out.append(line)
    m = doc.get("model")
    if m:
        lay = f", {m['layout']} layout" if m["layout"] else ""
        n = m["params"]
        params = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"
        out.append(f"model:        {m['name']} ({m['architecture']}{lay}), {params} parameters")
    else:
        out.append(f"architecture: {doc['architecture']}")
    out.append(f"file type:    {doc['file_type'] or 'not recorded'}")
    out.append(f"tensors:      {doc['tensor_count']} in the header(s) read, "
               f"{_size(doc['tensor_bytes'])}")
    plan = doc.get("plan")
    if plan:
        out.append(f"plan:         {_size(plan['size_bytes'])}, {plan['bpw']:.2f} bpw"
                   + ("" if plan["size_bytes"] == doc["tensor_bytes"] else f"  [{m['source']}]"))
        rows = [[t, human(b), str(b), f"{100 * b / plan['size_bytes']:.1f}%"]
                for t, b in sorted(plan["type_bytes"].items(), key=lambda kv: -kv[1])]
        out += ["", _table(["type", "size", "bytes", "share"], rows, right={1, 2, 3})]
    for n in doc.get("notes", []):
        out.append(f"note: {n}")

    md = doc["metadata"]
    out += ["", f"metadata ({len(md)} keys):"]
    out += [f"  {k} = {_value(v)}" for k, v in md.items()]

    out += ["", "tensors:"]
    split = doc["split_count"] > 1
    rows = []
    for t in doc["tensors"]:
        r = [t["name"], _shape(t["shape"]), t["type"], str(t["bytes"]), str(t["offset"])]
        if split:
            r.append(str(t["shard"]))
        rows.append(r)
    out.append(_table(["name", "shape", "type", "bytes", "offset"] + (["shard"] if split else []), rows,
                      right={3, 4, 5}))

    sch = doc.get("scheme")
    if sch:
        diffs = sch["differences"]
        out += ["", f"scheme {sch['id']}: plan {_size(sch['size_bytes'])}, {sch['bpw']:.2f} bpw; "
                    f"{len(diffs)} tensor(s) differ from it"]
        if diffs:
            out.append(_table(["name", "shape", "predicted", "actual", "predicted bytes", "actual bytes"],
                              [[d["name"], _shape(d["shape"]), d["predicted"], d["actual"],
                                str(d["predicted_bytes"]), str(d["actual_bytes"])] for d in diffs],
                              right={4, 5}))
    return "\n".join(out)


def main(argv: list[str]) -> int:
    from planner.safe_text import json_text, printable

    a = parser().parse_args(argv)
    doc = inspect_document(a.file, a.scheme, a.quant)
    if a.json:
        sys.stdout.write(json_text(json.dumps(doc, indent=2, ensure_ascii=False)) + "\n")
    else:
        print(printable(render(doc), keep="\n"))   # names and values from the file, made inert
    return 0
