"""The inner loops shared by the recipes: one training epoch and a gathered prediction pass.

The training loop owns what every stage does the same way: the per-iteration lr schedule,
gradient accumulation (without DDP gradient sync on the accumulating steps), mixed precision,
the non-finite loss check and the stop check (one collective per step agrees on both), and
progress through :class:`~livt_core.events.Callback`. What a stage computes from a batch is the
``compute_loss`` function it passes in.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from livt_core.distributed import DistContext, agree, gather_ordered, mean_across_ranks
from livt_core.errors import NonFiniteLossError, StopRequested
from livt_core.events import Callback
from livt_core.optim import GradientStep, Precision, WarmupCosineSchedule, trainable_parameters


@dataclass(frozen=True)
class EpochPlan:
    """Where an epoch sits in the run: ``epoch`` of ``epochs`` (0-based), ``steps`` iterations of
    ``images_per_step`` images (all ranks), one optimiser update per ``accum_iter`` steps;
    ``global_step`` counts the iterations of the run before this epoch."""

    epoch: int
    epochs: int
    steps: int
    accum_iter: int
    global_step: int
    images_per_step: int


@dataclass(frozen=True)
class EpochOutcome:
    """``train_loss``: mean loss over the epoch's steps and all ranks; ``lr``: the last scheduled
    (unscaled) learning rate; ``global_step`` after the epoch; ``seconds`` of wall time."""

    train_loss: float
    lr: float
    global_step: int
    seconds: float


def _no_sync(model: nn.Module, syncing: bool) -> contextlib.AbstractContextManager[Any]:
    if not syncing and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Any],
    compute_loss: Callable[[Any], torch.Tensor],
    *,
    plan: EpochPlan,
    grad: GradientStep,
    schedule: WarmupCosineSchedule,
    precision: Precision,
    ctx: DistContext,
    callbacks: Callback,
) -> EpochOutcome:
    """Trains ``model`` (DDP-wrapped when distributed) on ``plan.steps`` batches.

    ``compute_loss(batch)`` runs under autocast and returns the scalar mean loss of the batch.
    Updates happen every ``accum_iter`` steps and at the last step; the loss of each step is
    divided by the number of steps in its accumulation group, so an update sees the mean over
    the group. The lr is set at the start of each group from the fractional epoch.

    Raises:
        NonFiniteLossError: the loss is NaN or infinite on any rank (raised on every rank).
        StopRequested: rank 0's callbacks asked to stop (raised on every rank, before the
            update of that step).
    """
    model.train()
    start = time.perf_counter()
    losses = 0.0
    lr = schedule.value(plan.epoch)
    total_steps = plan.epochs * plan.steps
    step = -1
    for step, batch in enumerate(itertools.islice(batches, plan.steps)):
        group_start = step - step % plan.accum_iter
        group_size = min(plan.accum_iter, plan.steps - group_start)
        if step == group_start:
            lr = schedule.step(plan.epoch + step / plan.steps)
        updating = step == group_start + group_size - 1
        with _no_sync(model, updating):
            with precision.autocast():
                loss = compute_loss(batch)
            value = float(loss.detach().float().item())
            non_finite, stop = agree(
                ctx, any_rank=not math.isfinite(value), main_rank=callbacks.should_stop()
            )
            if non_finite:
                raise NonFiniteLossError(value, plan.epoch, step)
            if stop:
                raise StopRequested(f"stopped at epoch {plan.epoch}, step {step}")
            grad.backward(loss / group_size)
        if updating:
            grad.update(trainable_parameters(model))
        losses += value
        elapsed = time.perf_counter() - start
        global_step = plan.global_step + step + 1
        per_step = elapsed / (step + 1)
        callbacks.on_step(
            {
                "epoch": plan.epoch,
                "epochs": plan.epochs,
                "step": step,
                "steps": plan.steps,
                "global_step": global_step,
                "loss": value,
                "lr": lr,
                "images_per_sec": plan.images_per_step * (step + 1) / max(elapsed, 1e-9),
                "eta_seconds": per_step * (total_steps - plan.epoch * plan.steps - step - 1),
            }
        )
    done = step + 1
    if done < plan.steps:
        raise RuntimeError(f"the training loader yielded {done} batches, {plan.steps} expected")
    mean_loss = mean_across_ranks(losses / max(done, 1), ctx)
    return EpochOutcome(
        train_loss=mean_loss,
        lr=lr,
        global_step=plan.global_step + done,
        seconds=time.perf_counter() - start,
    )


@torch.inference_mode()
def predict(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    total: int,
    precision: Precision,
    ctx: DistContext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw logits and labels of a whole split, gathered from every rank in dataset order.

    Args:
        model: the classifier (unwrapped: no DDP forward is needed for inference).
        batches: ``(images [B, C, H, W], labels [B])`` from a loader over an
            :func:`~livt_core.distributed.eval_sampler`.
        total: the split's length; the sampler's padding is removed.

    Returns:
        ``logits [total, num_classes]`` (float32, CPU) and ``labels [total]`` (int64, CPU), on
        every rank.
    """
    model.eval()
    logits_parts: list[torch.Tensor] = []
    label_parts: list[torch.Tensor] = []
    for images, labels in batches:
        images = images.to(ctx.device, non_blocking=True)
        with precision.autocast():
            logits_parts.append(model(images).float().cpu())
        label_parts.append(labels.to(torch.int64).cpu())
    logits = torch.cat(logits_parts) if logits_parts else torch.empty(0, 0)
    labels = torch.cat(label_parts) if label_parts else torch.empty(0, dtype=torch.int64)
    return gather_ordered(logits, ctx, total), gather_ordered(labels, ctx, total)
