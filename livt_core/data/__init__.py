"""Datasets, long-tailed selection, transforms and the bundled Fashion-MNIST-LT subset.

``build_dataset(name, split, root=...)`` builds a split of a registered dataset
(``list_datasets()``); ``dataset_info(name)`` gives its class count, channels and statistics.
"""

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
