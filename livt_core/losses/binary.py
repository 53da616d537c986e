"""Sigmoid (binary) cross-entropy losses: ``bce``, ``bal_bce`` (LiVT's Bal-BCE) and ``cb_bce``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from livt_core.losses.base import LinearTargetLoss, register_loss
from livt_core.losses.softmax import class_balanced_weights


@register_loss("bce")
class BinaryCrossEntropy(LinearTargetLoss):
    """``C · mean_{batch, classes} BCEWithLogits(z, y)``: sum over classes, mean over the batch.

    Hard labels become one-hot rows smoothed by ``smoothing`` (off ``s/C``, on ``1 - s + s/C``);
    soft targets (Mixup/CutMix) are used as given.
    """

    def per_class(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-sample, per-class binary losses ``[N, C]``."""
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none")

    def soft_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.per_class(logits, target).sum(dim=1).mean()


@register_loss("bal_bce")
class BalancedBinaryCrossEntropy(BinaryCrossEntropy):
    """Bal-BCE, the loss of LiVT (Xu et al., CVPR 2023).

    With the training prior ``π_c = n_c / Σ n``, each logit gets the balanced sigmoid bias

        z'_c = z_c + τ · (log π_c − log(1 − π_c))

    and ``L = C · mean_{batch, classes} BCEWithLogits(z', y)``. The bias is applied here, in the
    training loss only: the model returns raw logits and evaluation uses them unchanged, so there
    is no train/eval switch to forget. ``tau`` is honoured (the release fixes it to 1; the paper
    uses 1.05 on Places-LT).

    Buffers: ``logit_bias: [C]``.
    """

    uses_tau: ClassVar[bool] = True
    needs_positive_counts: ClassVar[bool] = True

    def __init__(
        self, class_counts: Sequence[int] | Tensor, *, tau: float = 1.0, smoothing: float = 0.0
    ) -> None:
        super().__init__(class_counts, tau=tau, smoothing=smoothing)
        prior = self.prior()
        self.register_buffer("logit_bias", (self.tau * (prior.log() - (-prior).log1p())).float())

    def per_class(self, logits: Tensor, target: Tensor) -> Tensor:
        return super().per_class(logits + self.logit_bias.to(logits.dtype), target)


@register_loss("cb_bce")
class ClassBalancedBinaryCrossEntropy(BinaryCrossEntropy):
    """Class-balanced sigmoid cross-entropy with Cui et al.'s (CVPR 2019) weights.

    ``L = Σ_c w_c · BCEWithLogits(z_c, y_c)``, mean over the batch, with the weights of
    :func:`~livt_core.losses.softmax.class_balanced_weights` (``β`` = ``beta``, default 0.9999,
    ``Σ w = C``). Each class's one-vs-rest term is weighted by its own ``w_c`` (the weighting
    the LiVT release compares against); the loss stays linear in the target, so Mixup/CutMix
    targets are handled exactly.

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

    def per_class(self, logits: Tensor, target: Tensor) -> Tensor:
        return super().per_class(logits, target) * self.class_weight.to(logits.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta}"
