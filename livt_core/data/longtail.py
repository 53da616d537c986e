"""Long-tailed subsets of balanced data sets (the CIFAR-LT rule of the long-tail literature).

``longtail_counts`` gives the number of images class ``i`` keeps; ``select_longtail`` picks which
ones with a seeded shuffle. The shuffle is a ``numpy.random.RandomState(seed)`` that permutes the
indices of each class in class order, so that seed 0 reproduces the CIFAR-10/100-LT subsets most
long-tail papers train on. ``split_longtail_holdout`` continues the same permutation to hold out a
balanced validation set from the images the long-tailed set left unused.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from livt_core.errors import ConfigError, DataError

PROFILES = ("exp", "step")


def longtail_counts(
    n_max: int, num_classes: int, imbalance_factor: float, profile: str = "exp"
) -> list[int]:
    """Images per class of a long-tailed subset, head class first.

    ``exp``: class ``i`` keeps ``int(n_max * γ^(-i / (C - 1)))``; ``step``: the first
    ``ceil(C / 2)`` classes keep ``n_max``, the others ``int(n_max / γ)``. ``γ`` is
    ``imbalance_factor`` (``n_max / n_min``); ``γ = 1`` gives a balanced set.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < 1:
        raise ConfigError("data.n_max", f"must be a positive integer, got {n_max!r}")
    if not math.isfinite(imbalance_factor) or imbalance_factor < 1:
        raise ConfigError(
            "data.imbalance_factor",
            f"must be a finite number ≥ 1, got {imbalance_factor!r}",
            "use e.g. 100 or 10 (1 means balanced)",
        )
    if profile == "exp":
        if num_classes == 1:
            counts = [n_max]
        else:
            # (1/γ)^(i/(C-1)) rather than γ^(-i/(C-1)): the same number, and the form whose
            # floating-point rounding the published CIFAR-LT counts were computed with.
            counts = [
                int(n_max * (1.0 / imbalance_factor) ** (i / (num_classes - 1)))
                for i in range(num_classes)
            ]
    elif profile == "step":
        head = (num_classes + 1) // 2
        counts = [n_max] * head + [int(n_max / imbalance_factor)] * (num_classes - head)
    else:
        raise ConfigError("data.profile", f"unknown profile {profile!r}", "use 'exp' or 'step'")
    if counts[-1] < 1:
        raise ConfigError(
            "data.n_max",
            f"n_max={n_max} with imbalance_factor={imbalance_factor} leaves the last class "
            "with no image",
            f"raise n_max to at least {math.ceil(imbalance_factor)} or lower imbalance_factor",
        )
    return counts


def _class_permutations(
    targets: Sequence[int], num_classes: int, seed: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(class, seeded permutation of that class's indices)`` in class order."""
    labels = np.asarray(targets, dtype=np.int64)
    rng = np.random.RandomState(seed)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        yield c, idx


def _class_label(c: int, class_names: Sequence[str] | None) -> str:
    return f"class {c} ({class_names[c]!r})" if class_names is not None else f"class {c}"


def select_longtail(targets: Sequence[int], counts: Sequence[int], seed: int = 0) -> list[int]:
    """Indices (ascending) of ``counts[c]`` images of each class ``c``, chosen by a seeded shuffle.

    Labels ``≥ len(counts)`` are never selected. Raises :class:`DataError` when a class has fewer
    images than asked for.
    """
    train, _ = split_longtail_holdout(targets, counts, 0, seed)
    return train


def split_longtail_holdout(
    targets: Sequence[int],
    counts: Sequence[int],
    holdout_per_class: int,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> tuple[list[int], list[int]]:
    """Long-tailed selection plus a balanced hold-out set from the images it did not use.

    Returns ``(train, holdout)`` ascending index lists; ``train`` equals
    ``select_longtail(targets, counts, seed)`` whatever ``holdout_per_class`` is, and the two are
    disjoint. Raises :class:`DataError` naming the class when its pool is too small.
    """
    if holdout_per_class < 0:
        raise ConfigError("data.val_per_class", f"must be ≥ 0, got {holdout_per_class}")
    train: list[int] = []
    holdout: list[int] = []
    for c, idx in _class_permutations(targets, len(counts), seed):
        need = counts[c] + holdout_per_class
        if len(idx) < need:
            detail = f"{counts[c]} for the long-tailed train set"
            if holdout_per_class:
                detail += f" + {holdout_per_class} held out for val"
            raise DataError(
                f"{_class_label(c, class_names)} has {len(idx)} images in the training pool but "
                f"needs {need} ({detail}); lower n_max"
                + (" or val_per_class" if holdout_per_class else "")
            )
        train.extend(idx[: counts[c]].tolist())
        holdout.extend(idx[counts[c] : need].tolist())
    return sorted(train), sorted(holdout)
