"""Long-tailed ImageFolders generated from Fashion-MNIST for the tests (and ``bench/``).

``make_imagefolder(root, ...)`` writes ``root/{train,val[,test]}/<class>/<n>.<ext>``: the
training classes follow the exponential long-tail profile from ``n_max`` down to
``n_max / imbalance`` images, every other split holds ``per_class`` images of each class. Images
are grey or "colourised" RGB (each image tinted by a colour drawn independently of its class,
so the channels differ but carry no label),
resized to ``size`` px, written as PNG or JPEG. The source is the Fashion-MNIST IDX files in
``$LIVT_FASHION_MNIST_DIR``, else ``/work/shared/data/fashion-mnist``, else the bundled subset.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from livt_core.data.fashion import BUNDLED_ROOT, read_idx
from livt_core.data.longtail import longtail_counts

CLASS_NAMES = (
    "tee",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "boot",
)
#: Class folder names a user may well have: spaces, non-ASCII letters, mixed case.
ODD_CLASS_NAMES = (
    "T-shirt top",
    "Trouser",
    "Pull över",
    "Dress",
    "Coat",
    "Sandale",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_TINTS = np.array(
    [
        (1.0, 0.3, 0.3), (0.3, 1.0, 0.3), (0.3, 0.3, 1.0), (1.0, 1.0, 0.3), (1.0, 0.3, 1.0),
        (0.3, 1.0, 1.0), (1.0, 0.6, 0.2), (0.6, 0.2, 1.0), (0.2, 0.6, 0.6), (0.8, 0.8, 0.8),
    ]
)  # fmt: skip


def fashion_source() -> Path:
    for candidate in (
        os.environ.get("LIVT_FASHION_MNIST_DIR"),
        "/work/shared/data/fashion-mnist",
    ):
        if candidate and (Path(candidate) / "train-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    return BUNDLED_ROOT


def _pool(source: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if train else "t10k"
    images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz", 3)
    labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz", 1)
    return images, labels


def make_imagefolder(
    root: Path,
    *,
    n_max: int = 120,
    imbalance: float = 12.0,
    per_class: int = 10,
    size: int = 32,
    colour: bool = True,
    ext: str = "png",
    splits: Sequence[str] = ("train", "val"),
    class_names: Sequence[str] = CLASS_NAMES,
    seed: int = 0,
    corrupt: int = 0,
    missing_in_val: Sequence[str] = (),
) -> Path:
    """Writes the folder and returns ``root``. With the defaults: 10 classes, 463 training
    images (120 down to 10), 10 validation images a class, 32 px RGB PNG (a small user's set).

    ``corrupt``: that many training images (of the first class) are overwritten with bytes no
    decoder reads; ``missing_in_val``: classes that get no ``val/`` folder."""
    source = fashion_source()
    images, labels = _pool(source, train=True)
    rng = np.random.default_rng(seed)
    counts = longtail_counts(n_max, len(class_names), imbalance, "exp")
    order = {c: rng.permutation(np.flatnonzero(labels == c)) for c in range(len(class_names))}
    for split in splits:
        for c, name in enumerate(class_names):
            if split == "val" and name in missing_in_val:
                continue
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            if split == "train":
                picked = order[c][: counts[c]]
            else:
                offset = n_max + (per_class if split == "test" else 0)
                picked = order[c][offset : offset + per_class]
            for i, index in enumerate(picked):
                image = Image.fromarray(images[index])
                if size != image.width:
                    image = image.resize((size, size), Image.BICUBIC)
                if colour:  # a tint drawn per image, independent of the class
                    grey = np.asarray(image, dtype=np.float64)[..., None]
                    tint = _TINTS[rng.integers(len(_TINTS))]
                    rgb = np.clip(grey * tint + 20, 0, 255).astype(np.uint8)
                    image = Image.fromarray(rgb)
                image.save(folder / f"{i:04d}.{ext}", quality=90 if ext == "jpg" else None)
    for i in range(corrupt):
        (root / "train" / class_names[0] / f"{i:04d}.{ext}").write_bytes(b"\x89PNG broken")
    return root
