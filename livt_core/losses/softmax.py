"""Softmax cross-entropy losses: ``ce``, ``ls_ce``, ``bal_ce`` and ``cb_ce``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from livt_core.errors import ConfigError
from livt_core.losses.base import (
    LinearTargetLoss,
    LongTailLoss,
    register_loss,
    soft_cross_entropy,
)


@register_loss("ce")
class CrossEntropy(LinearTargetLoss):
    """Softmax cross-entropy ``-Σ_c y_c log softmax(z)_c``, mean over the batch.

    Hard labels become one-hot rows smoothed by ``smoothing`` (off ``s/C``, on ``1 - s + s/C``);
    soft targets are used as given.
    """

    def soft_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return soft_cross_entropy(logits, target)


@register_loss("ls_ce")
class LabelSmoothingCrossEntropy(LongTailLoss):
    """Label-smoothed cross-entropy on hard labels only (the release's no-Mixup baseline).

    ``(1 - s) · (-log p_y) + s · mean_c(-log p_c)``, i.e. cross-entropy against one-hot rows with
    off value ``s/C`` and on value ``1 - s + s/C``. ``smoothing`` must be > 0: with 0 this would
    be plain ``ce``, and a hidden default would make the configured value meaningless.
    """

    smoothing_rule: ClassVar[str] = "required"

    def hard_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.smoothing)


@register_loss("bal_ce")
class BalancedCrossEntropy(LinearTargetLoss):
    """Logit-adjusted cross-entropy (Menon et al., ICLR 2021): CE on ``z + τ · log π``.

    ``π_c = n_c / Σ n`` is the training prior. The bias is added inside the loss only; the model's
    logits stay raw at evaluation. Hard labels are smoothed by ``smoothing`` as in ``ce``.

    Buffers: ``logit_bias: [C]`` = ``τ · log π``.
    """

    uses_tau: ClassVar[bool] = True
    needs_positive_counts: ClassVar[bool] = True

    def __init__(
        self, class_counts: Sequence[int] | Tensor, *, tau: float = 1.0, smoothing: float = 0.0
    ) -> None:
        super().__init__(class_counts, tau=tau, smoothing=smoothing)
        self.register_buffer("logit_bias", (self.tau * self.prior().log()).float())

    def soft_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return soft_cross_entropy(logits + self.logit_bias.to(logits.dtype), target)


def class_balanced_weights(counts: Tensor, beta: float) -> Tensor:
    """Class-balanced weights (Cui et al., CVPR 2019), float64 ``[C]``.

    ``w_c = (1 - β) / (1 - β^{n_c})`` (the inverse effective number of samples), normalised so
    that ``Σ_c w_c = C``.
    """
    if not 0.0 < beta < 1.0:
        raise ConfigError("loss_kwargs.beta", f"must lie in (0, 1), got {beta}", "use 0.9999")
    weights = (1.0 - beta) / (1.0 - torch.pow(beta, counts.double()))
    return weights * (counts.numel() / weights.sum())


@register_loss("cb_ce")
class ClassBalancedCrossEntropy(LongTailLoss):
    """Class-balanced softmax cross-entropy (Cui et al., CVPR 2019), hard labels only.

    ``L = mean_i w_{y_i} · CE_s(z_i, y_i)`` with :func:`class_balanced_weights` (``β`` = ``beta``,
    default 0.9999) and ``CE_s`` the cross-entropy against the one-hot row smoothed by
    ``smoothing``. This is Cui et al.'s weighted mean over the batch, not PyTorch's
    ``weight=`` normalisation by ``Σ_i w_{y_i}``.

    Buffers: ``class_weight: [C]``.
    """

    needs_positive_counts: ClassVar[bool] = True

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        tau: float = 1.0,
        smoothing: float = 0.0,
        beta: float = 0.9999,
    ) -> None:
        super().__init__(class_counts, tau=tau, smoothing=smoothing)
        self.beta = float(beta)
        weights = class_balanced_weights(self.class_counts, self.beta)
        self.register_buffer("class_weight", weights.float())

    def hard_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        per_sample = F.cross_entropy(
            logits, labels, reduction="none", label_smoothing=self.smoothing
        )  # [N]
        return (self.class_weight.to(logits.dtype)[labels] * per_sample).mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta}"
