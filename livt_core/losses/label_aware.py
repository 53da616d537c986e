"""Losses that treat each label by its class frequency: ``ldam`` (margins) and ``mislas``
(label-aware smoothing).

Both are defined per (sample, label); soft Mixup/CutMix targets go through
:class:`~livt_core.losses.base.PerSampleLoss` (the two classes with the largest target mass,
weighted by that mass). Both define their own target treatment, so ``smoothing`` must be 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from livt_core.errors import ConfigError
from livt_core.losses.base import PerSampleLoss, register_loss


def ldam_margins(counts: Tensor, max_margin: float) -> Tensor:
    """LDAM margins ``m_c ∝ n_c^(-1/4)``, scaled so that ``max_c m_c = max_margin``; float64 [C]."""
    margins = counts.double().pow(-0.25)
    return margins * (max_margin / margins.max())


@register_loss("ldam")
class LDAMLoss(PerSampleLoss):
    """LDAM (Cao et al., NeurIPS 2019): label-distribution-aware margin loss.

    For a sample of label ``y``: ``ℓ(z, y) = CE(s · (z − m_y e_y), y)``, i.e. the true-class logit
    is lowered by the margin ``m_y = max_m · (n_y / n_min)^(-1/4)`` before scaling by ``s``.
    Defaults: ``max_m = 0.5``, ``scale = 30``. Deferred re-weighting (DRW) is not part of it.

    Buffers: ``margins: [C]``.
    """

    smoothing_rule: ClassVar[str] = "none"
    needs_positive_counts: ClassVar[bool] = True

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        tau: float = 1.0,
        smoothing: float = 0.0,
        max_m: float = 0.5,
        scale: float = 30.0,
    ) -> None:
        super().__init__(class_counts, tau=tau, smoothing=smoothing)
        if not (math.isfinite(max_m) and max_m > 0):
            raise ConfigError("loss_kwargs.max_m", f"must be > 0, got {max_m}", "use 0.5")
        if not (math.isfinite(scale) and scale > 0):
            raise ConfigError("loss_kwargs.scale", f"must be > 0, got {scale}", "use 30")
        self.max_m = float(max_m)
        self.scale = float(scale)
        self.register_buffer("margins", ldam_margins(self.class_counts, self.max_m).float())

    def per_sample(self, logits: Tensor, labels: Tensor) -> Tensor:
        margin = self.margins.to(logits.dtype)[labels]  # [N]
        shift = F.one_hot(labels, self.num_classes).to(logits.dtype) * margin.unsqueeze(1)
        return F.cross_entropy(self.scale * (logits - shift), labels, reduction="none")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_m={self.max_m}, scale={self.scale}"


def mislas_smoothing(counts: Tensor, head_eps: float, tail_eps: float) -> Tensor:
    """MiSLAS concave smoothing profile, float64 ``[C]``.

    ``ε_c = tail + (head − tail) · sin((n_c − n_min) π / (2 (n_max − n_min)))``: ``tail`` for the
    rarest class, ``head`` for the most frequent, concave in between.
    """
    counts = counts.double()
    n_min, n_max = counts.min(), counts.max()
    phase = (counts - n_min) * math.pi / (2.0 * (n_max - n_min))
    return tail_eps + (head_eps - tail_eps) * torch.sin(phase)


@register_loss("mislas")
class MiSLASLoss(PerSampleLoss):
    """MiSLAS label-aware smoothing (Zhong et al., CVPR 2021), concave profile.

    For a sample of label ``y`` with smoothing ``ε_y`` from :func:`mislas_smoothing`:
    ``ℓ(z, y) = (1 − ε_y) · (−log p_y) + ε_y · mean_c(−log p_c)`` with ``p = softmax(z)``
    (cross-entropy against a one-hot row smoothed by the label's own ``ε_y``). Defaults:
    ``head_eps = 0.3``, ``tail_eps = 0.0``. The profile needs at least two distinct class counts;
    for balanced data use ``ls_ce``.

    Buffers: ``eps: [C]``.
    """

    smoothing_rule: ClassVar[str] = "none"

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        tau: float = 1.0,
        smoothing: float = 0.0,
        head_eps: float = 0.3,
        tail_eps: float = 0.0,
    ) -> None:
        super().__init__(class_counts, tau=tau, smoothing=smoothing)
        for field, value in (("head_eps", head_eps), ("tail_eps", tail_eps)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"loss_kwargs.{field}", f"must lie in [0, 1], got {value}", "use 0.3 / 0.0"
                )
        if self.class_counts.min() == self.class_counts.max():
            raise ConfigError(
                "loss",
                "loss 'mislas' interpolates its smoothing from the rarest to the most frequent "
                "class, but every class has the same count",
                "use loss 'ls_ce' (uniform label smoothing) for balanced data",
            )
        self.head_eps = float(head_eps)
        self.tail_eps = float(tail_eps)
        eps = mislas_smoothing(self.class_counts, self.head_eps, self.tail_eps)
        self.register_buffer("eps", eps.float())

    def per_sample(self, logits: Tensor, labels: Tensor) -> Tensor:
        eps = self.eps.to(logits.dtype)[labels]  # [N]
        log_p = F.log_softmax(logits, dim=1)  # [N, C]
        nll = -log_p.gather(1, labels.unsqueeze(1)).squeeze(1)  # [N]
        return (1.0 - eps) * nll + eps * (-log_p.mean(dim=1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, head_eps={self.head_eps}, tail_eps={self.tail_eps}"
