"""Errors the command line turns into one line on stderr and an exit code."""


class PlannerError(Exception):
    """Bad input: an unknown id, a malformed file, an impossible value (exit code 2)."""

    exit_code = 2


class RunError(Exception):
    """A run failed: llama.cpp returned an error, a verification found a mismatch (exit code 1)."""

    exit_code = 1


def choices(values) -> str:
    """Format the valid choices for an error message."""
    return ", ".join(sorted(values))
