"""The presets: per-dataset overrides of the paper's defaults, one YAML file per preset in
``presets/`` (``<name>.yaml``, sections ``pretrain`` / ``finetune`` / ``evaluate``), shipped as
package data."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from livt_core.config.errors import ConfigErrors
from livt_core.config.overrides import load_yaml
from livt_core.contract import KINDS
from livt_core.errors import ConfigError

#: Where the presets live: one YAML file per preset (``<name>.yaml``), keyed by run kind.
PRESET_DIR = Path(__file__).resolve().parent / "presets"


def _load_presets() -> dict[str, dict[str, dict[str, Any]]]:
    presets = {}
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
        unknown = set(data) - set(KINDS)
        if unknown:
            raise ValueError(f"preset {path.name} has sections {sorted(unknown)}; use {KINDS}")
        presets[path.stem] = data
    return presets


#: Per-dataset overrides of the paper's defaults, per run kind (``livt_core/config/presets/*.yaml``).
PRESETS: dict[str, dict[str, dict[str, Any]]] = _load_presets()


def list_presets() -> list[str]:
    return sorted(PRESETS)


def preset_overrides(kind: str, preset: str | None) -> dict[str, Any]:
    if preset is None:
        return {}
    if preset not in PRESETS:
        raise ConfigErrors(
            [
                ConfigError(
                    "preset",
                    f"unknown preset {preset!r}",
                    f"use one of: {', '.join(list_presets())}",
                )
            ]
        )
    return copy.deepcopy(PRESETS[preset].get(kind, {}))
