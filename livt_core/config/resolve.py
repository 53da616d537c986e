"""Resolving a run's config: defaults ← preset ← overrides, merged and validated."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from livt_core.config.auto import auto_overrides
from livt_core.config.consistency import (
    check_against_profile,
    data_from_profile,
    split_from_profile,
)
from livt_core.config.errors import ConfigErrors, errors_from_validation
from livt_core.config.presets import preset_overrides
from livt_core.config.schema import (
    CONFIG_CLASSES,
    EvaluateConfig,
    FinetuneConfig,
    PretrainConfig,
    suggested_warmup,
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


def _scale_inherited_warmup(
    kind: str, base: Mapping[str, Any], values: dict[str, Any], user: Mapping[str, Any]
) -> list[str]:
    """A warmup the user did not set, inherited from the defaults or the recipe, that the
    user's ``epochs`` leave no room for keeps its share of the recipe's epochs instead."""
    if kind not in ("pretrain", "finetune") or "warmup_epochs" in user or "epochs" not in user:
        return []
    fields = CONFIG_CLASSES[kind].model_fields
    base_epochs = base.get("epochs", fields["epochs"].default)
    warmup = values.get("warmup_epochs", fields["warmup_epochs"].default)
    epochs = values.get("epochs")
    numbers = (base_epochs, warmup, epochs)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
        return []
    if not (0 < epochs <= warmup and base_epochs > 0):
        return []
    scaled = round(warmup * epochs / base_epochs, 2)
    if scaled >= epochs:
        scaled = suggested_warmup(int(epochs))
    values["warmup_epochs"] = scaled
    return [
        f"warmup_epochs={scaled:g}: the inherited {warmup:g} of {base_epochs} epochs scaled to "
        f"epochs={epochs} (a warmup as long as the run never reaches the peak learning rate)"
    ]


def resolve_config(
    kind: str,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    profile: Mapping[str, Any] | None = None,
) -> PretrainConfig | FinetuneConfig | EvaluateConfig:
    """Builds the validated config of a run: defaults ← recipe ← overrides.

    The recipe is the named ``preset``, or, without one, the ``auto`` recipe derived from
    ``profile`` (a dataset profile, ``livt_core.data.profile``) when one is given. With a
    profile the config is also checked against the data (:func:`check_against_profile`).
    Raises :class:`ConfigErrors` (every bad field, with its fix) for invalid input.
    """
    if kind not in CONFIG_CLASSES:
        raise ConfigErrors(
            [ConfigError("kind", f"unknown run kind {kind!r}", f"use one of: {', '.join(KINDS)}")]
        )
    user = dict(overrides or {})
    notes: list[str] = []
    if preset is not None or profile is None:
        base = preset_overrides(kind, preset)
        if preset is not None and profile is not None:
            notes.append(f"preset {preset}: its settings replace the auto recipe")
    else:
        base, notes = auto_overrides(kind, profile)
        notes = ["auto recipe from the dataset profile:", *notes]
    values = deep_merge(base, user)
    values.pop("kind", None)
    notes += _scale_inherited_warmup(kind, base, values, user)
    if profile is not None:
        notes += data_from_profile(values, profile, user)
        if kind == "evaluate":
            notes += split_from_profile(values, profile, user)
    if notes and "recipe_notes" not in user:
        values["recipe_notes"] = notes
    try:
        config = CONFIG_CLASSES[kind].model_validate(values)
    except ValidationError as exc:
        raise ConfigErrors(errors_from_validation(exc)) from None
    if profile is not None:
        errors = check_against_profile(config, profile)
        if errors:
            raise ConfigErrors(errors)
    return config  # type: ignore[return-value]


def config_from_dict(values: Mapping[str, Any]) -> PretrainConfig | FinetuneConfig | EvaluateConfig:
    """Validates an already-resolved config (e.g. ``config.json`` of a run) by its ``kind``."""
    kind = values.get("kind")
    return resolve_config(str(kind), None, values)
