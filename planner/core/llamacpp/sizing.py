"""Exact GGUF tensor bytes of a model under a scheme: llama.cpp's type rules, rows x row size."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from planner.core.ggml.gguf_constants import GGMLQuantizationType as T

from planner.core.catalog import Hparams, ModelEntry
from planner.core.ggml.tensor_types import tensor_bytes, type_name
from planner.core.llamacpp.architectures import TensorSpec, enumerate_tensors
from planner.core.llamacpp.memory import LayerWeights, tensor_site
from planner.core.llamacpp.schemes import Scheme
from planner.core.llamacpp.speed import speed_site
from planner.core.llamacpp.type_rules import IMATRIX_TYPES, QuantModel, TensorTable, requires_imatrix, select_types
from planner.core.plan import SchemePlan, TensorPlans


@dataclass
class ResolvedModel:
    """A model with its concrete tensor list (from the catalog/config.json, or from a GGUF header)."""

    id: str
    name: str
    hparams: Hparams
    layout: str | None                  # deepseek2: "mla" | "legacy"; None for dense models
    tensors: list[TensorSpec]
    source: str
    file_scheme: str | None = None      # set when the tensors (and their types) come from a GGUF file
    file_path: str | None = None
    metadata: dict = field(default_factory=dict)
    predicted_tensors: int = 0          # a split file's missing shards: tensors typed by its ftype's rules, not read

    @cached_property
    def params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @cached_property
    def sites(self) -> tuple[tuple[int, bool, bool, bool, int, bool], ...]:
        """Per tensor, what does not change with the scheme: (llama.cpp layer, routed expert for
        --n-cpu-moe, loaded by llama.cpp (memory.tensor_site), routed expert for the speed model
        (speed.speed_site), rows read per token's one row (token_embd: its rows, else 1), a matrix)."""
        hp = self.hparams
        out = []
        for t in self.tensors:
            il, expert, loaded = tensor_site(t.name, hp.n_layer, hp.n_layer_nextn)
            _, expert_speed = speed_site(t.name, hp.n_layer)
            rows = (t.shape[1] if len(t.shape) > 1 else 1) if il < 0 else 1
            out.append((il, expert, loaded, expert_speed, rows, len(t.shape) >= 2))
        return tuple(out)

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    @cached_property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(t.shape for t in self.tensors)

    @cached_property
    def src_type_names(self) -> list[str]:
        return [_TYPE_NAME[t.src_type] for t in self.tensors]

    @cached_property
    def table(self) -> TensorTable:
        return TensorTable.build([(t.name, t.shape, t.src_type) for t in self.tensors], self.hparams.arch)

    def quant_model(self) -> QuantModel:
        hp = self.hparams
        # the MLA layout writes head_count_kv = 1 (GQA with one group), the legacy layout n_head
        n_gqa = hp.n_head if self.layout == "mla" else hp.n_gqa
        return QuantModel(arch=hp.arch, n_layer_all=hp.n_layer, n_expert=hp.n_expert, n_gqa=n_gqa,
                          llm_type=hp.llm_type())


def resolve_catalog_model(entry: ModelEntry, layout: str | None) -> ResolvedModel:
    hp = entry.hparams
    lay = (layout or "mla") if hp.arch == "deepseek2" else None
    src = T.BF16 if entry.gguf_source_type == "bf16" else T.F16
    return ResolvedModel(id=entry.id, name=entry.name, hparams=hp, layout=lay,
                         tensors=enumerate_tensors(hp, lay, src), source=entry.source)


# indexed by the type's value: a list lookup, where a dict keyed by the enum would hash it in Python
_TYPE_NAME = [""] * (max(T) + 1)
for _t in T:
    _TYPE_NAME[_t] = type_name(_t)


@lru_cache(maxsize=None)
def _bytes(shape: tuple[int, ...], ty: int) -> int:
    return tensor_bytes(shape, T(ty))


def _aggregate(scheme_id: str, kind: str, model: ResolvedModel, types: list[T], needs_imatrix: bool) -> SchemePlan:
    """Every tensor's bytes (rows x row size, once per shape and type: a model's blocks repeat them), and
    in the same pass the sums that placement and speed read: the weights per llama.cpp layer
    (memory.LayerWeights, as LayerWeights.of sums them) and the speed model's groups (speed.tensor_groups);
    tests check both against the per-tensor functions."""
    n_layer = model.hparams.n_layer
    type_bytes: dict[str, int] = defaultdict(int)
    total = 0
    names = _TYPE_NAME
    sizes: list[int] = []
    tnames: list[str] = []
    per = [0] * (n_layer + 1)
    exps = [0] * (n_layer + 1)
    big = [0] * (n_layer + 1)
    big_exp = [0] * (n_layer + 1)
    host = 0
    groups: dict[tuple[int, bool, str], list] = {}
    for t, ty, (il, expert, loaded, expert_speed, row_div, matrix) in zip(model.tensors, types, model.sites):
        ti = int(ty)
        b = _bytes(t.shape, ti)
        n = names[ti]
        sizes.append(b)
        tnames.append(n)
        type_bytes[n] += b
        total += b
        key = (il, expert_speed, n)
        g = groups.get(key)
        if g is None:
            g = groups[key] = [0.0, 0, 0, 0]
        g[0] += b / row_div if row_div != 1 else b
        g[1] += t.n_elements
        g[2] += 1 if il < 0 else t.n_elements // t.shape[0]
        if matrix and il >= 0:
            g[3] += t.shape[0]
        if il < 0:
            host += b
        elif loaded:
            per[il] += b
            if b > big[il] and matrix:
                big[il] = b
            if expert:
                exps[il] += b
                if b > big_exp[il]:
                    big_exp[il] = b
    tensors = TensorPlans(model.names, model.shapes, tnames, sizes, model.src_type_names)
    return SchemePlan(id=scheme_id, kind=kind, size_bytes=total, params=model.params,
                      type_bytes=dict(type_bytes), tensors=tensors, requires_imatrix=needs_imatrix,
                      weights_by_layer=LayerWeights(tuple(per), host, tuple(exps), tuple(big), tuple(big_exp)),
                      tensor_groups=[(k, tuple(v)) for k, v in groups.items()])


def select_scheme_types(model: ResolvedModel, scheme: Scheme, imatrix: bool | None = None) -> tuple[list[T], bool, bool]:
    """(types, has_imatrix used, any tensor requires an imatrix).

    imatrix None: plan as the user must run it, i.e. with an imatrix exactly when the scheme's types
    need one (llama-quantize refuses IQ1/IQ2/IQ3_XXS and Q2_K_S's q2_K tensors without it).
    """
    scheme = scheme.for_arch(model.hparams.arch)       # a recipe's own rules for this layout, if any
    tab = model.table
    qm = model.quant_model()

    def run(has_imatrix: bool) -> tuple[list[T], bool]:
        types = select_types(qm, tab, scheme.ftype, list(scheme.rules), has_imatrix=has_imatrix)
        if IMATRIX_TYPES.isdisjoint(map(int, types)):   # the common case, decided once per scheme
            return types, False
        need = any(ok and requires_imatrix(n, ty, scheme.ftype)
                   for n, ok, ty in zip(tab.names, tab.allows, types))
        return types, need

    if imatrix is None:
        types, need = run(False)
        if need:
            types, need = run(True)
            return types, True, need
        return types, False, need
    types, need = run(imatrix)
    return types, imatrix, need


def size_scheme(model: ResolvedModel, scheme: Scheme, imatrix: bool | None = None) -> SchemePlan:
    types, used, need = select_scheme_types(model, scheme, imatrix)
    sp = _aggregate(scheme.id, scheme.kind, model, types, need)
    if used:
        sp.notes.append("planned with an importance matrix (--imatrix), which this scheme requires")
    if model.layout == "mla" and any(t.name.endswith("attn_k_b.weight") for t in model.tensors):
        fb = {p.type for p in sp.tensors if p.name.endswith("attn_k_b.weight")}
        sp.notes.append(f"attn_k_b rows are {model.hparams.n_embd_head_qk_nope} wide: llama.cpp stores them as {', '.join(sorted(fb))}")
    return sp


def size_file(model: ResolvedModel) -> SchemePlan:
    """The GGUF file as it is: the types its header records."""
    return _aggregate(model.file_scheme or "file", "file", model, [t.src_type for t in model.tensors], False)
