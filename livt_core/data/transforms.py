"""Image transforms of the two LiVT stages and evaluation, and the Mixup/CutMix factory.

Every transform takes a PIL image and returns a float tensor ``[in_chans, img_size, img_size]``.
Images are first converted to the model's channel count: grey images are replicated to RGB for
``in_chans=3`` models and RGB images reduced to grey for ``in_chans=1``. ``mean`` / ``std`` may
have one value (broadcast to every channel) or ``in_chans`` values.

The crop and the tensor conversion are the fast equivalents timm uses: :class:`RandomResizedCrop`
draws its box with Python's ``random`` (as timm's ``RandomResizedCropAndInterpolation``; the
same distribution as torchvision's, without a dozen small torch ops per image) and resizes the
box in one PIL call; :class:`ToNormalizedTensor` turns the 8-bit image into the normalised float
tensor in one multiply-add (``ToTensor`` + ``Normalize`` to within float rounding).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from timm.data import Mixup
from timm.data.auto_augment import RandAugment, rand_augment_transform
from timm.data.auto_augment import posterize as timm_posterize
from timm.data.random_erasing import RandomErasing
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from livt_core.config.schema import channel_count_fix
from livt_core.errors import ConfigError

EVAL_CROP_PCT = 0.875
RAND_AUGMENT = "rand-m9-mstd0.5-inc1"
_MODES = {1: "L", 3: "RGB"}


class ConvertMode:
    """Convert a PIL image to ``mode`` (``"L"`` or ``"RGB"``) when it is in another mode."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


class RandomResizedCrop:
    """A crop of random area (``scale`` of the image) and aspect ratio (log-uniform in ``ratio``)
    resized to ``size × size`` (bicubic): torchvision's / timm's ``RandomResizedCrop``.

    The box is drawn as torchvision draws it (10 tries, then a centre crop at the nearest allowed
    ratio) but from Python's ``random`` (seeded per loader worker by the run); PIL resizes the
    box directly (``Image.resize(box=...)``) without an intermediate cropped copy."""

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: Image.Resampling = Image.Resampling.BICUBIC,
    ) -> None:
        self.size = (int(size), int(size))
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        self.interpolation = interpolation

    def get_params(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of the box, as torchvision's ``get_params``."""
        area = width * height
        for _ in range(10):
            target_area = area * random.uniform(*self.scale)
            aspect = math.exp(random.uniform(*self.log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return random.randint(0, height - h), random.randint(0, width - w), h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            w, h = int(round(height * self.ratio[1])), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: Image.Image) -> Image.Image:
        top, left, h, w = self.get_params(*image.size)
        return image.resize(self.size, self.interpolation, box=(left, top, left + w, top + h))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class ToNormalizedTensor:
    """8-bit PIL image → float tensor ``[C, H, W]`` normalised by ``mean`` / ``std`` (given on the
    0–1 scale, one value per channel): ``x / 255`` then ``(x - mean) / std`` as one multiply-add."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        std_t = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        mean_t = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = np.array(image, dtype=np.uint8, copy=True)
        if array.ndim == 2:
            array = array[:, :, None]
        x = torch.from_numpy(array).permute(2, 0, 1).to(torch.float32).contiguous()
        return x.mul_(self.scale).add_(self.shift)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


def _mode(in_chans: int) -> str:
    if in_chans not in _MODES:
        raise ConfigError("data.in_chans", f"must be 1 or 3, got {in_chans}")
    return _MODES[in_chans]


def channel_stats(
    mean: Sequence[float], std: Sequence[float], in_chans: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mean`` / ``std`` with exactly ``in_chans`` values (a single value is broadcast)."""
    out = []
    for field, values in (("data.mean", mean), ("data.std", std)):
        values = tuple(float(v) for v in values)
        if len(values) == 1:
            values = values * in_chans
        if len(values) != in_chans:
            raise ConfigError(
                field,
                f"has {len(values)} values for a model with in_chans={in_chans}",
                channel_count_fix(in_chans),
            )
        out.append(values)
    if any(s <= 0 for s in out[1]):
        raise ConfigError("data.std", "every value must be positive")
    return out[0], out[1]


def _check_size(img_size: int) -> None:
    if img_size < 1:
        raise ConfigError("data.img_size", f"must be positive, got {img_size}")


def build_pretrain_transform(
    img_size: int, mean: Sequence[float], std: Sequence[float], in_chans: int = 3
) -> T.Compose:
    """MGP (masked pretraining) augmentation: random resized crop (scale 0.2–1, bicubic) and a
    horizontal flip, nothing else."""
    _check_size(img_size)
    mean, std = channel_stats(mean, std, in_chans)
    return T.Compose(
        [
            ConvertMode(_mode(in_chans)),
            RandomResizedCrop(img_size, scale=(0.2, 1.0)),
            T.RandomHorizontalFlip(),
            ToNormalizedTensor(mean, std),
        ]
    )


def build_train_transform(
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_chans: int = 3,
    auto_augment: str | None = RAND_AUGMENT,
    reprob: float = 0.25,
    remode: str = "pixel",
    hflip: float = 0.5,
    crop_scale: Sequence[float] = (0.08, 1.0),
) -> T.Compose:
    """BFT (fine-tuning) augmentation in timm's order: random resized crop (area ``crop_scale``,
    0.08–1 by default, bicubic), horizontal flip, RandAugment (``auto_augment``, a timm ``rand-…`` string, or
    ``None``), tensor, normalise, random erasing (probability ``reprob``, mode ``remode``)."""
    _check_size(img_size)
    mean, std = channel_stats(mean, std, in_chans)
    if not 0.0 <= reprob <= 1.0:
        raise ConfigError("reprob", f"must lie in [0, 1], got {reprob}")
    if not 0.0 <= hflip <= 1.0:
        raise ConfigError("hflip", f"must lie in [0, 1], got {hflip}")
    if remode not in ("const", "rand", "pixel"):
        raise ConfigError("remode", f"unknown mode {remode!r}", "use 'pixel', 'rand' or 'const'")
    low, high = crop_scale
    if not 0.0 < low <= high <= 1.0:
        raise ConfigError(
            "crop_scale", f"must be (low, high) with 0 < low ≤ high ≤ 1, got {tuple(crop_scale)}"
        )
    steps: list = [
        ConvertMode(_mode(in_chans)),
        RandomResizedCrop(img_size, scale=(low, high)),
    ]
    if hflip > 0:
        steps.append(T.RandomHorizontalFlip(hflip))
    if auto_augment:
        steps.append(_rand_augment(auto_augment, img_size, mean))
    steps.append(ToNormalizedTensor(mean, std))
    if reprob > 0:
        steps.append(RandomErasing(reprob, mode=remode, max_count=1, num_splits=0, device="cpu"))
    return T.Compose(steps)


def _rand_augment(config: str, img_size: int, mean: tuple[float, ...]) -> RandAugment:
    if not config.startswith("rand"):
        raise ConfigError(
            "auto_augment",
            f"unsupported policy {config!r}",
            f"use a RandAugment string ({RAND_AUGMENT})",
        )
    # The fill colour of rotations / shears / translations has one value per channel, so that it
    # suits grey images as well as RGB ones.
    hparams = {
        "translate_const": int(img_size * 0.45),
        "img_mean": tuple(min(255, round(255 * m)) for m in mean),
        "interpolation": Image.BICUBIC,
    }
    try:
        augment = rand_augment_transform(config, hparams)
    except (AssertionError, ValueError, KeyError) as exc:
        raise ConfigError(
            "auto_augment", f"invalid RandAugment string {config!r}", f"e.g. {RAND_AUGMENT}"
        ) from exc
    for op in augment.ops:
        if op.aug_fn is timm_posterize:
            op.aug_fn = posterize
    return augment


def posterize(image: Image.Image, bits_to_keep: int, **_: object) -> Image.Image:
    """Keep the ``bits_to_keep`` most significant bits of every pixel; 0 bits gives black.

    RandAugment asks for 0 bits at the top of its magnitude range (``PosterizeIncreasing`` at
    magnitude 10, reached through the magnitude noise of ``mstd``); Pillow 13 rejects that with a
    ValueError where older releases returned a black image, and timm passes it through.
    """
    if bits_to_keep >= 8:
        return image
    if bits_to_keep <= 0:
        return Image.new(image.mode, image.size)
    return ImageOps.posterize(image, bits_to_keep)


def build_eval_transform(
    img_size: int, mean: Sequence[float], std: Sequence[float], in_chans: int = 3
) -> T.Compose:
    """Evaluation: resize the short side to ``int(img_size / 0.875)`` (``img_size`` ≤ 224; else
    crop_pct 1.0, i.e. to ``img_size``), bicubic, then a centre crop of ``img_size``."""
    _check_size(img_size)
    mean, std = channel_stats(mean, std, in_chans)
    crop_pct = EVAL_CROP_PCT if img_size <= 224 else 1.0
    return T.Compose(
        [
            ConvertMode(_mode(in_chans)),
            T.Resize(int(img_size / crop_pct), interpolation=InterpolationMode.BICUBIC),
            T.CenterCrop(img_size),
            ToNormalizedTensor(mean, std),
        ]
    )


def build_mixup(
    mixup_alpha: float,
    cutmix_alpha: float,
    prob: float,
    switch_prob: float,
    label_smoothing: float,
    num_classes: int,
) -> Mixup | None:
    """timm's batch-mode Mixup/CutMix, or ``None`` when both alphas are 0.

    Called as ``images, targets = mixup(images, labels)`` with ``images: [B, C, H, W]`` and
    ``labels: [B]`` (int64) it returns the mixed images and soft targets ``[B, num_classes]``
    whose rows sum to 1 (label smoothing included). ``B`` must be even (timm pairs each image
    with its mirror in the batch), so training loaders drop the last incomplete batch.
    """
    for field, value in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)):
        if value < 0:
            raise ConfigError(field, f"alpha must be ≥ 0, got {value}", "0 switches it off")
    for field, value in (
        ("mixup_prob", prob),
        ("mixup_switch_prob", switch_prob),
        ("smoothing", label_smoothing),
    ):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(field, f"must lie in [0, 1], got {value}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return None
    return Mixup(
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
        prob=prob,
        switch_prob=switch_prob,
        mode="batch",
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )
