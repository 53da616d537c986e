"""LADE: label distribution disentangling loss (Hong et al., CVPR 2021), hard labels only."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from livt_core.errors import ConfigError
from livt_core.losses.base import LongTailLoss, register_loss


@register_loss("lade")
class LADELoss(LongTailLoss):
    """LADE (Hong et al., "Disentangling Label Distribution for Long-tailed Visual
    Recognition", CVPR 2021): ``L = L_LADE-CE + α · L_LADER``.

    With the training prior ``π_s`` (``π_s(c) = n_c / Σ n``), the target prior ``π_t`` (uniform,
    for a balanced test set) and logits ``z = f(x)``:

    - ``L_LADE-CE`` is the PC-softmax cross-entropy ``CE(z + log π_s, y)``, mean over the batch
      (the logits then model ``log p(x|y)`` up to a per-sample constant).
    - ``L_LADER`` regularises ``z_c`` towards the log density ratio ``log p_t(x|c) / p_t(x)``
      through the regularised Donsker–Varadhan bound, estimated on the mini-batch for every
      class ``c`` present in it (``n_b(c)`` samples of class ``c`` among ``N``)::

          first_c  = (1 / n_b(c)) Σ_{i: y_i = c} z_ic
          second_c = log((1 / N) Σ_i exp(z_ic + log π_t(c) − log π_s(c)))
          L_LADER  = −Σ_{c present} π_s(c) · (first_c − second_c − λ · second_c²)

      Classes absent from the batch have no sample of ``p(x|c)`` and are left out of the sum.

    Defaults: ``remine_lambda`` λ = 0.1 and ``alpha`` α = 0.1 (the LADE settings for
    CIFAR-100-LT and ImageNet-LT). ``tau`` is not used (must be 1); ``smoothing`` must be 0.

    Buffers: ``log_prior: [C]`` (``log π_s``), ``log_target_prior: [C]`` (``log π_t``).
    """

    needs_positive_counts: ClassVar[bool] = True
    smoothing_rule: ClassVar[str] = "none"

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        tau: float = 1.0,
        smoothing: float = 0.0,
        remine_lambda: float = 0.1,
        alpha: float = 0.1,
    ) -> None:
        super().__init__(class_counts, tau=tau, smoothing=smoothing)
        for field, value in (("remine_lambda", remine_lambda), ("alpha", alpha)):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"loss_kwargs.{field}", f"must be ≥ 0, got {value}", "use 0.1")
        self.remine_lambda = float(remine_lambda)
        self.alpha = float(alpha)
        self.register_buffer("log_prior", self.prior().log().float())
        uniform = torch.full((self.num_classes,), -math.log(self.num_classes))
        self.register_buffer("log_target_prior", uniform)

    def hard_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        log_prior = self.log_prior.to(logits.dtype)
        ce = F.cross_entropy(logits + log_prior, labels)
        return ce + self.alpha * self.regulariser(logits, labels)

    def regulariser(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``L_LADER`` for ``logits: [N, C]`` and ``labels: [N]`` → scalar."""
        n = logits.shape[0]
        log_prior = self.log_prior.to(logits.dtype)
        one_hot = F.one_hot(labels, self.num_classes).to(logits.dtype)  # [N, C]
        per_class = one_hot.sum(dim=0)  # [C]
        first = (one_hot * logits).sum(dim=0) / per_class.clamp_min(1.0)  # [C]
        shifted = logits + (self.log_target_prior.to(logits.dtype) - log_prior)  # [N, C]
        second = torch.logsumexp(shifted, dim=0) - math.log(n)  # [C]
        bound = first - second - self.remine_lambda * second.square()  # [C]
        present = (per_class > 0).to(logits.dtype)
        return -(log_prior.exp() * present * bound).sum()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, remine_lambda={self.remine_lambda}, alpha={self.alpha}"
