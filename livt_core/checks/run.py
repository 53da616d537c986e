"""The checks of :mod:`livt_core.checks` that need torch, and the helper's entry point."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from livt_core.checks import ERROR_TYPES
from livt_core.errors import ConfigError, LivtError


def check_checkpoint(path: str) -> None:
    """Raises :class:`CheckpointError` unless ``path`` holds a model state dict."""
    from livt_core.checkpoint import extract_model_state, load_checkpoint

    extract_model_state(load_checkpoint(path))


def check_loss(name: str, *, tau: float, smoothing: float, options: Mapping[str, Any]) -> None:
    """Builds the loss once on a stand-in class distribution, so that option values the loss
    rejects raise :class:`ConfigError` now rather than when the run starts."""
    from livt_core.losses import build_loss

    build_loss(name, [100, 10], tau=tau, smoothing=smoothing, **dict(options))


def summarise_dataset(
    data: Mapping[str, Any], allowed_roots: list[str] | None = None
) -> dict[str, Any]:
    """Builds the training split of ``data`` (its files confined to ``allowed_roots`` when
    given); its classes, class counts and size."""
    from livt_core.config import DataConfig
    from livt_core.data import build_dataset
    from livt_core.engine.factories import dataset_kwargs

    config = DataConfig.model_validate(dict(data))
    roots = None if allowed_roots is None else [Path(r) for r in allowed_roots]
    kwargs = dataset_kwargs(config, "train", allowed_roots=roots)
    train = build_dataset(config.dataset, "train", **kwargs)
    return {
        "classes": list(train.classes),
        "class_counts": [int(c) for c in train.class_counts],
        "num_train": len(train),
    }


def run_check(request: Mapping[str, Any]) -> dict[str, Any]:
    check = request.get("check")
    if check == "checkpoint":
        check_checkpoint(str(request["path"]))
        return {}
    if check == "loss":
        check_loss(
            str(request["name"]),
            tau=float(request["tau"]),
            smoothing=float(request["smoothing"]),
            options=request.get("options") or {},
        )
        return {}
    if check == "dataset":
        return summarise_dataset(request["data"], request.get("allowed_roots"))
    raise ValueError(f"unknown check {check!r}")


def error_to_json(exc: LivtError) -> dict[str, Any]:
    """The error as the caller re-raises it: its kind (the first of the package's
    ``ERROR_TYPES`` it is an instance of), message and, for a config error, field and fix."""
    kind = next((name for name, cls in ERROR_TYPES.items() if isinstance(exc, cls)), "LivtError")
    out: dict[str, Any] = {"type": kind, "message": str(exc)}
    if isinstance(exc, ConfigError):
        out.update(field=exc.field, message=exc.message, fix=exc.fix)
    return out


def main() -> int:
    answers = []
    for request in json.loads(sys.stdin.read()):
        try:
            answers.append(run_check(request))
        except LivtError as exc:
            answers.append({"error": error_to_json(exc)})
            break
    print(json.dumps(answers))
    return 0
