"""The workbench session behind the TUI, without any UI: the request, the selected scheme, the scheme
choices, the plans made so far (keyed by request), the plan of every scheme and the launch script.

planner/tui renders a Workbench and turns keys into its methods; tests drive it directly. It decides
nothing the core does not: every plan is planner.make_plan.make_plan's, for a request the command line
can state (`full_request()`; `cli_args()` are its options), so the TUI's exported JSON is
`dq-planner --headless --json` of the same request.

The selection is not part of the request: for a catalog model or a Hugging Face folder the plan of
every scheme is the request without --scheme (the comparison, the accuracy table and the
recommendation all come from it) and the selected scheme is read from it. A GGUF file is planned as the
command line plans it: the file as it is, plus the schemes named with --scheme, plus the selected one.
While the plan of every scheme is not there (it is made elsewhere: the TUI's planning process), the
selected scheme is planned alone, in milliseconds.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

from planner.core.plan import Plan, PlanRequest, SchemePlan
from planner.errors import PlannerError

FILE = "file:"                # the selection meaning "the GGUF file as it is"
AUTO_MODEL = "auto"           # --model auto: every catalog model with measured accuracy is compared
DEFAULT_SCHEME = "Q4_K_M"
SOURCE_FIELDS = ("model", "model_file", "engine")      # a change of these changes the scheme list
CACHE_SIZE = 48


def make_plan(req: PlanRequest) -> Plan:
    from planner.make_plan import make_plan as plan

    return plan(req)


def engine(name: str):
    from planner.engines.registry import engine as eng

    return eng(name)


def request_key(req: PlanRequest) -> tuple:
    """A hashable key of everything a plan depends on."""
    out = []
    for f in fields(PlanRequest):
        v = getattr(req, f.name)
        out.append(tuple(v) if isinstance(v, list) else v)
    return tuple(out)


def same_request(a: PlanRequest, b: PlanRequest) -> bool:
    return request_key(a) == request_key(b)


_MODELS: dict[tuple, Any] = {}


def _model_of(req: PlanRequest):
    """The catalog entry or the GGUF file's model the request names (read once per source)."""
    key = (req.model, req.model_file)
    if key not in _MODELS:
        from planner.make_plan import model_input

        mi = model_input(req)
        _MODELS[key] = mi.entry if mi.entry is not None else mi.file_model
    return _MODELS[key]


def scheme_ids(req: PlanRequest) -> list[str] | None:
    """The schemes (llama.cpp) or checkpoint formats (vLLM, SGLang) the request's engine offers for its
    model: the one place the TUI asks. None where no list can be given (--model auto, a bad model)."""
    if req.model == AUTO_MODEL and not req.model_file:
        return None
    try:
        return list(engine(req.engine).scheme_ids(_model_of(req)))
    except PlannerError:
        return None


@dataclass
class Selected:
    plan: Plan
    scheme: SchemePlan


class Workbench:
    def __init__(self, request: PlanRequest | None = None, *, planner: Callable[[PlanRequest], Plan] | None = None):
        req = request or PlanRequest()
        self.plan_fn = planner or make_plan
        # the schemes named on the command line: for a GGUF file they are part of what is planned
        self.named: list[str] = list(req.schemes or [])
        self.request = replace(req, schemes=None, with_tensors=False)
        if self.named:
            self.scheme_id = self.named[0]
        elif req.model_file:
            self.scheme_id = FILE
        else:
            self.scheme_id = self._default_scheme(scheme_ids(self.request))
        self._plans: OrderedDict[tuple, Plan] = OrderedDict()
        self._full: tuple[tuple, Plan | None, str | None] | None = None    # (key, plan, error)
        self._arch: dict[tuple, str] = {}          # architecture of a source, once planned
        self.error: str | None = None
        self.selected: Selected | None = None

    # ---------------------------------------------------------------- what is planned
    @property
    def is_file(self) -> bool:
        return bool(self.request.model_file)

    @property
    def is_auto(self) -> bool:
        return self.request.model == AUTO_MODEL and not self.is_file

    def full_request(self) -> PlanRequest:
        """The request of the plan of every scheme: what `dq-planner --headless --json` is given."""
        if not self.is_file:
            return self.request
        schemes = list(self.named)
        if self.scheme_id != FILE and self.scheme_id not in schemes:
            schemes.append(self.scheme_id)
        return replace(self.request, schemes=schemes or None)

    def cli_args(self) -> list[str]:
        """The command-line plan options of full_request()."""
        from planner.options import request_args

        return request_args(self.full_request())

    def selected_request(self) -> PlanRequest:
        """The request that plans the selected scheme alone (a GGUF file: the file, and that scheme)."""
        if self.scheme_id == FILE:
            return replace(self.request, schemes=None)
        return replace(self.request, schemes=[self.scheme_id])

    def plan(self, req: PlanRequest) -> Plan:
        """make_plan, remembered by request."""
        key = request_key(req)
        plan = self._plans.get(key)
        if plan is None:
            plan = self.plan_fn(req)
            self._plans[key] = plan
            if len(self._plans) > CACHE_SIZE:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        self._arch[self._source()] = plan.model.architecture
        return plan

    def _source(self) -> tuple:
        r = self.request
        return r.model, r.model_file, r.engine

    # ---------------------------------------------------------------- the plan of every scheme
    @property
    def full_plan(self) -> Plan | None:
        """The plan of every scheme when it is the current request's (the one place that is checked)."""
        if self._full is not None and self._full[0] == request_key(self.full_request()):
            return self._full[1]
        return None

    @property
    def full_error(self) -> str | None:
        if self._full is not None and self._full[0] == request_key(self.full_request()):
            return self._full[2]
        return None

    @property
    def full_pending(self) -> bool:
        """The plan of every scheme is still to come for these choices."""
        return self.full_plan is None and self.full_error is None

    def receive_full(self, req: PlanRequest, plan: Plan | None, error: str | None = None) -> bool:
        """The plan of every scheme for `req` is there (made elsewhere). False: the choices have moved on."""
        if not same_request(req, self.full_request()):
            return False
        self._full = (request_key(req), plan, error)
        if plan is not None:
            self._arch[self._source()] = plan.model.architecture
            if self.is_auto and plan.schemes and self._find(plan) is None:
                # the compared model may not have the scheme: take the recommended one
                rec = plan.recommendation
                self.scheme_id = rec.scheme if rec else plan.schemes[0].id
        self.refresh()
        return True

    def plan_all(self) -> Plan:
        """The plan of every scheme, here and now (what the TUI's planning process answers)."""
        plan = self.full_plan
        if plan is None:
            plan = self.plan_fn(self.full_request())
            self.receive_full(self.full_request(), plan)
        return plan

    # ---------------------------------------------------------------- the selection
    def _find(self, plan: Plan) -> SchemePlan | None:
        for s in plan.schemes:
            if (s.kind == "file") == (self.scheme_id == FILE) and (self.scheme_id == FILE or s.id == self.scheme_id):
                return s
        return None

    def refresh(self) -> Selected | None:
        """Plan the selection (from the plan of every scheme when it is there). Sets `error` for a bad one."""
        try:
            self.selected = self._select()
            self.error = None
        except PlannerError as e:
            self.error = str(e)
        return self.selected

    def _select(self) -> Selected | None:
        full = self.full_plan
        if full is not None:
            sp = self._find(full)
            if sp is not None:
                return Selected(full, sp)
        if self.is_auto:
            if self.full_error:
                raise PlannerError(self.full_error)
            return None                    # every model is compared in the planning process only
        plan = self.plan(self.selected_request())
        sp = self._find(plan)
        if sp is None:
            raise PlannerError("this plan has no GGUF file; choose a scheme")
        return Selected(plan, sp)

    def with_tensors(self) -> SchemePlan | None:
        """The selected scheme with its tensor list (the plan of every scheme may come without)."""
        sel = self.selected
        if sel is None or sel.scheme.tensors or self.is_auto:
            return sel.scheme if sel else None
        try:
            return self._find(self.plan(self.selected_request())) or sel.scheme
        except PlannerError:
            return sel.scheme

    def choices(self) -> list[tuple[str, str]]:
        """(label, value) of every scheme that can be selected, in the plan's order."""
        full = self.full_plan
        if full is not None and not self.is_file:
            return [(s.id, s.id) for s in full.schemes if s.kind != "file"]
        ids = self._ids()
        if ids is None:
            from planner.core.llamacpp.schemes import all_ids

            ids = all_ids()
        out = [(i, i) for i in ids]
        if self.is_file:
            plan = self.selected.plan if self.selected else None
            file_id = next((s.id for s in (plan.schemes if plan else []) if s.kind == "file"), "as is")
            out.insert(0, (f"file ({file_id})", FILE))
        return out

    def _ids(self, req: PlanRequest | None = None) -> list[str] | None:
        req = req or self.request
        return scheme_ids(req)

    def _default_scheme(self, ids: list[str] | None) -> str:
        return DEFAULT_SCHEME if ids is None or DEFAULT_SCHEME in ids or not ids else ids[0]

    def select(self, scheme_id: str) -> bool:
        """Select a scheme (FILE: the GGUF file as it is). False: nothing changed."""
        if scheme_id == self.scheme_id and self.error is None and self.selected is not None:
            return False
        self.scheme_id = scheme_id
        self.refresh()
        return True

    def step(self, n: int) -> bool:
        ids = [v for _, v in self.choices()]
        if not ids:
            return False
        i = ids.index(self.scheme_id) if self.scheme_id in ids else -1
        return self.select(ids[(i + n) % len(ids)])

    def recommendation(self):
        full = self.full_plan
        return full.recommendation if full is not None else None

    def apply_recommendation(self) -> bool:
        rec = self.recommendation()
        if rec is None or rec.scheme not in [v for _, v in self.choices()]:
            return False
        return self.select(rec.scheme)

    def update(self, **changes) -> bool:
        """Change the request (any PlanRequest field). A new model, file or engine brings its scheme list:
        the selection stays where it still applies. False: nothing changed."""
        new = replace(self.request, **changes)
        if same_request(new, self.request):
            return False
        source = any(getattr(new, f) != getattr(self.request, f) for f in SOURCE_FIELDS)
        self.request = new
        if source:
            self.named = []
            if new.model_file and changes.get("model_file"):
                self.scheme_id = FILE
            else:
                ids = self._ids(new)
                if (self.scheme_id == FILE and not new.model_file) or (ids is not None and self.scheme_id not in ids):
                    self.scheme_id = self._default_scheme(ids)
        self.refresh()
        return True

    # ---------------------------------------------------------------- what leaves the workbench
    def export_plan(self) -> Plan:
        """The plan of every scheme (made here if it is not there yet)."""
        return self.plan_all()

    def document(self) -> dict:
        """The exported JSON document: what `dq-planner --headless --json` prints for full_request()."""
        from planner.render.json_doc import plan_document

        return plan_document(self.export_plan())

    def scheme_arg(self) -> str:
        return self.selected.scheme.id if self.selected is not None else self.scheme_id

    def model_stem(self) -> str:
        from pathlib import Path

        return Path(self.request.model_file or self.request.model).name.removesuffix(".gguf")

    def launch_script(self) -> str:
        """The launch commands of the selected scheme, as its engine writes them for the plan."""
        sel = self.selected
        if sel is None:
            return f"# {self.model_stem()} {self.scheme_arg()}\n# no plan\n"
        try:
            lines = engine(self.request.engine).launch(sel.plan, self.request, sel.scheme.id).lines
        except PlannerError as e:
            return f"# {self.model_stem()} {sel.scheme.id}\n# no launch commands: {e}\n"
        return "#!/bin/sh\nset -eu\n" + "\n".join(lines) + "\n"

    def quantizes(self) -> bool:
        """The selected scheme can be made here: a GGUF scheme by llama-quantize, or a vLLM/SGLang format
        that llm-compressor makes from a BF16 checkpoint (`dq-planner quantize --engine vllm|sglang`)."""
        if self.quantizes_checkpoint():
            return True
        return bool(getattr(engine(self.request.engine), "quantizes", False))

    def quantizes_checkpoint(self) -> bool:
        """The engine serves Hugging Face checkpoints and the selected format has an llm-compressor recipe."""
        if getattr(engine(self.request.engine), "accepts_model_file", True):
            return False
        from planner.core.serving.hf_checkpoint import resolve_format

        try:
            return bool(resolve_format(self.scheme_arg()).recipe)
        except PlannerError:
            return False

    def needs_calibration(self) -> bool:
        from planner.core.serving.hf_checkpoint import resolve_format

        return self.quantizes_checkpoint() and bool(resolve_format(self.scheme_arg()).recipe.get("calibration"))
