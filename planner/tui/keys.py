"""Every action of the workbench: its key, the footer label, the palette title, shown in the footer."""

from __future__ import annotations

# (key, action, footer label, palette title, shown in the footer); choose('<request field>') focuses the
# control the option schema generated for that field
ACTIONS: list[tuple[str, str, str, str, bool]] = [
    ("question_mark", "show_keys", "Keys", "List every key", True),
    ("m", "choose('model')", "Model", "Choose the model", True),
    ("s", "choose('scheme')", "Scheme", "Choose the quantization scheme", True),
    ("d", "choose('device')", "Device", "Choose the hardware profile", True),
    ("g", "choose('gpus')", "GPUs", "Set the number of GPUs per node", False),
    ("n", "choose('nodes')", "Nodes", "Set the number of nodes", False),
    ("c", "choose('ctx')", "Context", "Set the context length", False),
    ("k", "choose('kv_mode')", "KV mode", "Choose the KV cache mode (mla, mla-kv, legacy)", False),
    ("e", "choose('engine')", "Engine", "Choose the serving engine", False),
    ("left_square_bracket", "step_scheme(-1)", "Prev", "Previous scheme", False),
    ("right_square_bracket", "step_scheme(1)", "Next", "Next scheme", False),
    ("a", "apply_recommendation", "Apply", "Apply the recommended scheme", False),
    ("1", "show_tab('plan')", "Plan", "Show the plan: summary, memory per device, recommendation", False),
    ("2", "show_tab('schemes')", "Schemes", "Show every scheme side by side", False),
    ("3", "show_tab('accuracy')", "Accuracy", "Show the accuracy table of the model", False),
    ("4", "show_tab('tensors')", "Tensors", "Show the tensor table and the bytes per type", False),
    ("5", "show_tab('plots')", "Plots", "Show the plots", False),
    ("6", "show_tab('run')", "Run", "Show quantization and server logs", False),
    ("7", "show_tab('serving')", "Serving", "Show the serving figures under load and the SLA targets", False),
    ("f", "filter_tensors", "Filter", "Filter the tensors by name or type", False),
    ("x", "export_plan", "Export", "Export the plan as JSON", True),
    ("l", "launch_commands", "Launch", "Show and save the launch commands", True),
    ("u", "quantize", "Quant", "Quantize a GGUF with the selected scheme", True),
    ("r", "serve", "Serve", "Start a server with this plan", True),
    ("K", "stop_jobs", "Stop", "Stop the running quantization and server", True),
    ("b", "toggle_choices", "Choices", "Show or hide the choices panel", False),
    ("escape", "leave_field", "Leave", "Leave the field being edited (back to the plan)", False),
]

SHOWN_KEYS = {"left_square_bracket": "[", "right_square_bracket": "]", "question_mark": "?"}
