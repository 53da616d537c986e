"""Datasets, long-tailed selection, transforms and the bundled Fashion-MNIST-LT subset.

``build_dataset(name, split, root=...)`` builds a split of a registered dataset
(``list_datasets()``); ``dataset_info(name)`` gives its class count, channels and statistics.

The names below are imported on first use (PEP 562), so that the torch-free modules of this
package (``livt_core.data.profile``, ``longtail``) can be imported by the job
service's API without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: name → the submodule that defines it
_EXPORTS = {
    "DATASETS": "datasets",  # the registry, filled by the modules ``datasets`` imports
    "LTDataset": "base",
    "DatasetInfo": "datasets",
    "build_dataset": "datasets",
    "dataset_info": "datasets",
    "list_datasets": "datasets",
    "longtail_counts": "longtail",
    "select_longtail": "longtail",
    "split_longtail_holdout": "longtail",
    "normalization": "stats",
    "build_eval_transform": "transforms",
    "build_mixup": "transforms",
    "build_pretrain_transform": "transforms",
    "build_train_transform": "transforms",
}

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "LTDataset",
    "build_dataset",
    "build_eval_transform",
    "build_mixup",
    "build_pretrain_transform",
    "build_train_transform",
    "dataset_info",
    "list_datasets",
    "longtail_counts",
    "normalization",
    "select_longtail",
    "split_longtail_holdout",
]

if TYPE_CHECKING:
    from livt_core.data.base import DATASETS, LTDataset
    from livt_core.data.datasets import DatasetInfo, build_dataset, dataset_info, list_datasets
    from livt_core.data.longtail import longtail_counts, select_longtail, split_longtail_holdout
    from livt_core.data.stats import normalization
    from livt_core.data.transforms import (
        build_eval_transform,
        build_mixup,
        build_pretrain_transform,
        build_train_transform,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
