"""The profile of an image-folder dataset: what a run's recipe and the submit-time checks need
to know about it, read once from the files.

``profile_imagefolder(root)`` walks ``root/<split>/<class>/<image>`` (the ``imagefolder``
layout) and returns a :class:`DatasetProfile`: images per split and class, classes missing from
a split, image sizes, grey vs colour, per-channel mean / std and the files that cannot be read.
The profile is plain data (``to_dict()`` is JSON) so that the job service can store it and the
``auto`` recipe (``livt_core.config.auto``) can derive a config from it without torch.

This module uses PIL and NumPy only (no torch).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
PROFILE_SPLITS = ("train", "val", "test")
#: Images decoded for the channel statistics (evenly spaced over the training split): enough
#: for mean / std to three decimals, bounded so that a 100k-image set profiles in minutes.
STATS_IMAGES = 2000
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
_UNREADABLE_SHOWN = 50

#: ``progress(done, total)`` after each image.
Progress = Callable[[int, int], None]


@dataclass
class DatasetProfile:
    """What a dataset folder holds.

    ``splits[split][class]``: images of each class in each split present (classes follow the
    sorted folder names of ``train/``; a class a split lacks has count 0 and is listed in
    ``missing_classes[split]``). ``extra_classes[split]``: class folders of a split that
    ``train/`` lacks. ``sizes``: ``min_side`` / ``median_side`` / ``max_side`` (the short side in
    pixels), ``min_long_side`` ... and ``uniform`` (every image has the same width and height)
    over the readable images of every split. ``colour``: ``"grey"`` when every inspected image
    is single-channel or has three equal channels, else ``"colour"``; ``mean`` / ``std``: per
    channel (one value for grey) in [0, 1], from up to ``stats_images`` training images.
    ``unreadable``: files that cannot be decoded (relative paths, the first 50) and
    ``unreadable_count``. ``formats``: image count per file format.
    """

    root: str
    classes: list[str]
    splits: dict[str, dict[str, int]]
    missing_classes: dict[str, list[str]] = field(default_factory=dict)
    extra_classes: dict[str, list[str]] = field(default_factory=dict)
    sizes: dict[str, Any] = field(default_factory=dict)
    colour: str = "colour"
    channels: int = 3
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    stats_images: int = 0
    formats: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    unreadable_count: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_size(self, split: str) -> int:
        return sum(self.splits.get(split, {}).values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["num_classes"] = self.num_classes
        out["images"] = {split: self.split_size(split) for split in self.splits}
        train = [n for n in self.splits.get("train", {}).values()]
        out["imbalance_ratio"] = (
            round(max(train) / min(train), 2) if train and min(train) > 0 else None
        )
        return out


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """The image files below ``folder`` (any depth), sorted; hidden files are skipped."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _evenly_spaced(n: int, k: int) -> set[int]:
    if n <= k:
        return set(range(n))
    return {int(i * n / k) for i in range(k)}


class _ChannelMoments:
    """Running per-channel sums of pixel values in [0, 1] (float64)."""

    def __init__(self) -> None:
        self.count = 0
        self.total: np.ndarray | None = None
        self.squares: np.ndarray | None = None
        self.grey = True

    def add(self, image: Image.Image) -> None:
        if image.mode in _GREY_MODES:
            pixels = np.asarray(image.convert("L"), dtype=np.float64)[..., None] / 255.0
        else:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
            if self.grey and not (
                np.array_equal(pixels[..., 0], pixels[..., 1])
                and np.array_equal(pixels[..., 1], pixels[..., 2])
            ):
                self.grey = False
        flat = pixels.reshape(-1, pixels.shape[-1])
        if flat.shape[1] == 1:
            flat = np.repeat(flat, 3, axis=1)
        total, squares = flat.sum(axis=0), np.square(flat).sum(axis=0)
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares
        self.count += flat.shape[0]

    def result(self) -> tuple[list[float], list[float]]:
        if self.total is None or self.squares is None or self.count == 0:
            return [], []
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - np.square(mean), 0.0))
        if self.grey:
            mean, std = mean[:1], std[:1]
        return [round(float(v), 4) for v in mean], [round(max(float(v), 1e-3), 4) for v in std]


def _size_summary(sizes: Iterable[tuple[int, int]]) -> dict[str, Any]:
    sizes = list(sizes)
    if not sizes:
        return {}
    short = [min(w, h) for w, h in sizes]
    long = [max(w, h) for w, h in sizes]
    return {
        "min_side": min(short),
        "median_side": int(statistics.median(short)),
        "max_side": max(short),
        "min_long_side": min(long),
        "max_long_side": max(long),
        "uniform": len(set(sizes)) == 1,
        "example": list(sizes[0]),
    }


def profile_imagefolder(
    root: str | Path,
    *,
    stats_images: int = STATS_IMAGES,
    verify: bool = True,
    progress: Progress | None = None,
) -> DatasetProfile:
    """Reads ``root/{train,val[,test]}/<class>/<image>`` once and describes it.

    ``verify``: decode every image (finds truncated or corrupt files; otherwise only the headers
    are read, plus the ``stats_images`` decoded for the statistics). ``progress(done, total)``
    is called after each image. A missing ``train/`` folder raises ``FileNotFoundError``; images
    that cannot be read are listed, not raised.
    """
    root = Path(root)
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise FileNotFoundError(
            f"{train_dir} not found; an image folder holds root/train/<class>/<image> and "
            "root/val/<class>/<image> (root/test is optional)"
        )
    classes = _class_dirs(train_dir)
    files: dict[str, dict[str, list[Path]]] = {}
    profile = DatasetProfile(root=str(root), classes=classes, splits={})
    for split in PROFILE_SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        present = _class_dirs(folder)
        files[split] = {name: image_files(folder / name) for name in classes if name in present}
        profile.splits[split] = {name: len(files[split].get(name, [])) for name in classes}
        missing = [name for name in classes if not files[split].get(name)]
        if missing:
            profile.missing_classes[split] = missing
        extra = sorted(set(present) - set(classes))
        if extra:
            profile.extra_classes[split] = extra

    total = sum(len(paths) for per_class in files.values() for paths in per_class.values())
    train_paths = [p for name in classes for p in files.get("train", {}).get(name, [])]
    sampled = {train_paths[i] for i in _evenly_spaced(len(train_paths), stats_images)}
    moments = _ChannelMoments()
    sizes: list[tuple[int, int]] = []
    done = 0
    for per_class in files.values():
        for paths in per_class.values():
            for path in paths:
                try:
                    with Image.open(path) as image:
                        size = image.size
                        fmt = image.format or path.suffix.lower().lstrip(".")
                        if verify or path in sampled:
                            image.load()
                        if path in sampled:
                            moments.add(image)
                    sizes.append(size)
                    profile.formats[fmt] = profile.formats.get(fmt, 0) + 1
                except (OSError, UnidentifiedImageError, ValueError):
                    profile.unreadable_count += 1
                    if len(profile.unreadable) < _UNREADABLE_SHOWN:
                        profile.unreadable.append(str(path.relative_to(root)))
                done += 1
                if progress is not None:
                    progress(done, total)
    profile.sizes = _size_summary(sizes)
    profile.mean, profile.std = moments.result()
    profile.stats_images = len(sampled)
    profile.colour = "grey" if moments.grey and moments.count else "colour"
    profile.channels = 1 if profile.colour == "grey" else 3
    return profile
