"""Datasets that are long-tailed on disk: an image-folder tree or the literature's split files.

``imagefolder``: ``root/<split>/<class>/<image>``; the classes and their order are the sorted
folder names of ``root/train``. ``splitfile``: ``root/<split_file>`` lists ``relative/path label``
lines (``ImageNet_LT_train.txt`` and the like); paths are relative to ``root`` and must stay
inside it; classes are the labels ``0..max``. Both read RGB images from files on each access.
"""

from __future__ import annotations

import os
from pathlib import Path

from livt_core.data import stats
from livt_core.data.base import DATASETS, DatasetInfo, DatasetSpec, FileDataset, LTDataset
from livt_core.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
_MISSING_SHOWN = 5


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _build_imagefolder(
    split: str,
    *,
    root: Path | None,
    imbalance_factor: float,
    profile: str,
    n_max: int | None,
    lt_seed: int,
    val_per_class: int | None,
    split_file: str | None,
) -> LTDataset:
    if root is None:
        raise ValueError("imagefolder needs a root folder")
    layout = "imagefolder expects root/train/<class>/<image> and root/val/<class>/<image>"
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"{train_dir} not found; {layout}")
    classes = _class_dirs(train_dir)
    if not classes:
        raise DataError(f"{train_dir} has no class folders; {layout}")
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} not found; {layout} (root/test/<class>/* is optional)")
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(_class_dirs(split_dir)) - index.keys())
    if unknown:
        raise DataError(
            f"{split_dir} has class folders missing from {train_dir}: {', '.join(unknown[:10])}"
        )
    paths: list[Path] = []
    targets: list[int] = []
    for name in classes:
        if (split_dir / name).is_dir():
            files = _images_in(split_dir / name)
            paths.extend(files)
            targets.extend([index[name]] * len(files))
    if not paths:
        raise DataError(
            f"{split_dir} holds no images (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return FileDataset(
        paths,
        targets=targets,
        classes=classes,
        in_chans=3,
        source=f"imagefolder {split}: {len(paths)} images in {len(classes)} classes from {split_dir}",
    )


def _parse_split_file(root: Path, path: Path) -> tuple[list[Path], list[int]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from exc
    # A lexical check: ".." may not leave root, while symlinks placed inside root are honoured.
    base = Path(os.path.normpath(root.absolute()))
    paths: list[Path] = []
    targets: list[int] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        parts = text.rsplit(maxsplit=1)
        where = f"{path}, line {number}"
        if len(parts) != 2:
            raise DataError(f"{where}: expected 'relative/path label', got {text!r}")
        rel, label = parts
        try:
            target = int(label)
        except ValueError:
            raise DataError(f"{where}: label {label!r} is not an integer") from None
        if target < 0:
            raise DataError(f"{where}: label {target} is negative")
        file = Path(os.path.normpath(base / rel))
        if Path(rel).is_absolute() or not file.is_relative_to(base):
            raise DataError(f"{where}: path {rel!r} must be relative to {root} and stay inside it")
        paths.append(file)
        targets.append(target)
    if not paths:
        raise DataError(f"split file {path} lists no images")
    return paths, targets


def _build_splitfile(
    split: str,
    *,
    root: Path | None,
    imbalance_factor: float,
    profile: str,
    n_max: int | None,
    lt_seed: int,
    val_per_class: int | None,
    split_file: str | None,
) -> LTDataset:
    if root is None:
        raise ValueError("splitfile needs a root folder")
    path = root / (split_file or f"{split}.txt")
    if not path.is_file():
        raise DataError(
            f"split file {path} not found; splitfile expects root/<split_file> with "
            "'relative/path label' lines (split_file defaults to <split>.txt)"
        )
    paths, targets = _parse_split_file(root, path)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:_MISSING_SHOWN])
        raise DataError(f"{len(missing)} images listed in {path} do not exist, e.g. {shown}")
    classes = [str(c) for c in range(max(targets) + 1)]
    return FileDataset(
        paths,
        targets=targets,
        classes=classes,
        in_chans=3,
        source=f"splitfile {split}: {len(paths)} images in {len(classes)} classes listed in {path}",
    )


_FOLDER_INFO = dict(
    num_classes=None,
    in_chans=3,
    mean=stats.IMAGENET_STATS[0],
    std=stats.IMAGENET_STATS[1],
    has_test=False,
)

DATASETS.add(
    "imagefolder",
    DatasetSpec(
        info=DatasetInfo(
            name="imagefolder",
            description="root/{train,val[,test]}/<class>/<image>",
            **_FOLDER_INFO,
        ),
        build=_build_imagefolder,
        test_probe=lambda root: (root / "test").is_dir(),
    ),
)
DATASETS.add(
    "splitfile",
    DatasetSpec(
        info=DatasetInfo(
            name="splitfile",
            description="root/<split_file> with 'relative/path label' lines",
            **_FOLDER_INFO,
        ),
        build=_build_splitfile,
        test_probe=lambda root: (root / "test.txt").is_file(),
    ),
)
