"""Build the Fashion-MNIST-LT demo subset bundled in ``livt_core/data/assets/fashion-mnist-lt``.

The training pool keeps, per class, exactly the images the default long-tailed train set uses
(``n_max`` · γ^(−i/9), exp profile) plus ``val_per_class`` images for validation; the test set is a
balanced, seeded choice of ``test_per_class`` images per class from t10k. The output is
byte-identical for the same inputs and arguments.

    python scripts/make_demo_subset.py --source ../shared/data/fashion-mnist \\
        --out livt_core/data/assets/fashion-mnist-lt
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import numpy as np

from livt_core.data.fashion import (
    DEFAULT_N_MAX,
    DEFAULT_VAL_PER_CLASS,
    load_fashion_split,
    write_idx,
)
from livt_core.data.longtail import longtail_counts, select_longtail

logger = logging.getLogger("make_demo_subset")


def build_subset(
    source: Path,
    out: Path,
    *,
    n_max: int = DEFAULT_N_MAX,
    imbalance_factor: float = 100.0,
    val_per_class: int = DEFAULT_VAL_PER_CLASS,
    test_per_class: int = 100,
    seed: int = 0,
) -> None:
    """Write the four IDX files (and the LICENSE of ``source``, when present) into ``out``."""
    train = load_fashion_split(source, "train")
    test = load_fashion_split(source, "t10k")
    num_classes = int(train.targets.max()) + 1
    pool_counts = [n + val_per_class for n in longtail_counts(n_max, num_classes, imbalance_factor)]
    pool_idx = np.asarray(select_longtail(train.targets, pool_counts, seed), dtype=np.int64)
    test_idx = np.asarray(
        select_longtail(test.targets, [test_per_class] * num_classes, seed), dtype=np.int64
    )
    out.mkdir(parents=True, exist_ok=True)
    write_idx(out / "train-images-idx3-ubyte.gz", train.images[pool_idx])
    write_idx(out / "train-labels-idx1-ubyte.gz", train.targets[pool_idx].astype(np.uint8))
    write_idx(out / "t10k-images-idx3-ubyte.gz", test.images[test_idx])
    write_idx(out / "t10k-labels-idx1-ubyte.gz", test.targets[test_idx].astype(np.uint8))
    if (source / "LICENSE").is_file():
        shutil.copyfile(source / "LICENSE", out / "LICENSE")
    logger.info(
        "wrote %d training-pool images %s and %d test images to %s",
        len(pool_idx),
        pool_counts,
        len(test_idx),
        out,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="folder of Fashion-MNIST IDX")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--n-max", type=int, default=DEFAULT_N_MAX)
    parser.add_argument("--imbalance-factor", type=float, default=100.0)
    parser.add_argument("--val-per-class", type=int, default=DEFAULT_VAL_PER_CLASS)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_subset(
        args.source,
        args.out,
        n_max=args.n_max,
        imbalance_factor=args.imbalance_factor,
        val_per_class=args.val_per_class,
        test_per_class=args.test_per_class,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
