"""Checks of a run's config against a dataset profile, so that nothing the profile already
shows makes the run fail once it started: the channel statistics taken from the data, a batch
no larger than the training set, splits and classes that exist, no unreadable images.

A profile is ``livt_core.data.profile.DatasetProfile.to_dict()`` (plain data, torch-free).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from livt_core.config.schema import EvaluateConfig, FinetuneConfig, PretrainConfig, RunBase
from livt_core.errors import ConfigError

_SHOWN = 5


def _fit_channels(values: list[float], in_chans: int) -> list[float]:
    if len(values) in (1, in_chans):
        return list(values)
    if in_chans == 1:  # RGB statistics for a grey model: the transforms average the channels
        return [round(sum(values) / len(values), 4)]
    return list(values)


def data_from_profile(
    values: dict[str, Any], profile: Mapping[str, Any], user: Mapping[str, Any]
) -> list[str]:
    """Fills ``data.in_chans`` when neither the recipe nor the user set it, and ``data.mean`` /
    ``data.std`` when the user did not set them, from the profile (fitted to the channel count
    the config asks for); returns the notes."""
    data = values.setdefault("data", {})
    if not isinstance(data, dict) or not profile.get("mean"):
        return []
    notes = []
    if data.get("in_chans") is None:
        data["in_chans"] = int(profile.get("channels") or len(profile["mean"]))
        notes.append(f"data.in_chans={data['in_chans']}: the images are {profile.get('colour')}")
    in_chans = data["in_chans"]
    given = user.get("data") if isinstance(user.get("data"), Mapping) else {}
    if "mean" not in given and "std" not in given and isinstance(in_chans, int):
        # the data's statistics, fitted to the channels the model takes (also when the
        # recipe's were measured for another channel count)
        mean = _fit_channels(profile["mean"], in_chans)
        std = _fit_channels(profile["std"], in_chans)
        if [data.get("mean"), data.get("std")] == [mean, std]:
            return notes
        data["mean"], data["std"] = mean, std
        notes.append(
            f"data.mean={data['mean']}, data.std={data['std']}: measured on the training images"
            + (
                ""
                if len(profile["mean"]) == len(data["mean"])
                else f" (averaged over the channels for in_chans={in_chans})"
            )
        )
    return notes


def report_split(profile: Mapping[str, Any]) -> str:
    """The split a fine-tune on the profiled data reports on, and an evaluate defaults to:
    ``test`` when the data set has one, else ``val`` (which also picked the best epoch)."""
    return "test" if "test" in profile.get("splits", {}) else "val"


def split_from_profile(
    values: dict[str, Any], profile: Mapping[str, Any], user: Mapping[str, Any]
) -> list[str]:
    """An evaluate whose ``split`` the user did not set evaluates on :func:`report_split`
    (a preset's ``split: test`` cannot hold on a data set without one); returns the notes."""
    if "split" in user:
        return []
    split = report_split(profile)
    if values.get("split") == split:
        return []
    values["split"] = split
    return [f"split={split}: the split a fine-tune on this data reports on"]


def _names(items: list[str]) -> str:
    shown = ", ".join(repr(i) for i in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def check_against_profile(config: RunBase, profile: Mapping[str, Any]) -> list[ConfigError]:
    """Every way the config and the profiled data disagree, one error per field."""
    errors: list[ConfigError] = []
    splits: Mapping[str, Mapping[str, int]] = profile.get("splits", {})
    n_train = int(sum(splits.get("train", {}).values()))
    empty = profile.get("missing_classes", {}).get("train", [])
    if empty:
        errors.append(
            ConfigError(
                "data.root",
                f"the training classes {_names(empty)} hold no images",
                "add images to those train/ folders or remove the folders",
            )
        )
    for split, extra in profile.get("extra_classes", {}).items():
        errors.append(
            ConfigError(
                "data.root",
                f"{split}/ has class folders that train/ lacks: {_names(extra)}",
                f"add them to train/ or remove them from {split}/",
            )
        )
    bad = profile.get("unreadable_count", 0)
    if bad:
        errors.append(
            ConfigError(
                "data.root",
                f"{bad} image{'s' if bad > 1 else ''} cannot be read "
                f"({_names(list(profile.get('unreadable', [])))})",
                "replace or remove those files",
            )
        )
    needs_val = isinstance(config, FinetuneConfig) or (
        isinstance(config, EvaluateConfig) and config.split == "val"
    )
    if needs_val and "val" not in splits:
        errors.append(
            ConfigError(
                "data.root",
                "the data set has no val/ split, which picks the best fine-tuning epoch",
                "add root/val/<class>/<image>",
            )
        )
    needed = "val" if needs_val else config.split if isinstance(config, EvaluateConfig) else None
    if needed in splits and not sum(splits[needed].values()):
        errors.append(
            ConfigError(
                "data.root",
                f"the {needed}/ folder holds no images",
                f"add images to {needed}/<class>/",
            )
        )
    if isinstance(config, EvaluateConfig) and config.split not in splits:
        have = [s for s in ("val", "test") if s in splits]
        errors.append(
            ConfigError(
                "split",
                f"the data set has no {config.split} split (it has {', '.join(splits)})",
                f"use split={have[0]}" if have else "add a val/ folder",
            )
        )
    if isinstance(config, PretrainConfig | FinetuneConfig) and n_train:
        if config.batch_size > n_train:
            errors.append(
                ConfigError(
                    "batch_size",
                    f"is {config.batch_size}, more than the {n_train} training images, so an "
                    "epoch would have no full batch",
                    f"set batch_size to at most {n_train}",
                )
            )
    return errors
