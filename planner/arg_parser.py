"""The argument parser every command line of dq-planner uses (the main one and each command's)."""

from __future__ import annotations

import argparse

from planner.errors import PlannerError

PROG = "dq-planner"


class Parser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise PlannerError(f"{message} (see '{self.prog} --help')")
