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


def nearest(spec: str, values, n: int = 3) -> list[str]:
    """The valid ids closest to a mistyped one (case ignored), best first; [] when none is close."""
    import difflib

    by_lower = {}
    for v in values:
        by_lower.setdefault(v.lower(), v)
    return [by_lower[m] for m in difflib.get_close_matches(spec.lower(), list(by_lower), n=n, cutoff=0.6)]


def valid_hint(spec: str, values) -> str:
    """'did you mean A, B?' for a typo, else the whole list ('valid: ...')."""
    near = nearest(spec, values)
    return f"did you mean {' or '.join(near)}?" if near else f"valid: {choices(values)}"
