"""Which catalog model and scheme a GGUF file is, when it is exactly one: the file's measured accuracy.

A file (--model-file) carries a scheme's measured accuracy only when it holds exactly what that scheme
makes of a catalog model: the same architecture, the same tensors (names and shapes, as llama.cpp's
converter writes them for the model), and every tensor's type the one llama-quantize's rules give it
under the scheme (planner.core.llamacpp.sizing.select_scheme_types, as size_scheme plans it). One tensor of another type and the file is
its own scheme, unmeasured.

A split file with shards missing is not matched: the missing shards' types are predicted, not read.

Models of one shape (DeepSeek-R1, R1-0528, V3, V3-0324 ...) are told apart by the file's general.name
(ResolvedModel.name), as the converter writes it from the model's folder name, or else by the file's
name; a file that names none of them matches none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from planner.core import catalog as cat
from planner.core.llamacpp.schemes import ids_for, resolve_scheme
from planner.core.llamacpp.sizing import ResolvedModel, resolve_catalog_model, select_scheme_types
from planner.core.llamacpp.type_rules import QuantizeRefused


@dataclass(frozen=True)
class CatalogScheme:
    """The catalog model and scheme a file is, tensor for tensor."""

    model: str         # catalog id
    scheme: str        # scheme id (an ftype or a recipe)


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _same_shape(model: ResolvedModel, entry: cat.ModelEntry) -> ResolvedModel | None:
    """The catalog model in the file's layout, when its tensors are the file's (names and shapes)."""
    if entry.hparams.arch != model.hparams.arch:
        return None
    ref = resolve_catalog_model(entry, model.layout)
    if len(ref.tensors) != len(model.tensors):
        return None
    if {t.name: tuple(t.shape) for t in ref.tensors} != {t.name: tuple(t.shape) for t in model.tensors}:
        return None
    return ref


def _named(model: ResolvedModel, entries: list[cat.ModelEntry]) -> list[cat.ModelEntry]:
    """The entries the file names: general.name, else the file's name, equal to an entry's id or name
    (letters and digits only, case-insensitive)."""
    keys = [_key(model.name), _key(model.id)]
    for k in keys:
        hit = [e for e in entries if k and k in (_key(e.id), _key(e.name))]
        if hit:
            return hit
    return []


def catalog_scheme_of(model: ResolvedModel) -> CatalogScheme | None:
    """The catalog model and scheme whose tensors and types the GGUF file `model` holds exactly, or None."""
    if model.file_scheme is None or model.predicted_tensors:
        return None                    # types predicted for missing shards are not the file's
    shaped = [(e, ref) for e in cat.catalog().values() if (ref := _same_shape(model, e)) is not None]
    if not shaped:
        return None
    named = _named(model, [e for e, _ in shaped])
    if len(named) != 1:
        return None
    entry = named[0]
    ref = next(r for e, r in shaped if e is entry)
    types = {t.name: int(t.src_type) for t in model.tensors}
    names = [t.name for t in ref.tensors]
    # the file's ftype narrows the schemes: a recipe writes its base ftype as general.file_type
    candidates = [resolve_scheme(s) for s in ids_for(entry.hparams.arch)]
    candidates = [s for s in candidates if model.file_scheme in (s.id, s.base)] or candidates
    for scheme in candidates:
        try:
            planned, _, _ = select_scheme_types(ref, scheme)
        except QuantizeRefused:        # a scheme llama-quantize refuses for this model is not the file
            continue
        if all(types[n] == int(t) for n, t in zip(names, planned)):
            return CatalogScheme(entry.id, scheme.id)
    return None
