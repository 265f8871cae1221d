"""The model a --model names, read here above the core: a catalog id, or a local Hugging Face folder
(or its config.json), whose config.json is read and handed to the core as a catalog entry."""

from __future__ import annotations

from pathlib import Path

from planner.core import catalog as cat
from planner.core.data_files import read_json_object
from planner.errors import PlannerError


def resolve_model(spec: str) -> cat.ModelEntry:
    """A catalog id, or a local Hugging Face folder (or its config.json)."""
    if spec in cat.catalog():
        return cat.catalog()[spec]
    p = Path(spec)
    if p.is_dir() or p.name == "config.json":
        cfg_path = p / "config.json" if p.is_dir() else p
        if not cfg_path.exists() and not cfg_path.is_symlink():
            raise PlannerError(f"{spec}: no config.json in this folder")
        cfg = read_json_object(cfg_path, "config")
        name = p.resolve().name if p.is_dir() else p.resolve().parent.name
        return cat.entry_from_config(cfg, str(cfg_path), name)
    return cat.resolve_model(spec)          # the catalog's own "unknown model" message
