"""The one adapter from a validated run config to the typed keyword arguments of the factories.

Recipes never pass a config object into ``livt_core.models`` / ``data`` / ``losses`` /
``optim``; they call the functions here, which read the config and return plain values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livt_core.config import DataConfig, EvaluateConfig, FinetuneConfig, PretrainConfig
from livt_core.data import dataset_info

TrainConfig = PretrainConfig | FinetuneConfig


@dataclass(frozen=True)
class DataSpec:
    """What the model and transforms need to know about a data set."""

    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    has_test: bool


def _to_channels(values: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
    """A data set's own statistics for a model with another channel count: RGB statistics
    for a grey model are averaged (images are reduced to grey by the transforms)."""
    if len(values) not in (1, in_chans) and in_chans == 1:
        return (round(sum(values) / len(values), 4),)
    return values


def data_spec(data: DataConfig) -> DataSpec:
    """Channels and normalisation: the config's values, else the data set's own (fitted to
    ``in_chans`` when the config sets another channel count than the data set's)."""
    info = dataset_info(data.dataset, data.root)
    in_chans = data.in_chans if data.in_chans is not None else info.in_chans
    mean = tuple(data.mean) if data.mean is not None else _to_channels(info.mean, in_chans)
    std = tuple(data.std) if data.std is not None else _to_channels(info.std, in_chans)
    return DataSpec(in_chans=in_chans, mean=mean, std=std, has_test=info.has_test)


def dataset_kwargs(
    data: DataConfig, split: str, *, allowed_roots: Sequence[Path] | None = None
) -> dict[str, Any]:
    """Keyword arguments of ``build_dataset(data.dataset, split, **kwargs)`` (no transform);
    ``allowed_roots``: the roots the dataset's files must stay inside (None: anywhere)."""
    split_file = {"train": data.train_split, "val": data.val_split, "test": data.test_split}[split]
    return {
        "root": data.root,
        "imbalance_factor": data.imbalance_factor,
        "profile": data.profile,
        "n_max": data.n_max,
        "lt_seed": data.lt_seed,
        "val_per_class": data.val_per_class,
        "split_file": split_file,
        "allowed_roots": allowed_roots,
        "cache_bytes": data.cache_mb << 20,
    }


def transform_kwargs(data: DataConfig, spec: DataSpec) -> dict[str, Any]:
    """The arguments every ``build_*_transform`` shares."""
    return {
        "img_size": data.img_size,
        "mean": spec.mean,
        "std": spec.std,
        "in_chans": spec.in_chans,
    }


def train_augment_kwargs(config: FinetuneConfig) -> dict[str, Any]:
    """Fine-tuning augmentation settings of ``build_train_transform``."""
    return {
        "auto_augment": config.auto_augment,
        "reprob": config.reprob,
        "remode": config.remode,
        "crop_scale": config.crop_scale,
    }


def model_kwargs(
    config: PretrainConfig | FinetuneConfig | EvaluateConfig,
    spec: DataSpec,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """``create_model(config.model, **kwargs)`` overrides; ``config.model_kwargs`` win."""
    kwargs: dict[str, Any] = {"img_size": config.data.img_size, "in_chans": spec.in_chans}
    if isinstance(config, PretrainConfig):
        kwargs.update(mask_ratio=config.mask_ratio, norm_pix_loss=config.norm_pix_loss)
    else:
        kwargs.update(num_classes=num_classes, global_pool=config.global_pool)
        if isinstance(config, FinetuneConfig):
            kwargs["drop_path_rate"] = config.drop_path
    return {**kwargs, **config.model_kwargs}


def mixing_enabled(config: FinetuneConfig) -> bool:
    """Whether Mixup/CutMix produce soft targets in this run."""
    return (config.mixup > 0 or config.cutmix > 0) and config.mixup_prob > 0


def mixup_kwargs(config: FinetuneConfig, num_classes: int) -> dict[str, Any]:
    """``build_mixup(**kwargs)``; label smoothing travels with the soft targets."""
    return {
        "mixup_alpha": config.mixup,
        "cutmix_alpha": config.cutmix,
        "prob": config.mixup_prob,
        "switch_prob": config.mixup_switch_prob,
        "label_smoothing": config.smoothing,
        "num_classes": num_classes,
    }


def loss_kwargs(config: FinetuneConfig, class_counts: list[int]) -> dict[str, Any]:
    """``build_loss(config.loss, **kwargs)``: smoothing goes to the loss only without mixing
    (with Mixup it is already in the soft targets)."""
    return {
        "class_counts": class_counts,
        "tau": config.tau,
        "smoothing": 0.0 if mixing_enabled(config) else config.smoothing,
        **config.loss_kwargs,
    }


def optimizer_kwargs(config: TrainConfig) -> dict[str, Any]:
    """``param_groups(model, **kwargs)``: weight decay and, for fine-tuning, layer decay."""
    layer_decay = config.layer_decay if isinstance(config, FinetuneConfig) else None
    return {"weight_decay": config.weight_decay, "layer_decay": layer_decay}
