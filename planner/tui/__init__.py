"""The terminal workbench (Textual). It renders the core's Plan and computes nothing of its own."""
