"""Fashion-MNIST-LT: the CIFAR-LT rule applied to Fashion-MNIST (28×28 grey, 10 classes).

``root`` holds the four IDX files of Fashion-MNIST (``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``,
gzipped or not). ``root=None`` reads the small subset bundled with the package (see
``assets/fashion-mnist-lt/README.md``), sized so that the default long-tailed train set and
validation set use its training pool exactly.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from livt_core.data import stats
from livt_core.data.base import (
    DATASETS,
    BalancedPool,
    DatasetInfo,
    DatasetSpec,
    LTDataset,
    build_longtail_split,
    check_links,
)
from livt_core.errors import DataError

NAME = "fashion-mnist-lt"
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DEFAULT_N_MAX = 1000
DEFAULT_VAL_PER_CLASS = 50
BUNDLED_ROOT = Path(__file__).resolve().parent / "assets" / "fashion-mnist-lt"

_UBYTE = 0x08


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped when the name ends in ``.gz``).

    Returns ``uint8`` of the stored shape (``[N, 28, 28]`` images, ``[N]`` labels). The magic
    number, the number of dimensions and the payload size are checked; any mismatch or a broken
    gzip stream raises :class:`DataError`.
    """
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE or raw[3] != ndim:
        raise DataError(
            f"{path} is not an IDX file of {ndim}-d unsigned bytes "
            f"(magic {raw[:4].hex() or 'missing'}, expected 000008{ndim:02x})"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != size:
        raise DataError(
            f"{path}: header says {shape} = {size} bytes but the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a ``uint8`` array as a gzipped IDX file (fixed gzip header: identical bytes per run)."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX arrays must be uint8, got {array.dtype}")
    header = bytes([0, 0, _UBYTE, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array).tobytes(), mtime=0))


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"Fashion-MNIST file {root / (stem + '.gz')} not found; {NAME} expects "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        f"t10k-labels-idx1-ubyte.gz in {root}"
    )


def load_fashion_split(root: Path, prefix: str) -> BalancedPool:
    """``prefix`` ``"train"`` or ``"t10k"``: ``images`` ``uint8 [N, 28, 28]``, ``targets`` ``[N]``."""
    images_path = _find(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(root, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} {len(labels)}")
    if len(labels) and labels.max() >= len(CLASSES):
        raise DataError(f"{labels_path}: labels must lie in 0..{len(CLASSES) - 1}")
    return BalancedPool(images, labels)


def _build(
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
    folder = BUNDLED_ROOT if root is None else root
    if root is not None:
        check_links(root, allowed_roots)
    where = f"the bundled subset {folder}" if root is None else str(folder)
    return build_longtail_split(
        NAME,
        split,
        train_pool=lambda: load_fashion_split(folder, "train"),
        test_set=lambda: load_fashion_split(folder, "t10k"),
        classes=CLASSES,
        in_chans=1,
        where=where,
        imbalance_factor=imbalance_factor,
        profile=profile,
        n_max=DEFAULT_N_MAX if n_max is None else n_max,
        lt_seed=lt_seed,
        val_per_class=DEFAULT_VAL_PER_CLASS if val_per_class is None else val_per_class,
    )


DATASETS.add(
    NAME,
    DatasetSpec(
        info=DatasetInfo(
            name=NAME,
            description="long-tailed Fashion-MNIST from IDX files (root=None: the bundled subset)",
            num_classes=len(CLASSES),
            in_chans=1,
            mean=stats.FASHION_MNIST_STATS[0],
            std=stats.FASHION_MNIST_STATS[1],
            has_test=True,
            default_n_max=DEFAULT_N_MAX,
            default_val_per_class=DEFAULT_VAL_PER_CLASS,
            bundled=True,
        ),
        build=_build,
    ),
)
