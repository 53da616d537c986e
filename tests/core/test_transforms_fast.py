"""The fast crop and tensor conversion draw from the same distribution as the torchvision
pipeline they replace (fixed seeds, statistics within tolerance) and stay deterministic."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from livt_core.data import build_dataset
from livt_core.data.transforms import (
    RandomResizedCrop,
    ToNormalizedTensor,
    build_eval_transform,
    build_pretrain_transform,
    build_train_transform,
)

MEAN, STD = (0.2860,), (0.3530,)


def _images(n: int = 200) -> list[Image.Image]:
    data = build_dataset("fashion-mnist-lt", "train", root=None)
    step = max(1, len(data) // n)
    return [data[i * step][0] for i in range(n)]


def _box_stats(boxes: list[tuple[int, int, int, int]], width: int, height: int) -> np.ndarray:
    area = np.array([h * w / (width * height) for _, _, h, w in boxes])
    log_aspect = np.array([math.log(w / h) for _, _, h, w in boxes])
    centre_x = np.array([(left + w / 2) / width for _, left, _, w in boxes])
    centre_y = np.array([(top + h / 2) / height for top, _, h, _ in boxes])
    return np.stack([area, log_aspect, centre_x, centre_y])


@pytest.mark.parametrize(("scale", "size"), [((0.08, 1.0), (28, 28)), ((0.35, 1.0), (64, 40))])
def test_crop_boxes_have_torchvisions_distribution(scale: tuple, size: tuple) -> None:
    width, height = size
    image = Image.new("L", size)
    n = 6000
    random.seed(0)
    fast = RandomResizedCrop(24, scale=scale)
    ours = _box_stats([fast.get_params(width, height) for _ in range(n)], width, height)
    torch.manual_seed(0)
    ratio = (3 / 4, 4 / 3)
    theirs = _box_stats(
        [T.RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)],
        width,
        height,
    )
    for name, a, b in zip(("area", "log aspect", "cx", "cy"), ours, theirs, strict=True):
        assert abs(a.mean() - b.mean()) < 0.015, name
        assert abs(a.std() - b.std()) < 0.015, name
        for q in (0.1, 0.5, 0.9):
            assert abs(np.quantile(a, q) - np.quantile(b, q)) < 0.04, (name, q)
    # every box lies inside the image and keeps the allowed aspect range (up to rounding)
    assert ours[0].max() <= 1.0 + 1e-9 and ours[0].min() > 0
    assert np.abs(ours[1]).max() <= math.log(4 / 3) + 0.25


def test_normalised_tensor_equals_to_tensor_then_normalize() -> None:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    old = T.Normalize(mean, std)(T.ToTensor()(rgb))
    new = ToNormalizedTensor(mean, std)(rgb)
    assert new.shape == old.shape == (3, 17, 23) and new.dtype == torch.float32
    assert new.is_contiguous()
    torch.testing.assert_close(new, old, rtol=0, atol=2e-6)
    grey = rgb.convert("L")
    torch.testing.assert_close(
        ToNormalizedTensor(MEAN, STD)(grey),
        T.Normalize(MEAN, STD)(T.ToTensor()(grey)),
        rtol=0,
        atol=2e-6,
    )


def test_eval_transform_is_unchanged() -> None:
    old = T.Compose(
        [
            T.Resize(32, interpolation=InterpolationMode.BICUBIC),
            T.CenterCrop(28),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )
    new = build_eval_transform(28, MEAN, STD, in_chans=1)
    for image in _images(20):
        torch.testing.assert_close(new(image), old(image), rtol=0, atol=2e-6)


def _pixel_stats(transform, images: list[Image.Image], repeats: int) -> tuple[float, float]:
    out = torch.stack([transform(im) for _ in range(repeats) for im in images])
    return float(out.mean()), float(out.std())


@pytest.mark.parametrize("stage", ["pretrain", "train"])
def test_augmented_pixels_have_the_old_pipelines_mean_and_std(stage: str) -> None:
    images = _images()
    if stage == "pretrain":
        new = build_pretrain_transform(28, MEAN, STD, in_chans=1)
        crop = T.RandomResizedCrop(28, scale=(0.2, 1.0), interpolation=InterpolationMode.BICUBIC)
        old = T.Compose([crop, T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    else:
        new = build_train_transform(
            28, MEAN, STD, in_chans=1, auto_augment=None, reprob=0.0, crop_scale=(0.35, 1.0)
        )
        crop = T.RandomResizedCrop(28, scale=(0.35, 1.0), interpolation=InterpolationMode.BICUBIC)
        old = T.Compose([crop, T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    random.seed(1)
    torch.manual_seed(1)
    new_mean, new_std = _pixel_stats(new, images, 5)
    torch.manual_seed(1)
    old_mean, old_std = _pixel_stats(old, images, 5)
    assert abs(new_mean - old_mean) < 0.03, (new_mean, old_mean)
    assert abs(new_std - old_std) < 0.03, (new_std, old_std)


def test_fast_crop_is_deterministic_under_the_run_seed() -> None:
    images = _images(10)
    transform = build_pretrain_transform(28, MEAN, STD, in_chans=1)
    random.seed(3)
    torch.manual_seed(3)
    first = torch.stack([transform(im) for im in images])
    random.seed(3)
    torch.manual_seed(3)
    assert torch.equal(first, torch.stack([transform(im) for im in images]))
