"""Datasets that are long-tailed on disk: an image-folder tree or the literature's split files.

``imagefolder``: ``root/<split>/<class>/<image>``; the classes and their order are the sorted
folder names of ``root/train``. ``splitfile``: ``root/<split_file>`` lists ``relative/path label``
lines (``ImageNet_LT_train.txt`` and the like); paths are relative to ``root`` and must stay
inside it; classes are the labels ``0..max``. Both read RGB images from files on each access.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from livt_core.data import stats
from livt_core.data.base import DATASETS, DatasetInfo, DatasetSpec, FileDataset, LTDataset
from livt_core.errors import DataError
from livt_core.paths import check_file_inside

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


def _confined(paths: list[Path], root: Path, allowed_roots: Sequence[Path] | None) -> None:
    """With ``allowed_roots``, a class folder or image that is a link leading outside them
    refuses the whole dataset (a silently smaller class would skew the long-tail counts)."""
    if allowed_roots is None:
        return
    for path in paths:
        check_file_inside(path, allowed_roots, what=str(path.relative_to(root)))


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
    allowed_roots: Sequence[Path] | None = None,
) -> LTDataset:
    if root is None:
        raise ValueError("imagefolder needs a root folder")
    layout = "imagefolder expects root/train/<class>/<image> and root/val/<class>/<image>"
    train_dir = root / "train"
    _confined([p for p in (root / "train", root / split) if p.exists()], root, allowed_roots)
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
            _confined([split_dir / name], root, allowed_roots)
            files = _images_in(split_dir / name)
            _confined(files, root, allowed_roots)
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


_SPLIT_FORMAT = (
    "expected 'relative/path label' (an image path relative to root, a space, an integer)"
)


def _parse_split_file(root: Path, path: Path) -> tuple[list[Path], list[int]]:
    """Reads a split file. Its errors give line numbers only, never the file's text."""
    name = path.name
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"split file {name} is not UTF-8 text; {_SPLIT_FORMAT} lines") from None
    except OSError as exc:
        raise DataError(f"cannot read split file {name} ({exc.strerror or 'unreadable'})") from None
    # A lexical check: ".." may not leave root, while symlinks placed inside root are honoured.
    base = Path(os.path.normpath(root.absolute()))
    paths: list[Path] = []
    targets: list[int] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        parts = text.rsplit(maxsplit=1)
        where = f"split file {name}, line {number}"
        if len(parts) != 2:
            raise DataError(f"{where}: {_SPLIT_FORMAT}")
        rel, label = parts
        try:
            target = int(label)
        except ValueError:
            raise DataError(f"{where}: the label is not an integer; {_SPLIT_FORMAT}") from None
        if target < 0:
            raise DataError(f"{where}: the label is negative; labels count from 0")
        file = Path(os.path.normpath(base / rel))
        if Path(rel).is_absolute() or not file.is_relative_to(base):
            raise DataError(
                f"{where}: the image path must be relative to the dataset root and stay inside it"
            )
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
    allowed_roots: Sequence[Path] | None = None,
) -> LTDataset:
    if root is None:
        raise ValueError("splitfile needs a root folder")
    path = root / (split_file or f"{split}.txt")
    if allowed_roots is not None:
        check_file_inside(path, allowed_roots, what=f"the {split} split file")
    if not path.is_file():
        raise DataError(
            f"split file {path.name} not found; splitfile expects root/<split_file> with "
            "'relative/path label' lines (split_file defaults to <split>.txt)"
        )
    paths, targets = _parse_split_file(root, path)
    missing = [n for n, p in enumerate(paths, start=1) if not p.is_file()]
    if missing:
        shown = ", ".join(str(n) for n in missing[:_MISSING_SHOWN])
        raise DataError(
            f"{len(missing)} images listed in split file {path.name} do not exist (entries "
            f"{shown}{', ...' if len(missing) > _MISSING_SHOWN else ''}); fix those lines"
        )
    if allowed_roots is not None:
        for number, file in enumerate(paths, start=1):
            check_file_inside(file, allowed_roots, what=f"entry {number} of split file {path.name}")
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
