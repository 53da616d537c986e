"""Training losses for long-tailed classification, built by name.

``build_loss(name, class_counts, tau=1.0, smoothing=0.0, **kw)`` returns an ``nn.Module`` called
as ``loss(logits, target)`` with ``logits: [N, C]`` and ``target`` either hard labels ``[N]``
(int64) or soft targets ``[N, C]`` (Mixup/CutMix). The losses marked in
:data:`SOFT_TARGET_LOSSES` accept both; the others raise a :class:`~livt_core.errors.ConfigError`
on soft targets.

``smoothing`` is label smoothing for hard labels only; soft targets are used as given (timm
Mixup already folds smoothing into them). Prior-based biases (``bal_bce``, ``bal_ce``, ``lade``)
live inside the loss: the model's logits stay raw, so evaluation needs no switch.

| name | loss | soft targets | options |
|---|---|---|---|
| ``ce`` | softmax cross-entropy | yes | |
| ``ls_ce`` | label-smoothed cross-entropy (``smoothing`` > 0) | no | |
| ``bal_ce`` | logit adjustment, CE on ``z + τ log π`` | yes | |
| ``bce`` | ``C`` · mean BCE | yes | |
| ``bal_bce`` | LiVT's Bal-BCE | yes | |
| ``cb_ce`` | class-balanced CE | no | ``beta`` |
| ``cb_bce`` | class-balanced BCE | yes | ``beta`` |
| ``ldam`` | LDAM margins | yes (top two classes) | ``max_m``, ``scale`` |
| ``mislas`` | MiSLAS label-aware smoothing | yes (top two classes) | ``head_eps``, ``tail_eps`` |
| ``lade`` | LADE-CE + LADER | no | ``remine_lambda``, ``alpha`` |
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import Tensor

from livt_core import catalog
from livt_core.losses.base import LOSSES, LongTailLoss
from livt_core.losses.binary import (
    BalancedBinaryCrossEntropy,
    BinaryCrossEntropy,
    ClassBalancedBinaryCrossEntropy,
)
from livt_core.losses.label_aware import LDAMLoss, MiSLASLoss
from livt_core.losses.lade import LADELoss
from livt_core.losses.softmax import (
    BalancedCrossEntropy,
    ClassBalancedCrossEntropy,
    CrossEntropy,
    LabelSmoothingCrossEntropy,
)

__all__ = [
    "LOSSES",
    "SOFT_TARGET_LOSSES",
    "BalancedBinaryCrossEntropy",
    "BalancedCrossEntropy",
    "BinaryCrossEntropy",
    "ClassBalancedBinaryCrossEntropy",
    "ClassBalancedCrossEntropy",
    "CrossEntropy",
    "LADELoss",
    "LDAMLoss",
    "LabelSmoothingCrossEntropy",
    "LongTailLoss",
    "MiSLASLoss",
    "build_loss",
    "list_losses",
]

logger = logging.getLogger(__name__)

SOFT_TARGET_LOSSES: frozenset[str] = catalog.SOFT_TARGET_LOSSES
"""Losses that accept soft (Mixup/CutMix) targets ``[N, C]`` as well as hard labels."""


def list_losses() -> list[str]:
    """Names of all registered losses, sorted."""
    return LOSSES.names()


def build_loss(
    name: str,
    class_counts: Sequence[int] | Tensor,
    tau: float = 1.0,
    smoothing: float = 0.0,
    **kw: float,
) -> LongTailLoss:
    """Build the loss ``name`` for a training set with per-class image counts ``class_counts``.

    Args:
        name: one of :func:`list_losses`.
        class_counts: training images per class, ``[C]``.
        tau: scale of the prior bias of ``bal_bce`` / ``bal_ce``; must be 1 for other losses.
        smoothing: label smoothing applied to hard labels (see the table in this module).
        **kw: loss-specific options (``beta``, ``max_m``, ``scale``, ``head_eps``, ``tail_eps``,
            ``remine_lambda``, ``alpha``).

    Raises:
        ConfigError: unknown name, unknown option, or a value the loss does not allow.
    """
    cls = LOSSES.get(name)
    catalog.check_loss_options(catalog.loss_spec(name), kw)
    loss = cls(class_counts, tau=tau, smoothing=smoothing, **kw)
    logger.debug("built loss %s", loss)
    return loss
