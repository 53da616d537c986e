"""Resolving a run's config: defaults ← preset ← overrides, merged and validated."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from livt_core.config.errors import ConfigErrors, errors_from_validation
from livt_core.config.presets import preset_overrides
from livt_core.config.schema import (
    CONFIG_CLASSES,
    EvaluateConfig,
    FinetuneConfig,
    PretrainConfig,
)
from livt_core.contract import KINDS
from livt_core.errors import ConfigError


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Returns ``base`` updated by ``update``; nested mappings merge, everything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config(
    kind: str, preset: str | None = None, overrides: Mapping[str, Any] | None = None
) -> PretrainConfig | FinetuneConfig | EvaluateConfig:
    """Builds the validated config of a run: defaults ← preset ← overrides.

    Raises :class:`ConfigErrors` (every bad field, with its fix) for invalid input.
    """
    if kind not in CONFIG_CLASSES:
        raise ConfigErrors(
            [ConfigError("kind", f"unknown run kind {kind!r}", f"use one of: {', '.join(KINDS)}")]
        )
    values = deep_merge(preset_overrides(kind, preset), dict(overrides or {}))
    values.pop("kind", None)
    try:
        return CONFIG_CLASSES[kind].model_validate(values)  # type: ignore[return-value]
    except ValidationError as exc:
        raise ConfigErrors(errors_from_validation(exc)) from None


def config_from_dict(values: Mapping[str, Any]) -> PretrainConfig | FinetuneConfig | EvaluateConfig:
    """Validates an already-resolved config (e.g. ``config.json`` of a run) by its ``kind``."""
    kind = values.get("kind")
    return resolve_config(str(kind), None, values)
