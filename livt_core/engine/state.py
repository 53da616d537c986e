"""Run state on disk: checkpoint payloads, strict model loading, and small atomic JSON files."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from livt_core import __version__
from livt_core.errors import CheckpointError


def checkpoint_payload(
    *,
    kind: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: dict[str, Any] | None,
    epoch: int,
    global_step: int,
    args: dict[str, Any],
    rng: dict[str, Any],
    best: dict[str, Any] | None,
) -> dict[str, Any]:
    """The checkpoint dict of ``docs/architecture.md`` (compatible with the released files)."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "scaler": scaler,
        "args": args,
        "global_step": global_step,
        "rng": rng,
        "best": best,
        "kind": kind,
        "livt_version": __version__,
    }


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Loads ``state`` into ``model`` with every key and shape matching.

    Raises:
        CheckpointError: naming the missing / unexpected keys or the first shape mismatches, so
            that the user learns which model the checkpoint belongs to.
    """
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    mismatched = [
        f"{k}: checkpoint {_shape(state[k])}, model {_shape(v)}"
        for k, v in target.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({'; '.join(mismatched[:3])})")
    if missing:
        problems.append(f"{len(missing)} missing weights (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights (e.g. {', '.join(unexpected[:3])})")
    if problems:
        hint = ""
        if any(k.startswith(("decoder_", "mask_token")) for k in unexpected):
            hint = " It holds an MAE (pretraining) model: fine-tune it first."
        raise CheckpointError(
            f"checkpoint {source} does not fit the {type(model).__name__} of this run: "
            f"{'; '.join(problems)}.{hint} Set model / model_kwargs / data.img_size to the "
            "checkpoint's architecture."
        )
    model.load_state_dict(state)


def write_json(path: Path, obj: Any) -> None:
    """Writes ``obj`` as indented JSON through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, allow_nan=False, default=_jsonable)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
