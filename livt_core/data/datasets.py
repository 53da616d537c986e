"""``build_dataset``: one entry point for every registered dataset and split."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

# The dataset modules register themselves on import.
from livt_core.data import cifar, fashion, folder  # noqa: F401
from livt_core.data.base import DATASETS, SPLITS, DatasetInfo, FileDataset, LTDataset
from livt_core.errors import ConfigError, DataError

__all__ = ["DatasetInfo", "build_dataset", "dataset_info", "list_datasets"]

logger = logging.getLogger(__name__)


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset`."""
    return DATASETS.names()


def dataset_info(name: str, root: str | Path | None = None) -> DatasetInfo:
    """Static facts about ``name`` (unknown names raise :class:`ConfigError`).

    With ``root``, ``has_test`` of the folder datasets says whether that root has a test split.
    """
    spec = DATASETS.get(name)
    if root is not None and spec.test_probe is not None:
        return dataclasses.replace(spec.info, has_test=spec.test_probe(Path(root)))
    return spec.info


def build_dataset(
    name: str,
    split: str,
    *,
    root: str | Path | None,
    transform: Callable[[Image.Image], Any] | None = None,
    imbalance_factor: float = 100.0,
    profile: str = "exp",
    n_max: int | None = None,
    lt_seed: int = 0,
    val_per_class: int | None = None,
    split_file: str | None = None,
    allowed_roots: Sequence[Path] | None = None,
    cache_bytes: int = 0,
) -> LTDataset:
    """Build one split (``"train"``, ``"val"`` or ``"test"``) of a registered dataset.

    ``root``: the dataset folder (``None`` only for ``fashion-mnist-lt``, meaning the bundled
    subset). ``imbalance_factor``, ``profile``, ``n_max`` (``None``: the dataset default),
    ``lt_seed`` and ``val_per_class`` (``None``: the dataset default) shape the long-tailed
    versions of balanced sets (``cifar10-lt``, ``cifar100-lt``, ``fashion-mnist-lt``) and are
    ignored by ``imagefolder`` / ``splitfile``, which are long-tailed on disk. ``split_file``
    (``splitfile`` only) defaults to ``<split>.txt``. Raises :class:`ConfigError` for a bad
    argument and :class:`DataError` for missing or malformed data. ``allowed_roots``: when
    given, a file or folder of the dataset that is a link leading outside these roots refuses
    the dataset (the job service passes its data roots; a local run may pass None).
    ``cache_bytes``: a dataset read from files whose decoded images fit this many bytes is
    decoded once into memory (0: read the files on every access).
    """
    spec = DATASETS.get(name)
    if split not in SPLITS:
        raise ConfigError("data.split", f"unknown split {split!r}", f"use one of {SPLITS}")
    if root is None:
        if not spec.info.bundled:
            raise ConfigError(
                "data.root", f"dataset {name!r} needs a root folder", "set data.root to its folder"
            )
        path = None
    else:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DataError(f"data root {path} does not exist or is not a folder")
    dataset = spec.build(
        split,
        root=path,
        imbalance_factor=imbalance_factor,
        profile=profile,
        n_max=n_max,
        lt_seed=lt_seed,
        val_per_class=val_per_class,
        split_file=split_file,
        allowed_roots=allowed_roots,
    )
    dataset.transform = transform
    logger.info("%s", dataset.source)
    if cache_bytes > 0 and isinstance(dataset, FileDataset):
        started = time.perf_counter()
        if dataset.cache(cache_bytes):
            logger.info(
                "decoded %d images of %s into memory in %.1f s",
                len(dataset),
                split,
                time.perf_counter() - started,
            )
        else:
            logger.info(
                "%s: about %d MiB decoded, over the cache budget of %d MiB; reading the files",
                split,
                dataset.estimated_bytes() >> 20,
                cache_bytes >> 20,
            )
    return dataset
