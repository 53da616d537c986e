"""Two gloo processes under torchrun take the same optimisation step as one process.

The same file is the worker: ``python -m torch.distributed.run --nproc_per_node=2
tests/core/test_distributed.py OUT`` runs :func:`_worker` on each rank and rank 0 saves what it
saw to ``OUT``. The pytest process computes the single-process reference with the same code.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from livt_core.distributed import (
    DistContext,
    agree,
    eval_sampler,
    gather_ordered,
    init_distributed,
    mean_across_ranks,
    shutdown,
    train_sampler,
    unwrap_model,
    wrap_model,
)
from livt_core.engine.loop import EpochPlan, predict, train_one_epoch
from livt_core.errors import NonFiniteLossError, StopRequested
from livt_core.events import Callback
from livt_core.losses import build_loss
from livt_core.models import create_model
from livt_core.optim import (
    GradientStep,
    Precision,
    WarmupCosineSchedule,
    create_optimizer,
    param_groups,
    seed_everything,
)

GLOBAL_BATCH = 8
ACCUM_ITER = 2
EVAL_ITEMS = 7  # odd: the eval sampler pads one rank
CLASS_COUNTS = [5, 2, 1]


def _data() -> tuple[TensorDataset, TensorDataset]:
    gen = torch.Generator().manual_seed(123)
    train = TensorDataset(
        torch.randn(GLOBAL_BATCH, 1, 16, 16, generator=gen),
        torch.tensor([0, 1, 2, 0, 0, 1, 0, 0]),
    )
    evaluation = TensorDataset(
        torch.randn(EVAL_ITEMS, 1, 16, 16, generator=gen), torch.arange(EVAL_ITEMS) % 3
    )
    return train, evaluation


class _AlwaysStop(Callback):
    def should_stop(self) -> bool:
        return True


def _step(ctx: DistContext) -> dict[str, torch.Tensor | float | bool]:
    """One optimiser update over the whole training set (``GLOBAL_BATCH`` images, accumulated
    over ``ACCUM_ITER`` steps), then a gathered prediction pass; the same on 1 or 2 ranks."""
    seed_everything(0)
    model = create_model(
        "vit_nano_patch4", img_size=16, in_chans=1, num_classes=3, depth=2, drop_path_rate=0.0
    )
    optimizer = create_optimizer(
        param_groups(model, weight_decay=0.05, layer_decay=0.75), lr=1e-2, betas=(0.9, 0.999)
    )
    schedule = WarmupCosineSchedule(optimizer, lr=1e-2, min_lr=0.0, warmup_epochs=0, epochs=1)
    precision = Precision("cpu", None)
    grad = GradientStep(optimizer, precision, clip_grad=1.0)
    ddp = wrap_model(model, ctx)
    loss_fn = build_loss("bal_bce", CLASS_COUNTS)
    train, evaluation = _data()
    per_rank = GLOBAL_BATCH // ctx.world_size // ACCUM_ITER
    sampler = train_sampler(train, ctx, seed=0)
    sampler.set_epoch(0)
    loader = DataLoader(train, batch_size=per_rank, sampler=sampler, drop_last=True)

    def compute_loss(batch):
        images, labels = batch
        return loss_fn(ddp(images), labels)

    outcome = train_one_epoch(
        ddp,
        loader,
        compute_loss,
        plan=EpochPlan(
            epoch=0,
            epochs=1,
            steps=len(loader),
            accum_iter=ACCUM_ITER,
            global_step=0,
            images_per_step=per_rank * ctx.world_size,
        ),
        grad=grad,
        schedule=schedule,
        precision=precision,
        ctx=ctx,
        callbacks=Callback(),
    )
    eval_loader = DataLoader(evaluation, batch_size=2, sampler=eval_sampler(evaluation, ctx))
    logits, labels = predict(
        unwrap_model(ddp), eval_loader, total=EVAL_ITEMS, precision=precision, ctx=ctx
    )
    out: dict[str, torch.Tensor | float | bool] = {
        f"param.{k}": v.detach().clone() for k, v in unwrap_model(ddp).state_dict().items()
    }
    out.update(logits=logits, labels=labels, train_loss=outcome.train_loss)
    return out


def _agreement(ctx: DistContext) -> dict[str, bool | float]:
    """Rank 1 alone sees a NaN loss / rank 0 alone asks to stop: every rank must react."""
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    precision = Precision("cpu", None)
    plan = EpochPlan(
        epoch=0, epochs=1, steps=1, accum_iter=1, global_step=0, images_per_step=ctx.world_size
    )
    batches = [torch.ones(1, 2)]

    def nan_on_rank_1(x: torch.Tensor) -> torch.Tensor:
        loss = model(x).sum()
        return loss * float("nan") if ctx.rank == 1 else loss

    common = {
        "plan": plan,
        "grad": GradientStep(optimizer, precision),
        "schedule": WarmupCosineSchedule(optimizer, lr=0.1, min_lr=0, warmup_epochs=0, epochs=1),
        "precision": precision,
        "ctx": ctx,
    }
    result: dict[str, bool | float] = {"non_finite": False, "stopped": False}
    try:
        train_one_epoch(model, batches, nan_on_rank_1, callbacks=Callback(), **common)
    except NonFiniteLossError:
        result["non_finite"] = True
    stopper = _AlwaysStop() if ctx.rank == 0 else Callback()
    try:
        train_one_epoch(model, batches, lambda x: model(x).sum(), callbacks=stopper, **common)
    except StopRequested:
        result["stopped"] = True
    result["any_main"] = agree(ctx, any_rank=ctx.rank == 1, main_rank=ctx.rank == 1)[1]
    result["mean_rank"] = mean_across_ranks(float(ctx.rank), ctx)
    return result


def _worker(out_path: str) -> None:
    ctx = init_distributed("cpu")
    try:
        step = _step(ctx)
        flags = _agreement(ctx)
        gathered = [None] * ctx.world_size
        torch.distributed.all_gather_object(gathered, flags)
        if ctx.is_main:
            torch.save({"step": step, "flags": gathered, "world_size": ctx.world_size}, out_path)
    finally:
        shutdown(ctx)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(Path(__file__).resolve()),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)
    assert ddp["world_size"] == 2

    single = _step(DistContext())
    ddp_step = ddp["step"]
    names = [k for k in single if k.startswith("param.")]
    assert names
    initial = create_model(
        "vit_nano_patch4", img_size=16, in_chans=1, num_classes=3, depth=2, drop_path_rate=0.0
    )
    moved = 0
    for name in names:
        torch.testing.assert_close(ddp_step[name], single[name], atol=1e-5, rtol=1e-5)
        moved += not torch.equal(single[name], initial.state_dict()[name.removeprefix("param.")])
    assert moved > len(names) // 2  # the step really changed the weights
    torch.testing.assert_close(ddp_step["logits"], single["logits"], atol=1e-5, rtol=1e-5)
    assert ddp_step["logits"].shape == (EVAL_ITEMS, 3)
    assert torch.equal(ddp_step["labels"], _data()[1].tensors[1])
    assert math.isclose(ddp_step["train_loss"], single["train_loss"], rel_tol=1e-5)

    for rank, flags in enumerate(ddp["flags"]):
        assert flags["non_finite"], f"rank {rank} did not see rank 1's NaN loss"
        assert flags["stopped"], f"rank {rank} did not follow rank 0's stop request"
        assert flags["any_main"] is False  # only rank 0's stop vote counts
        assert flags["mean_rank"] == pytest.approx(0.5)


def test_gather_ordered_is_identity_for_one_process():
    rows = torch.arange(10.0).reshape(5, 2)
    assert torch.equal(gather_ordered(rows, DistContext(), 4), rows[:4])


def test_single_process_world_needs_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.distributed, ctx.owns_group) == (0, 1, False, False)
    assert wrap_model(torch.nn.Linear(1, 1), ctx).__class__ is torch.nn.Linear
    assert agree(ctx, any_rank=True, main_rank=False) == (True, False)


if __name__ == "__main__":
    _worker(sys.argv[1])
