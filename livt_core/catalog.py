"""The names a run config may use, with the facts about each that a config is checked against,
without building anything: models and their family, losses and their rules, data sets.

This module imports no torch, so that the job service validates a job at submission without
loading the training stack. The registries (``livt_core.models``, ``livt_core.losses``,
``livt_core.data``) refuse at import time to register a name that is missing here or whose facts
differ, so the two cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from livt_core.errors import ConfigError

ModelFamily = Literal["vit", "mae"]

_SIZES = ("tiny_patch16", "small_patch16", "base_patch16", "large_patch16", "huge_patch14")
_CPU_SIZES = ("nano_patch4", "micro_patch4")

#: Every model name and its family: ``vit`` classifiers, ``mae`` masked autoencoders (MGP).
MODEL_FAMILIES: dict[str, ModelFamily] = {
    **{f"vit_{size}": "vit" for size in (*_SIZES, *_CPU_SIZES)},
    **{f"mae_vit_{size}": "mae" for size in (*_SIZES, *_CPU_SIZES)},
}

#: Every data set kind (``data.dataset``).
DATASET_NAMES: tuple[str, ...] = (
    "cifar10-lt",
    "cifar100-lt",
    "fashion-mnist-lt",
    "imagefolder",
    "splitfile",
)


@dataclass(frozen=True)
class LossSpec:
    """What a loss accepts.

    ``smoothing_rule``: ``"optional"`` (hard labels are smoothed by ``smoothing``), ``"required"``
    (``smoothing > 0`` is mandatory) or ``"none"`` (the loss defines its own target treatment and
    requires ``smoothing == 0``). ``options``: its keyword options beyond ``tau`` and
    ``smoothing``. ``needs_positive_counts``: every class needs a training image.
    """

    name: str
    accepts_soft_targets: bool = False
    uses_tau: bool = False
    smoothing_rule: Literal["optional", "required", "none"] = "optional"
    needs_positive_counts: bool = False
    options: tuple[str, ...] = ()


LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("bal_bce", accepts_soft_targets=True, uses_tau=True, needs_positive_counts=True),
        LossSpec("bal_ce", accepts_soft_targets=True, uses_tau=True, needs_positive_counts=True),
        LossSpec("bce", accepts_soft_targets=True),
        LossSpec(
            "cb_bce", accepts_soft_targets=True, needs_positive_counts=True, options=("beta",)
        ),
        LossSpec("cb_ce", needs_positive_counts=True, options=("beta",)),
        LossSpec("ce", accepts_soft_targets=True),
        LossSpec(
            "lade",
            smoothing_rule="none",
            needs_positive_counts=True,
            options=("remine_lambda", "alpha"),
        ),
        LossSpec(
            "ldam",
            accepts_soft_targets=True,
            smoothing_rule="none",
            needs_positive_counts=True,
            options=("max_m", "scale"),
        ),
        LossSpec("ls_ce", smoothing_rule="required"),
        LossSpec(
            "mislas",
            accepts_soft_targets=True,
            smoothing_rule="none",
            options=("head_eps", "tail_eps"),
        ),
    )
}

SOFT_TARGET_LOSSES: frozenset[str] = frozenset(
    n for n, s in LOSSES.items() if s.accepts_soft_targets
)


def list_models() -> list[str]:
    return sorted(MODEL_FAMILIES)


def list_losses() -> list[str]:
    return sorted(LOSSES)


def list_datasets() -> list[str]:
    return sorted(DATASET_NAMES)


def model_family(name: str) -> ModelFamily:
    """The family of model ``name``; an unknown name raises :class:`ConfigError`."""
    try:
        return MODEL_FAMILIES[name]
    except KeyError:
        raise ConfigError(
            "model", f"unknown model {name!r}", f"use one of: {', '.join(list_models())}"
        ) from None


def is_mae_model(name: str) -> bool:
    """True for masked-autoencoder (pretraining) models; unknown names raise ConfigError."""
    return model_family(name) == "mae"


def loss_spec(name: str) -> LossSpec:
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(
            "loss", f"unknown loss {name!r}", f"use one of: {', '.join(list_losses())}"
        ) from None


def check_tau(spec: LossSpec, tau: float) -> None:
    if not math.isfinite(tau) or tau < 0:
        raise ConfigError("tau", f"must be a finite number ≥ 0, got {tau}", "set tau=1")
    if not spec.uses_tau and tau != 1.0:
        users = [n for n in list_losses() if LOSSES[n].uses_tau]
        raise ConfigError(
            "tau",
            f"loss {spec.name!r} has no prior bias for tau to scale (tau={tau})",
            f"set tau=1, or choose one of: {', '.join(users)}",
        )


def check_smoothing(spec: LossSpec, smoothing: float) -> None:
    if not 0.0 <= smoothing <= 1.0:
        raise ConfigError("smoothing", f"must lie in [0, 1], got {smoothing}", "set 0.1 or 0")
    if spec.smoothing_rule == "none" and smoothing > 0:
        raise ConfigError(
            "smoothing",
            f"loss {spec.name!r} defines its own target treatment and does not apply label "
            f"smoothing (smoothing={smoothing})",
            "set smoothing=0",
        )
    if spec.smoothing_rule == "required" and smoothing == 0:
        raise ConfigError(
            "smoothing",
            f"loss {spec.name!r} is label-smoothed cross-entropy and needs smoothing > 0",
            "set smoothing=0.1 (the LiVT default), or use loss 'ce' for plain cross-entropy",
        )


def check_loss_options(spec: LossSpec, options: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ConfigError(
            "loss_kwargs",
            f"loss {spec.name!r} has no option {', '.join(map(repr, unknown))}",
            f"its options are: {', '.join(spec.options)}"
            if spec.options
            else "it takes no options",
        )


def check_loss_settings(
    name: str, *, tau: float, smoothing: float, options: Mapping[str, Any]
) -> LossSpec:
    """Checks a loss's name, options, ``tau`` and ``smoothing`` against its rules (the values
    of its options are checked when the loss is built)."""
    spec = loss_spec(name)
    check_loss_options(spec, options)
    check_tau(spec, tau)
    check_smoothing(spec, smoothing)
    return spec
