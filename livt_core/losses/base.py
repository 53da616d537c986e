"""Shared pieces of the long-tail losses: the registry, the base class and target helpers.

Every loss is called as ``loss(logits, target)`` with ``logits: [N, C]`` and ``target`` either
hard labels ``[N]`` (int64) or soft targets ``[N, C]`` (non-negative rows summing to 1, e.g. from
timm Mixup/CutMix, which also fold label smoothing into them).

Losses that rebalance with the class prior (``bal_bce``, ``bal_ce``, ``lade``) add their bias to
the logits they receive, inside the loss. The model itself always returns raw logits, so
evaluation uses raw logits without any switch: the bias exists only where a loss is computed.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from livt_core import catalog
from livt_core.errors import ConfigError
from livt_core.registry import Registry

LOSSES: Registry[type[LongTailLoss]] = Registry("loss", "loss", known=catalog.LOSSES)

_L = TypeVar("_L", bound="type[LongTailLoss]")

# Tolerance on the row sums of soft targets (timm Mixup targets sum to 1 up to rounding).
_ROW_SUM_TOL = 1e-3


def register_loss(name: str) -> Callable[[_L], _L]:
    """Class decorator: register a :class:`LongTailLoss` subclass under ``name``."""

    def decorator(cls: _L) -> _L:
        cls.name = name
        spec = catalog.LOSSES.get(name)
        facts = catalog.LossSpec(
            name,
            accepts_soft_targets=cls.accepts_soft_targets,
            uses_tau=cls.uses_tau,
            smoothing_rule=cls.smoothing_rule,  # type: ignore[arg-type]
            needs_positive_counts=cls.needs_positive_counts,
            options=tuple(loss_options(cls)),
        )
        if spec is not None and spec != facts:
            raise TypeError(f"loss {name!r} differs from livt_core.catalog: {facts} != {spec}")
        LOSSES.add(name, cls)
        return cls

    return decorator


def soft_target_losses() -> list[str]:
    """Names of the registered losses that accept soft (Mixup/CutMix) targets, sorted."""
    return [name for name in LOSSES.names() if LOSSES.get(name).accepts_soft_targets]


def loss_options(cls: type[LongTailLoss]) -> list[str]:
    """The loss-specific keyword options of ``cls`` (beyond ``tau`` and ``smoothing``)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [
        p.name
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("tau", "smoothing")
    ]


def class_count_tensor(class_counts: Sequence[int] | Tensor) -> Tensor:
    """Validate training class counts and return them as a float64 tensor ``[C]``.

    Raises :class:`ConfigError` (field ``class_counts``) for fewer than two classes, negative or
    non-integer counts, or an all-zero list.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if counts.numel() < 2:
        raise ConfigError(
            "class_counts",
            f"a classification loss needs at least 2 classes, got {counts.numel()}",
            "pass one training image count per class",
        )
    if not torch.isfinite(counts).all() or (counts != counts.round()).any() or (counts < 0).any():
        raise ConfigError(
            "class_counts",
            "class counts must be non-negative integers",
            "pass the number of training images of each class",
        )
    if counts.sum() == 0:
        raise ConfigError("class_counts", "all class counts are zero", "check the training split")
    return counts


def smooth_one_hot(
    labels: Tensor, num_classes: int, smoothing: float, dtype: torch.dtype
) -> Tensor:
    """Hard labels ``[N]`` → smoothed one-hot targets ``[N, C]``.

    Off value ``s / C``, on value ``1 - s + s / C`` (rows sum to 1; ``s = 0`` gives one-hot).
    """
    off = smoothing / num_classes
    target = torch.full((labels.shape[0], num_classes), off, dtype=dtype, device=labels.device)
    return target.scatter_(1, labels.unsqueeze(1), 1.0 - smoothing + off)


class LongTailLoss(nn.Module, abc.ABC):
    """Base class: input checks and the hard/soft dispatch shared by every loss.

    Subclasses set the class attributes below and implement :meth:`hard_loss` and, when
    ``accepts_soft_targets``, :meth:`soft_loss`. Class-dependent tensors are buffers (float32,
    built in float64; ``class_counts`` is int64), so ``loss.to(device)`` moves them.
    Half-precision logits are promoted to float32 first.

    Attributes:
        name: the registry name (set by :func:`register_loss`).
        accepts_soft_targets: whether ``[N, C]`` soft targets are allowed.
        uses_tau: whether ``tau`` scales a prior bias; other losses require ``tau == 1``.
        smoothing_rule: ``"optional"`` (hard labels are smoothed by ``smoothing``),
            ``"required"`` (``smoothing > 0`` is mandatory) or ``"none"`` (the loss defines its
            own target treatment and requires ``smoothing == 0``).
        needs_positive_counts: whether every class count must be > 0 (a log or a power of the
            count is taken).
    """

    name: ClassVar[str] = ""
    accepts_soft_targets: ClassVar[bool] = False
    uses_tau: ClassVar[bool] = False
    smoothing_rule: ClassVar[str] = "optional"
    needs_positive_counts: ClassVar[bool] = False

    def __init__(
        self, class_counts: Sequence[int] | Tensor, *, tau: float = 1.0, smoothing: float = 0.0
    ) -> None:
        super().__init__()
        counts = class_count_tensor(class_counts)
        if self.needs_positive_counts and (counts == 0).any():
            empty = torch.nonzero(counts == 0).flatten().tolist()
            raise ConfigError(
                "class_counts",
                f"loss {self.name!r} needs at least one training image per class (it takes a "
                f"log, a power or an effective number of each count), but classes {empty} "
                "have none",
                "remove the empty classes from the data set or choose loss 'ce' or 'bce'",
            )
        self._check_tau(tau)
        self._check_smoothing(smoothing)
        self.num_classes = counts.numel()
        self.tau = float(tau)
        self.smoothing = float(smoothing)
        self.register_buffer("class_counts", counts.to(torch.int64), persistent=False)

    def _check_tau(self, tau: float) -> None:
        catalog.check_tau(catalog.loss_spec(self.name), tau)

    def _check_smoothing(self, smoothing: float) -> None:
        catalog.check_smoothing(catalog.loss_spec(self.name), smoothing)

    def prior(self) -> Tensor:
        """Training class prior ``π_c = n_c / Σ n`` as float64 ``[C]``, on the buffers' device."""
        counts = self.class_counts.double()
        return counts / counts.sum()

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean loss over the batch.

        Args:
            logits: ``[N, C]`` raw model outputs.
            target: hard labels ``[N]`` (integer) or soft targets ``[N, C]`` (float).

        Returns:
            A scalar tensor.
        """
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        if self._is_soft(logits, target):
            return self.soft_loss(logits, target.to(logits.dtype))
        return self.hard_loss(logits, target.long())

    @abc.abstractmethod
    def hard_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss for hard labels. ``logits: [N, C]``, ``labels: [N]`` → scalar."""

    def soft_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss for soft targets. ``logits: [N, C]``, ``target: [N, C]`` → scalar.

        Only reached when ``accepts_soft_targets`` is true; such subclasses override it.
        """
        raise NotImplementedError(f"loss {self.name!r} defines no soft-target form")

    def _is_soft(self, logits: Tensor, target: Tensor) -> bool:
        """Validate shapes, dtypes and values; return whether ``target`` holds soft targets."""
        if logits.ndim != 2 or not logits.is_floating_point():
            raise ValueError(
                f"loss {self.name!r} expects floating-point logits of shape [N, C], got "
                f"{logits.dtype} {tuple(logits.shape)}"
            )
        n, c = logits.shape
        if c != self.num_classes:
            raise ConfigError(
                "num_classes",
                f"the logits have {c} classes but loss {self.name!r} was built from "
                f"{self.num_classes} class counts",
                "make the model's num_classes equal the number of classes in the data set",
            )
        if n == 0:
            raise ValueError(f"loss {self.name!r} got an empty batch")
        if target.ndim == 1:
            if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
                raise ValueError(f"hard labels must be an integer tensor [N], got {target.dtype}")
            if target.shape[0] != n:
                raise ValueError(f"{target.shape[0]} labels for {n} rows of logits")
            if ((target < 0) | (target >= c)).any():
                raise ValueError(f"labels must lie in [0, {c}), got {target.min()}..{target.max()}")
            return False
        if target.ndim == 2:
            if target.shape != logits.shape:
                raise ValueError(
                    f"soft targets must have the logits' shape {tuple(logits.shape)}, got "
                    f"{tuple(target.shape)}"
                )
            if not target.is_floating_point():
                raise ValueError(f"soft targets must be floating point, got {target.dtype}")
            if not self.accepts_soft_targets:
                raise ConfigError(
                    "loss",
                    f"loss {self.name!r} accepts hard labels only, but got soft targets "
                    "(Mixup/CutMix)",
                    f"set mixup=0 and cutmix=0, or choose one of: "
                    f"{', '.join(soft_target_losses())}",
                )
            row_error = (target.sum(dim=1) - 1.0).abs().max()
            if ((target < 0).any() | (row_error > _ROW_SUM_TOL)).item():
                raise ValueError("soft targets must be non-negative and each row must sum to 1")
            return True
        raise ValueError(
            f"target must be labels [N] or soft targets [N, C], got shape {tuple(target.shape)}"
        )

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, tau={self.tau}, smoothing={self.smoothing}"


class LinearTargetLoss(LongTailLoss):
    """A loss linear in the target: hard labels are turned into smoothed one-hot rows.

    Mixup/CutMix targets are therefore handled exactly (the loss of a mixed target equals the
    mix of the losses).
    """

    accepts_soft_targets: ClassVar[bool] = True

    def hard_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        target = smooth_one_hot(labels, self.num_classes, self.smoothing, logits.dtype)
        return self.soft_loss(logits, target)


class PerSampleLoss(LongTailLoss):
    """A loss defined per (sample, label) pair, such as a margin loss.

    Soft targets are handled as the LiVT method prescribes for margin losses: the two classes
    with the largest target mass are each evaluated as hard labels and weighted by their mass,
    ``v1 · ℓ(z, i1) + v2 · ℓ(z, i2)``. This is exact for a Mixup/CutMix target of two classes
    without label smoothing; mass outside the top two classes is ignored.
    """

    accepts_soft_targets: ClassVar[bool] = True

    @abc.abstractmethod
    def per_sample(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``logits: [N, C]``, ``labels: [N]`` → per-sample loss ``[N]``."""

    def hard_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return self.per_sample(logits, labels).mean()

    def soft_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        mass, index = target.topk(2, dim=1)  # [N, 2] each
        loss = mass[:, 0] * self.per_sample(logits, index[:, 0])
        loss = loss + mass[:, 1] * self.per_sample(logits, index[:, 1])
        return loss.mean()


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """``-Σ_c y_c log softmax(z)_c``, mean over the batch. ``logits, target: [N, C]``."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
