"""CIFAR-10-LT and CIFAR-100-LT from the python-pickle batches of a local CIFAR copy.

Nothing is downloaded. ``root`` is the folder that holds ``cifar-10-batches-py`` /
``cifar-100-python`` or that folder itself. The batches are pickles: they are read with an
unpickler that only builds numpy arrays, lists, dicts and strings, so a crafted file cannot run
code.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livt_core.data import stats
from livt_core.data.base import (
    DATASETS,
    BalancedPool,
    DatasetBuilder,
    DatasetInfo,
    DatasetSpec,
    LTDataset,
    build_longtail_split,
    check_links,
)
from livt_core.errors import DataError

_NUMPY_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
# Globals a numpy-array pickle needs (Python 2 and 3 protocols), under both numpy core names.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"): (f"{_NUMPY_CORE}.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): (f"{_NUMPY_CORE}.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): (f"{_NUMPY_CORE}.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): (f"{_NUMPY_CORE}.numeric", "_frombuffer"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(*target)


def _load_pickle(path: Path) -> dict[bytes, Any]:
    if not path.is_file():
        raise DataError(f"CIFAR file {path} not found")
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is not a CIFAR python batch: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR python batch: holds a {type(obj).__name__}")
    return obj


def _field(batch: dict[bytes, Any], key: bytes, path: Path) -> Any:
    if key not in batch:
        keys = ", ".join(sorted(k.decode(errors="replace") for k in batch))
        raise DataError(f"{path} has no {key.decode()!r} entry (has: {keys})")
    return batch[key]


@dataclass(frozen=True)
class _CifarLayout:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    per_class: int
    val_per_class: int


def _resolve(layout: _CifarLayout, root: Path) -> Path:
    for folder in (root / layout.folder, root):
        if (folder / layout.meta_file).is_file():
            return folder
    raise DataError(
        f"no {layout.name} data under {root}: expected {root / layout.folder}/ with "
        f"{', '.join(layout.train_files)}, {layout.test_file} and {layout.meta_file} "
        "(the python version of CIFAR, unpacked)"
    )


def _read_batches(layout: _CifarLayout, folder: Path, files: tuple[str, ...]) -> BalancedPool:
    """Concatenate batches into ``images: uint8 [N, 32, 32, 3]`` and ``targets: int64 [N]``."""
    images: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for file in files:
        path = folder / file
        batch = _load_pickle(path)
        data = np.asarray(_field(batch, b"data", path))
        labels = np.asarray(_field(batch, layout.label_key, path), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(
                f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}"
            )
        if labels.shape != (len(data),):
            raise DataError(f"{path}: {len(labels)} labels for {len(data)} images")
        if len(labels) and (labels.min() < 0 or labels.max() >= layout.num_classes):
            raise DataError(f"{path}: labels must lie in 0..{layout.num_classes - 1}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        targets.append(labels)
    return BalancedPool(np.ascontiguousarray(np.concatenate(images)), np.concatenate(targets))


def _class_names(layout: _CifarLayout, folder: Path) -> list[str]:
    path = folder / layout.meta_file
    names = _field(_load_pickle(path), layout.names_key, path)
    if not isinstance(names, list) or len(names) != layout.num_classes:
        raise DataError(f"{path}: expected {layout.num_classes} class names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _make_builder(layout: _CifarLayout) -> DatasetBuilder:
    def build(
        split: str,
        *,
        root: Path | None,
        imbalance_factor: float,
        profile: str,
        n_max: int | None,
        lt_seed: int,
        val_per_class: int | None,
        split_file: str | None,
        allowed_roots: Sequence[Path] | None = None,
    ) -> LTDataset:
        if root is None:
            raise ValueError(f"{layout.name} needs a root folder")
        check_links(root, allowed_roots)
        folder = _resolve(layout, root)
        return build_longtail_split(
            layout.name,
            split,
            train_pool=lambda: _read_batches(layout, folder, layout.train_files),
            test_set=lambda: _read_batches(layout, folder, (layout.test_file,)),
            classes=_class_names(layout, folder),
            in_chans=3,
            where=str(folder),
            imbalance_factor=imbalance_factor,
            profile=profile,
            n_max=layout.per_class if n_max is None else n_max,
            lt_seed=lt_seed,
            val_per_class=layout.val_per_class if val_per_class is None else val_per_class,
        )

    return build


CIFAR10 = _CifarLayout(
    name="cifar10-lt",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
    num_classes=10,
    per_class=5000,
    val_per_class=50,
)
CIFAR100 = _CifarLayout(
    name="cifar100-lt",
    folder="cifar-100-python",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
    num_classes=100,
    per_class=500,
    val_per_class=10,
)

for _layout in (CIFAR10, CIFAR100):
    DATASETS.add(
        _layout.name,
        DatasetSpec(
            info=DatasetInfo(
                name=_layout.name,
                description=(
                    f"long-tailed CIFAR-{_layout.num_classes} from the python batches under root"
                ),
                num_classes=_layout.num_classes,
                in_chans=3,
                mean=stats.CIFAR_STATS[0],
                std=stats.CIFAR_STATS[1],
                has_test=True,
                default_n_max=_layout.per_class,
                default_val_per_class=_layout.val_per_class,
            ),
            build=_make_builder(_layout),
        ),
    )
