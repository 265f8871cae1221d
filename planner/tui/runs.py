"""The Run tab's actions: quantize the selected scheme and serve a GGUF with the plan, through
`dq-planner quantize` / `dq-planner serve` children (planner/tui/jobs.py, widgets/jobs.py)."""

from __future__ import annotations

import asyncio

from textual import work

from planner.options import request_args
from planner.tui.choices import default_gguf_name
from planner.tui.jobs import dq_planner_argv
from planner.tui.screens.dialogs import Field, FormDialog
from planner.tui.widgets.jobs import QuantizePanel, ServePanel
from planner.workbench import FILE


class RunActions:
    """Mixed into the app: needs self.wb, self.sp, self.request, self.notify, self.push_screen."""

    def _panel(self, kind: str):
        return self.query_one("#quantize-panel" if kind == "quantize" else "#serve-panel")

    def action_quantize(self) -> None:
        panel: QuantizePanel = self._panel("quantize")
        if panel.running:
            self.notify("A quantization is running; K stops it.", severity="warning")
            return
        if self.wb.scheme_id == FILE or self.sp is None or not self.wb.quantizes():
            self.notify("Choose a scheme to quantize to (a GGUF scheme on llama.cpp; FP8-dynamic, W8A8 or W4A16 "
                        "on vLLM/SGLang).", severity="warning")
            return
        if self.wb.quantizes_checkpoint():
            self._ask_quantize_checkpoint()
            return
        stem = self.wb.model_stem()
        fields = [
            Field("input", "source", self.request.model_file or "", placeholder=f"{stem}-BF16.gguf (first shard)"),
            Field("output", "output", default_gguf_name(stem, self.sp.id)),
            Field("imatrix", "imatrix", placeholder="optional .dat/.gguf", required=False),
            Field("threads", "threads", placeholder="all cores", required=False),
        ]

        def done(vals: dict[str, str] | None) -> None:
            if vals:
                self.start_quantize(vals["input"], vals["output"], vals.get("imatrix") or None,
                                    vals.get("threads") or None)

        self.push_screen(FormDialog(f"Quantize to {self.sp.id}", fields, "Start"), done)

    def _ask_quantize_checkpoint(self) -> None:
        """llm-compressor (the compress extra) makes the format from a BF16 Hugging Face folder."""
        import os

        model = self.request.model or ""
        src = model if os.path.isdir(model) else ""
        fields = [
            Field("input", "BF16 folder", src, placeholder="Hugging Face checkpoint folder"),
            Field("output", "output", f"{src.rstrip('/')}-{self.sp.id}" if src else "",
                  placeholder=f"folder for {self.sp.id}"),
        ]
        if self.wb.needs_calibration():
            fields += [Field("calibration", "calibration", placeholder="text lines or JSONL with a text field"),
                       Field("samples", "samples", placeholder="512", required=False)]

        def done(vals: dict[str, str] | None) -> None:
            if vals:
                self.start_quantize_checkpoint(vals["input"], vals["output"], vals.get("calibration") or None,
                                               vals.get("samples") or None)

        self.push_screen(FormDialog(f"Quantize to {self.sp.id} (llm-compressor)", fields, "Start"), done)

    def start_quantize_checkpoint(self, src: str, out: str, calibration: str | None = None,
                                  samples: str | None = None) -> None:
        sp = self.sp
        assert sp is not None
        args = ["quantize", "--engine", self.request.engine, "--input", src, "--scheme", sp.id, "--output", out]
        if calibration:
            args += ["--calibration", calibration]
        if samples:
            args += ["--samples", samples]
        panel: QuantizePanel = self._panel("quantize")
        panel.begin(out)
        self._last_quant_output = out
        self.action_show_tab("run")
        self._run_quantize(dq_planner_argv(args))

    def start_quantize(self, src: str, out: str, imatrix: str | None = None, threads: str | None = None) -> None:
        sp = self.sp
        assert sp is not None
        args = ["quantize", "--input", src, "--scheme", sp.id, "--output", out]
        if imatrix:
            args += ["--imatrix", imatrix]
        if threads:
            args += ["--threads", threads]
        panel: QuantizePanel = self._panel("quantize")
        panel.begin(out)
        self._last_quant_output = out
        self.action_show_tab("run")
        self._run_quantize(dq_planner_argv(args))

    @work(group="jobs", name="quantize", exit_on_error=False)
    async def _run_quantize(self, argv: list[str]) -> None:
        panel: QuantizePanel = self._panel("quantize")
        rc = await panel.run_child(argv)
        panel.finish(rc)

    def action_serve(self) -> None:
        panel: ServePanel = self._panel("serve")
        if panel.running:
            self.notify("A server is running; K stops it.", severity="warning")
            return
        default = self.request.model_file or self._last_quant_output
        fields = [Field("model", "GGUF", default, placeholder="model file (first shard)"),
                  Field("port", "port", "8080")]

        def done(vals: dict[str, str] | None) -> None:
            if vals:
                self.start_serve(vals["model"], vals["port"])

        self.push_screen(FormDialog("Serve with this plan", fields, "Start"), done)

    def start_serve(self, model_file: str, port: str) -> None:
        panel: ServePanel = self._panel("serve")
        args = ["serve", "--model-file", model_file, *request_args(self.request, with_model=False),
                "--port", port, "--keep-running"]
        panel.begin()
        self.action_show_tab("run")
        self._run_serve(dq_planner_argv(args))

    @work(group="jobs", name="serve", exit_on_error=False)
    async def _run_serve(self, argv: list[str]) -> None:
        panel: ServePanel = self._panel("serve")
        rc = await panel.run_child(argv)
        panel.finish(rc)

    def jobs_running(self) -> bool:
        return any(self._panel(k).running for k in ("quantize", "serve"))

    async def action_stop_jobs(self) -> None:
        if not self.jobs_running():
            self.notify("Nothing is running.")
            return
        await asyncio.gather(*(self._panel(k).stop() for k in ("quantize", "serve")))
