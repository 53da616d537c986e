"""Per-dataset normalisation statistics (mean / std of pixel values in [0, 1], per channel)."""

from __future__ import annotations

from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

Stats = tuple[tuple[float, ...], tuple[float, ...]]

IMAGENET_STATS: Stats = (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))
IMAGENET_LT_STATS: Stats = ((0.479672, 0.457713, 0.407721), (0.278976, 0.271203, 0.286062))
INAT18_STATS: Stats = ((0.466, 0.471, 0.380), (0.195, 0.194, 0.192))
CIFAR_STATS: Stats = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
# Mean and standard deviation over every pixel of the 60,000 Fashion-MNIST training images
# (train-images-idx3-ubyte.gz, values / 255, float64): 0.28604 and 0.35302.
FASHION_MNIST_STATS: Stats = ((0.2860,), (0.3530,))

DATASET_STATS: dict[str, Stats] = {
    "imagenet": IMAGENET_STATS,
    "imagenet-lt": IMAGENET_LT_STATS,
    "inat18": INAT18_STATS,
    "places-lt": IMAGENET_STATS,
    "cifar10-lt": CIFAR_STATS,
    "cifar100-lt": CIFAR_STATS,
    "fashion-mnist-lt": FASHION_MNIST_STATS,
}


def normalization(name: str) -> Stats:
    """``(mean, std)`` of a dataset or preset name; ImageNet's defaults for any other name."""
    return DATASET_STATS.get(name, IMAGENET_STATS)
