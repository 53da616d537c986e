"""Optimisation: batch arithmetic, parameter groups, AdamW, the lr schedule, precision and seeds.

- Effective batch = ``batch_size × accum_iter × world_size``; the absolute learning rate is
  ``blr × effective_batch / 256`` unless an absolute ``lr`` is given.
- Parameter groups exempt 1-D parameters (norms, biases) and the model's ``no_weight_decay()``
  tokens from weight decay, and carry an ``lr_scale`` for layer-wise lr decay
  (``decay^(num_layers - layer_id)``) that :class:`WarmupCosineSchedule` applies.
- The schedule is set per iteration: linear warmup for ``warmup_epochs``, then a half-cycle
  cosine to ``min_lr``, with the position ``t`` in fractional epochs.
- Mixed precision goes through ``torch.autocast(device_type=...)``; a ``GradScaler`` exists only
  for float16 on CUDA, so that no CUDA-only call happens on a CPU run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from livt_core.errors import ConfigError

logger = logging.getLogger(__name__)

LR_REFERENCE_BATCH = 256


@dataclass(frozen=True)
class BatchPlan:
    """How one optimiser update is assembled: ``batch_size`` images per device and step,
    ``accum_iter`` steps per update, ``world_size`` devices."""

    batch_size: int
    accum_iter: int
    world_size: int

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size * self.accum_iter * self.world_size


def plan_batch(
    *,
    batch_size: int,
    accum_iter: int = 1,
    world_size: int = 1,
    effective_batch_size: int | None = None,
) -> BatchPlan:
    """Derives the accumulation steps; ``effective_batch_size`` (if set) decides ``accum_iter``.

    Raises :class:`ConfigError` when ``effective_batch_size`` is not a multiple of
    ``batch_size × world_size`` or contradicts an explicit ``accum_iter``.
    """
    if effective_batch_size is None:
        return BatchPlan(batch_size, accum_iter, world_size)
    per_step = batch_size * world_size
    if effective_batch_size % per_step:
        lower = max(per_step, effective_batch_size // per_step * per_step)
        raise ConfigError(
            "effective_batch_size",
            f"{effective_batch_size} is not a multiple of batch_size × world size "
            f"= {batch_size} × {world_size} = {per_step}",
            f"set effective_batch_size to a multiple of {per_step} (e.g. {lower}), "
            "or change batch_size",
        )
    derived = effective_batch_size // per_step
    if accum_iter not in (1, derived):
        raise ConfigError(
            "accum_iter",
            f"accum_iter={accum_iter} contradicts effective_batch_size={effective_batch_size} "
            f"(which needs accum_iter={derived} at batch_size {batch_size} × world size "
            f"{world_size})",
            "set only one of them: accum_iter=1, or effective_batch_size=null",
        )
    return BatchPlan(batch_size, derived, world_size)


def absolute_lr(*, blr: float, effective_batch_size: int, lr: float | None = None) -> float:
    """The peak learning rate: ``lr`` when given, else ``blr × effective_batch_size / 256``."""
    if lr is not None:
        return lr
    return blr * effective_batch_size / LR_REFERENCE_BATCH


def layer_scales(num_layers: int, layer_decay: float) -> list[float]:
    """lr multiplier per layer id ``0..num_layers``: ``layer_decay^(num_layers - id)``."""
    return [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]


def param_groups(
    model: nn.Module,
    *,
    weight_decay: float,
    layer_decay: float | None = None,
    no_weight_decay: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Optimiser parameter groups with weight-decay exclusions and layer-wise lr scales.

    A trainable parameter gets no weight decay when it is 1-D (norm weights, biases) or its name
    is in ``model.no_weight_decay()`` or ``no_weight_decay``. With ``layer_decay`` the model must
    provide ``layer_id(name)`` and ``num_layers``; each group's ``lr_scale`` is then
    ``layer_decay^(num_layers - layer_id)``, else 1. Groups come in a fixed order (by layer id,
    decayed before exempt) so that a saved optimiser state loads back into the same groups.
    """
    skip = set(no_weight_decay)
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())
    scales: list[float] | None = None
    if layer_decay is not None:
        if not (hasattr(model, "layer_id") and hasattr(model, "num_layers")):
            raise ConfigError(
                "layer_decay",
                f"{type(model).__name__} has no layer ids for layer-wise lr decay",
                "use a ViT classifier, or set layer_decay=1",
            )
        scales = layer_scales(int(model.num_layers), layer_decay)

    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim <= 1 or name in skip
        layer = int(model.layer_id(name)) if scales is not None else 0  # type: ignore[operator]
        key = (layer, exempt)
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if exempt else weight_decay,
                "lr_scale": scales[layer] if scales is not None else 1.0,
            }
        groups[key]["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def create_optimizer(
    groups: list[dict[str, Any]],
    *,
    lr: float,
    betas: tuple[float, float],
    device: torch.device | None = None,
) -> torch.optim.AdamW:
    """AdamW over ``groups`` (from :func:`param_groups`); each group starts at ``lr × lr_scale``.

    With ``device`` (where the parameters live) the fused kernel is used where torch has one
    for it, else the multi-tensor (``foreach``) one (:func:`livt_core.perf.adamw_implementation`);
    the update is the same AdamW either way."""
    from livt_core.perf import adamw_implementation

    for group in groups:
        group.setdefault("lr_scale", 1.0)
        group["lr"] = lr * group["lr_scale"]
    impl = adamw_implementation(device) if device is not None else {}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), **impl)


def lr_at(epoch: float, *, lr: float, min_lr: float, warmup_epochs: float, epochs: float) -> float:
    """Learning rate at fractional epoch ``epoch``: linear warmup, then half-cycle cosine.

    ``lr × epoch / warmup_epochs`` during warmup, then
    ``min_lr + (lr - min_lr) × ½ (1 + cos(π (epoch - warmup_epochs) / (epochs - warmup_epochs)))``.
    """
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    span = epochs - warmup_epochs
    if span <= 0:
        return lr
    progress = min(1.0, (epoch - warmup_epochs) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineSchedule:
    """Sets every group's lr to ``lr_at(t) × lr_scale``; call :meth:`step` once per iteration."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        lr: float,
        min_lr: float,
        warmup_epochs: float,
        epochs: float,
    ) -> None:
        self.optimizer = optimizer
        self.lr = lr
        self.min_lr = min_lr
        self.warmup_epochs = warmup_epochs
        self.epochs = epochs

    def value(self, epoch: float) -> float:
        """The unscaled learning rate at fractional epoch ``epoch``."""
        return lr_at(
            epoch,
            lr=self.lr,
            min_lr=self.min_lr,
            warmup_epochs=self.warmup_epochs,
            epochs=self.epochs,
        )

    def step(self, epoch: float) -> float:
        """Applies the schedule at fractional epoch ``epoch``; returns the unscaled value."""
        value = self.value(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = value * group.get("lr_scale", 1.0)
        return value


@dataclass(frozen=True)
class Precision:
    """The autocast setting of a run: ``dtype`` None means full float32."""

    device_type: str
    dtype: torch.dtype | None

    @property
    def needs_grad_scaler(self) -> bool:
        return self.dtype == torch.float16

    @property
    def name(self) -> str:
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context manager under which forward passes run."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """``amp`` (auto, bf16, fp16, off) on ``device`` → the :class:`Precision` to run with.

    ``auto``: off on CPU; on CUDA bf16 when the GPU supports it, else fp16 with a GradScaler.
    Raises :class:`ConfigError` for fp16 off CUDA and for bf16 on a GPU without it.
    """
    kind = device.type
    if amp == "off" or (amp == "auto" and kind != "cuda"):
        return Precision(kind, None)
    bf16_ok = kind != "cuda" or torch.cuda.is_bf16_supported()
    if amp == "auto":
        return Precision(kind, torch.bfloat16 if bf16_ok else torch.float16)
    if amp == "bf16":
        if not bf16_ok:
            raise ConfigError("amp", "this GPU does not support bfloat16", "use amp=fp16 or auto")
        return Precision(kind, torch.bfloat16)
    if amp == "fp16":
        if kind != "cuda":
            raise ConfigError(
                "amp",
                f"float16 training needs a CUDA device, the run uses {kind}",
                "use bf16 or off",
            )
        return Precision(kind, torch.float16)
    raise ConfigError("amp", f"unknown precision {amp!r}", "use auto, bf16, fp16 or off")


class GradientStep:
    """Backward passes and optimiser updates, with a GradScaler for float16 and grad clipping.

    ``backward(loss)`` accumulates gradients; ``update(parameters)`` unscales, clips to
    ``clip_grad`` (if set), steps the optimiser, clears the gradients and returns the total
    gradient norm before clipping (None when not measured).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        precision: Precision,
        *,
        clip_grad: float | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.clip_grad = clip_grad
        self.scaler = torch.amp.GradScaler("cuda") if precision.needs_grad_scaler else None

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward()

    def update(self, parameters: Iterable[nn.Parameter]) -> float | None:
        norm = None
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.clip_grad is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(list(parameters), self.clip_grad))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def scaler_state(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_scaler_state(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def seed_everything(seed: int) -> None:
    """Seeds Python's ``random``, NumPy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seeds NumPy and ``random`` from the worker's torch seed.

    torch gives each worker ``base_seed + worker_id``; the base seed is drawn from the main
    process's generator, so worker augmentations follow the run's seed.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    """The global generators' states as plain containers and tensors (``weights_only``-safe)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what :func:`rng_state` captured (missing entries are left alone)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        np_state = state["numpy"]
        keys = np.asarray(np_state["keys"].numpy(), dtype=np.uint32)
        np.random.set_state(
            ("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
        )
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)
        else:
            logger.warning(
                "the checkpoint holds the CUDA generators of %d GPUs, this machine has %d: "
                "they are not restored",
                len(saved),
                torch.cuda.device_count(),
            )


def trainable_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The parameters that receive gradients."""
    return (p for p in model.parameters() if p.requires_grad)
