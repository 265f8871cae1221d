"""Reading the data files of profiles/ (and users' own): one clear line naming the file on any problem."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from planner.errors import PlannerError


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed TOML of `path`; a PlannerError "WHAT PATH: reason" when unreadable or invalid."""
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise PlannerError(f"{what} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise PlannerError(f"{what} {path}: not a text file") from None
    except tomllib.TOMLDecodeError as e:
        raise PlannerError(f"{what} {path}: invalid TOML ({e})") from None
