"""Multi-process training under ``torchrun``: process group, samplers, DDP and reductions.

``torchrun --nproc_per_node=N`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` reads them and joins the process group (NCCL on GPU,
gloo on CPU). A single process without those variables is the world of size 1, and every helper
here is then a no-op, so that the engines run one code path.

Only rank 0 writes files and emits events; the helpers below let every rank agree on what rank 0
decides (stop requests) and on what any rank sees (a non-finite loss).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

from livt_core.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``, its ``device``, and whether this
    module created the process group (and so must destroy it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_rank() -> int:
    """The global rank from ``torchrun``'s environment (0 when not launched by it)."""
    return int(os.environ.get("RANK", "0"))


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(name, f"environment variable {name}={raw!r} is not an integer") from None


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when a GPU is present, else ``cpu``.

    ``cuda`` means the local rank's GPU; ``cuda:N`` is taken as is. Raises :class:`ConfigError`
    when CUDA is asked for but not available.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device", f"{device} asked for but CUDA is not available", "use cpu")
    if device == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(device)


def init_distributed(device: str = "auto") -> DistContext:
    """Joins the ``torchrun`` process group when ``WORLD_SIZE > 1`` and picks this rank's device.

    An already initialised process group is reused (and left for its creator to destroy).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    torch_device = resolve_device(device, local_rank)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if world_size <= 1:
        return DistContext(0, 1, 0, torch_device, owns_group=False)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        kwargs = {"device_id": torch_device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)
        owns = True
        logger.info("rank %d of %d joined the %s process group", rank, world_size, backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, torch_device, owns)


def shutdown(ctx: DistContext) -> None:
    """Destroys the process group if :func:`init_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """``model`` on its device, in :class:`DistributedDataParallel` when there are several ranks."""
    if not ctx.distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def train_sampler(dataset: Dataset, ctx: DistContext, *, seed: int) -> DistributedSampler:
    """Shuffled sampler whose order depends only on ``(seed, epoch)``: call ``set_epoch``.

    Each rank gets a disjoint ``len / world_size`` share (padded by repetition when needed).
    """
    return DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed
    )


def eval_sampler(dataset: Dataset, ctx: DistContext) -> DistributedSampler:
    """Unshuffled sampler: rank ``r`` sees items ``r, r + W, r + 2W, ...`` (padded at the end by
    repeating the first items); :func:`gather_ordered` undoes both."""
    return DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=False)


def gather_ordered(local: torch.Tensor, ctx: DistContext, total: int) -> torch.Tensor:
    """Every rank's ``local`` rows (from an :func:`eval_sampler` loader) in dataset order.

    Args:
        local: ``[n, ...]`` rows this rank computed, ``n = ceil(total / world_size)``.
        total: the dataset length; the padding rows beyond it are dropped.

    Returns:
        ``[total, ...]`` on every rank, row ``i`` for dataset item ``i``.
    """
    if not ctx.distributed:
        return local[:total]
    send = local.to(ctx.device).contiguous()
    parts = [torch.empty_like(send) for _ in range(ctx.world_size)]
    dist.all_gather(parts, send)
    # parts[r][j] is item r + j * W: interleave ranks back into dataset order
    stacked = torch.stack(parts, dim=1)  # [n, W, ...]
    return stacked.reshape(-1, *send.shape[1:])[:total].to(local.device)


def mean_across_ranks(value: float, ctx: DistContext) -> float:
    """The mean of a per-rank scalar over all ranks."""
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / ctx.world_size


def agree(ctx: DistContext, *, any_rank: bool, main_rank: bool) -> tuple[bool, bool]:
    """One collective for the two per-step decisions.

    Returns ``(any_rank on some rank, main_rank as rank 0 sees it)``: e.g. "the loss is
    non-finite somewhere" and "rank 0's callbacks ask to stop".
    """
    if not ctx.distributed:
        return any_rank, main_rank
    flags = torch.tensor(
        [float(any_rank), float(main_rank and ctx.is_main)], dtype=torch.float32, device=ctx.device
    )
    dist.all_reduce(flags, op=dist.ReduceOp.SUM)
    return bool(flags[0].item() > 0), bool(flags[1].item() > 0)
