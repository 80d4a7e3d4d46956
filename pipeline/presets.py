"""Named presets (``configs/*.yaml``): sections per command, flags override them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from models import storage

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def load_preset(name_or_path: str | None) -> dict:
    """``demo`` -> configs/demo.yaml; a path or gs:// URI is read as it is; None -> {}."""
    if not name_or_path:
        return {}
    path = name_or_path
    if "/" not in name_or_path and not name_or_path.endswith((".yaml", ".yml")):
        path = str(CONFIG_DIR / f"{name_or_path}.yaml")
    data = yaml.safe_load(storage.read_text(path)) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a preset is a mapping of sections")
    return data


def as_flags(settings: dict, *, hyphens: bool = True) -> list[str]:
    """{"image_size": 75, "experiments": ["a", "b"], "no_auth": true} ->
    ["--image-size", "75", "--experiments", "a", "--experiments", "b", "--no_auth"].
    Job flags use hyphens; Beam's own keep their underscores (``hyphens=False``)."""
    flags = []
    for key, value in settings.items():
        flag = "--" + (key.replace("_", "-") if hyphens else key)
        if value is None or value is False:
            continue
        if value is True:
            flags.append(flag)
        else:
            for item in value if isinstance(value, list) else [value]:
                flags += [flag, str(item)]
    return flags


def section(preset: dict, name: str, dataclass_type=None) -> dict:
    """One section; with ``dataclass_type``, unknown keys are an error naming them."""
    values = dict(preset.get(name) or {})
    if dataclass_type is not None:
        known = {f.name for f in dataclasses.fields(dataclass_type)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {name} settings {unknown}; known: {sorted(known)}")
    return values
