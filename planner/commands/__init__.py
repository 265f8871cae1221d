"""Subcommands (dq-planner inspect | quantize | serve | detect): each module has main(argv) -> exit code."""
