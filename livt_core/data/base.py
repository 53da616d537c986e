"""The dataset type every builder returns, the dataset registry, and the shared LT split logic."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from livt_core import catalog
from livt_core.data.longtail import longtail_counts, split_longtail_holdout
from livt_core.errors import DataError
from livt_core.paths import check_file_inside
from livt_core.registry import Registry

SPLITS = ("train", "val", "test")


class LTDataset(Dataset, abc.ABC):
    """A labelled image dataset split; items are ``(transform(image), label)``.

    ``targets[i]`` is the label of item ``i``; ``class_counts[c]`` counts the items of class ``c``
    in this split (zero for a class the split lacks). Before ``transform`` images are PIL images
    in mode ``"L"`` (``in_chans == 1``) or ``"RGB"``. ``source`` says in words where the images
    and their counts come from.
    """

    def __init__(
        self,
        *,
        targets: Sequence[int],
        classes: Sequence[str],
        in_chans: int,
        source: str,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        self.targets: list[int] = [int(t) for t in targets]
        self.classes: list[str] = list(classes)
        self.in_chans = in_chans
        self.source = source
        self.transform = transform
        counts = np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=len(self.classes))
        self.class_counts: list[int] = counts[: len(self.classes)].tolist()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    @abc.abstractmethod
    def load_image(self, index: int) -> Image.Image:
        """The untransformed image of item ``index``."""

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(images={len(self)}, classes={self.num_classes}, "
            f"source={self.source!r})"
        )


class ArrayDataset(LTDataset):
    """Images held in memory as ``uint8`` arrays: ``[N, H, W]`` (grey) or ``[N, H, W, 3]``."""

    def __init__(self, images: np.ndarray, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(self):
            raise ValueError(
                f"images must be uint8 [N, H, W(, 3)] with N={len(self)}, "
                f"got {images.dtype} {images.shape}"
            )
        self.images = images

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


#: Headers read to estimate the memory a decoded file dataset takes.
_CACHE_PROBES = 64


class FileDataset(LTDataset):
    """Images read from files, converted to RGB: on each access, or once into memory.

    :meth:`cache` decodes every image into ``uint8`` arrays held by the dataset (one
    ``[N, H, W, 3]`` array when all images share a size, else one array each). Loader workers
    forked afterwards read those pages shared with the parent, so the files are decoded once
    per run instead of once per image per epoch.
    """

    def __init__(self, paths: Sequence[Path], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if len(paths) != len(self):
            raise ValueError(f"{len(paths)} paths for {len(self)} targets")
        self.paths = list(paths)
        self.cached: np.ndarray | list[np.ndarray] | None = None

    def _decode(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from exc

    def load_image(self, index: int) -> Image.Image:
        if self.cached is not None:
            return Image.fromarray(self.cached[index])
        return self._decode(index)

    def estimated_bytes(self) -> int:
        """Decoded RGB size of the whole set, estimated from the headers of up to 64 files."""
        if not self.paths:
            return 0
        step = max(1, len(self.paths) // _CACHE_PROBES)
        pixels = []
        for path in self.paths[::step][:_CACHE_PROBES]:
            try:
                with Image.open(path) as image:
                    pixels.append(image.width * image.height)
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                raise DataError(f"cannot read image {path}: {exc}") from exc
        return int(3 * len(self.paths) * sum(pixels) / len(pixels))

    def cache(self, budget_bytes: int) -> bool:
        """Decodes every image into memory when the set fits ``budget_bytes``; True then."""
        if self.cached is not None:
            return True
        if budget_bytes <= 0 or self.estimated_bytes() > budget_bytes:
            return False
        arrays = [np.asarray(self._decode(i)) for i in range(len(self.paths))]
        if len({a.shape for a in arrays}) == 1:
            self.cached = np.stack(arrays)
        else:
            self.cached = arrays
        return True


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a registered dataset.

    ``num_classes`` is ``None`` where it is read from the data. ``has_test``: the dataset has a
    test split distinct from ``val`` (for folder datasets, whether the given root has one).
    ``default_n_max`` / ``default_val_per_class`` apply to the long-tailed versions of balanced
    sets and are ``None`` for datasets that are long-tailed on disk. ``bundled``: ``root=None``
    reads a copy shipped with the package.
    """

    name: str
    description: str
    num_classes: int | None
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    has_test: bool
    default_n_max: int | None = None
    default_val_per_class: int | None = None
    bundled: bool = False


class DatasetBuilder(Protocol):
    def __call__(
        self,
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
    ) -> LTDataset: ...


def check_links(folder: Path, allowed_roots: Sequence[Path] | None, depth: int = 2) -> None:
    """Refuses a dataset folder holding a link (file or folder, ``depth`` levels down) that
    leads outside ``allowed_roots`` (None: no roots to keep to, e.g. a local library run)."""
    if allowed_roots is None:
        return
    check_file_inside(folder, allowed_roots, what="the dataset folder")
    level = [folder]
    for _ in range(depth):
        below: list[Path] = []
        for parent in level:
            for entry in sorted(parent.iterdir()):
                if entry.is_symlink():
                    check_file_inside(entry, allowed_roots, what=f"{entry.relative_to(folder)}")
                if entry.is_dir():
                    below.append(entry)
        level = below


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry: the dataset's facts and its builder.

    ``test_probe(root)`` tells whether a root holds a test split, for datasets where that varies.
    """

    info: DatasetInfo
    build: DatasetBuilder
    test_probe: Callable[[Path], bool] | None = None


DATASETS: Registry[DatasetSpec] = Registry("dataset", "data.dataset", known=catalog.DATASET_NAMES)


@dataclass(frozen=True)
class BalancedPool:
    """A balanced labelled set loaded into memory: ``images`` ``uint8 [N, H, W(, 3)]``."""

    images: np.ndarray
    targets: np.ndarray


def build_longtail_split(
    name: str,
    split: str,
    *,
    train_pool: Callable[[], BalancedPool],
    test_set: Callable[[], BalancedPool],
    classes: Sequence[str],
    in_chans: int,
    where: str,
    imbalance_factor: float,
    profile: str,
    n_max: int,
    lt_seed: int,
    val_per_class: int,
) -> ArrayDataset:
    """One split of a long-tailed version of a balanced dataset.

    ``train``: the long-tailed selection from the training pool; ``val``: ``val_per_class`` images
    per class from the pool images the selection left unused (never the test set); ``test``: the
    whole balanced test set. ``where`` describes the files, for ``source``.
    """
    if split == "test":
        test = test_set()
        return ArrayDataset(
            test.images,
            targets=test.targets,
            classes=classes,
            in_chans=in_chans,
            source=f"{name} test: the balanced test set ({len(test.targets)} images) from {where}",
        )
    counts = longtail_counts(n_max, len(classes), imbalance_factor, profile)
    pool = train_pool()
    holdout = val_per_class if split == "val" else 0
    train_idx, val_idx = split_longtail_holdout(pool.targets, counts, holdout, lt_seed, classes)
    rule = f"{profile} γ={imbalance_factor:g} n_max={n_max} seed={lt_seed}"
    if split == "train":
        idx = np.asarray(train_idx, dtype=np.int64)
        source = f"{name} train: {rule} ({len(idx)} images) from {where}"
    else:
        idx = np.asarray(val_idx, dtype=np.int64)
        source = (
            f"{name} val: {val_per_class} images per class held out from the training images "
            f"not selected by the long-tailed train set ({rule}) from {where}"
        )
    return ArrayDataset(
        pool.images[idx],
        targets=pool.targets[idx],
        classes=classes,
        in_chans=in_chans,
        source=source,
    )
