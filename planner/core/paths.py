"""Where the data lives: profiles/ beside the package (override with DQ_PLANNER_PROFILES)."""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path


def profiles_dir() -> Path:
    env = os.environ.get("DQ_PLANNER_PROFILES")
    if env:
        return Path(env)
    return _shipped_profiles()


@lru_cache(maxsize=1)
def _shipped_profiles() -> Path:
    here = Path(__file__).resolve().parents[2] / "profiles"
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "dq-planner" / "profiles"


def user_profiles_dir() -> Path:
    """A user's own recipes and hardware profiles: $XDG_CONFIG_HOME/dq-planner (kept apart from shipped data)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dq-planner"
