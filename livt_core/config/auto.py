"""The ``auto`` recipe: a run's settings derived from a dataset profile by fixed rules.

A profile (``livt_core.data.profile.DatasetProfile.to_dict()``, or the same dict as the job
service stores it) says how many images each split and class has, how large they are, whether
they are grey and their channel statistics. :func:`auto_overrides` turns it into overrides of
the schema's defaults plus one note per choice, with its reason, which the resolved config
carries as ``recipe_notes``. A named preset, when given, replaces the whole recipe; the user's
own settings override either.

The rules (each number's reason is in its note; ``docs/method.md`` lists them):

- **input size**: the median short side of the images, capped at 224 and rounded to the
  model's patch grid (4-px patches up to 64 px, at most 32 px, i.e. 64 tokens: a 64 px input
  would have 256 tokens and cost 4-5× the compute per image; above 64 px, 16-px patches and at
  least 128 px, i.e. 8 patches a side);
- **model**: 4-px patch CPU models (``nano`` under 5,000 training images, else ``micro``) for
  images up to 64 px; ``tiny`` / ``small`` / ``base`` with 16-px patches for larger images, by
  training-set size (under 20,000 / under 200,000 / above);
- **channels, mean, std**: from the data (grey → ``in_chans=1``);
- **batch**: the stage's usual batch, bounded so that an epoch has at least 8 updates
  (a power of two, at least 8, never more than the training set);
- **epochs**: a target number of optimizer updates (MGP 1,500, BFT 6,000 for the CPU models),
  so a small set gets as many updates as a larger one (a 463-image set: 2,800 BFT updates, the
  200-epoch cap) and a 100k set is not trained for hundreds of epochs; at least 5 and at most
  400 (MGP) / 200 (BFT) epochs. On Fashion-MNIST-LT 6,000 BFT updates gain 7 points over 2,000
  (bench/README.md);
- **warmup**: 5 % of the epochs for MGP (the paper's 40 of 800), 10 % for BFT (10 of 100);
- **augmentation by resolution**: up to 64 px, crops keeping 80-100 % of the area (about
  CIFAR's 4-px padded crop; 35-100 % crops cost 5 points on Fashion-MNIST-LT), flip, no
  RandAugment, Mixup / CutMix or random erasing (on a few thousand small images they slow
  fitting down: bench/README.md); up to 160 px, 20-100 % crops, RandAugment magnitude 6, no
  mixing; above, the paper's recipe (8-100 % crops, magnitude 9, random erasing), with
  Mixup / CutMix only from 10,000 training images on;
- **loader processes**: ``data.num_workers`` stays auto, sized at run time to the cores the
  job gets (``livt_core.perf.plan_cpus``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Optimizer updates the two training stages aim at (see the module docstring).
TARGET_UPDATES = {"pretrain": 1500, "finetune": 6000}
MIN_EPOCHS = 5
MAX_EPOCHS = {"pretrain": 400, "finetune": 200}
WARMUP_FRACTION = {"pretrain": 0.05, "finetune": 0.1}
#: The batch each stage uses when the training set is large enough.
USUAL_BATCH = {"pretrain": 64, "finetune": 32}
MIN_STEPS_PER_EPOCH = 8
MAX_AUTO_SIZE = 224
SMALL_IMAGE = 64
#: The largest input of the 4-px patch CPU models (64 tokens); larger small images are resized.
SMALL_MODEL_MAX_SIZE = 32
MID_IMAGE = 160
MIXUP_MIN_IMAGES = 10_000
#: The crop area range of images up to ``SMALL_IMAGE`` px: a light crop, like CIFAR's 4-px
#: padded crop (bench/README.md: 35-100 % crops cost 5 points on Fashion-MNIST-LT).
SMALL_CROP_SCALE = (0.8, 1.0)

#: The profile keys the recipe reads.
REQUIRED_KEYS = ("splits", "sizes", "colour", "mean", "std")


def _floor_pow2(n: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(n, 1)))))


def _grid(side: int, patch: int) -> int:
    return max(patch * 2, int(round(side / patch)) * patch)


def train_count(profile: Mapping[str, Any]) -> int:
    """Images of the training split."""
    return int(sum(profile.get("splits", {}).get("train", {}).values()))


def choose_geometry(profile: Mapping[str, Any]) -> tuple[int, int, str, list[str]]:
    """``(img_size, patch_size, size_name, notes)`` from the image sizes and the train count."""
    side = int(profile["sizes"].get("median_side") or MAX_AUTO_SIZE)
    n = train_count(profile)
    notes = []
    if side <= SMALL_IMAGE:
        patch = 4
        img_size = min(SMALL_MODEL_MAX_SIZE, _grid(side, patch))
        name = "nano" if n < 5000 else "micro"
        why = (
            f"resized to {img_size} px: the 4-px patch models take at most "
            f"{(SMALL_MODEL_MAX_SIZE // patch) ** 2} tokens, so that a run stays within minutes "
            f"on a CPU ({(_grid(side, patch) // patch) ** 2} tokens would cost "
            f"{(_grid(side, patch) / img_size) ** 2:.1f}× or more per image)"
            if img_size < _grid(side, patch)
            else f"on the 4-px patch grid ({(img_size // patch) ** 2} tokens)"
        )
        notes.append(f"data.img_size={img_size}: the images' median short side is {side} px, {why}")
        notes.append(
            f"model {name}_patch4: images up to {SMALL_IMAGE} px take the 4-px patch CPU "
            f"models; {n} training images {'< 5,000 → nano' if n < 5000 else '≥ 5,000 → micro'}"
        )
    else:
        patch = 16
        img_size = min(MAX_AUTO_SIZE, _grid(max(side, 8 * patch), patch))
        why = (
            f"capped at {MAX_AUTO_SIZE} px"
            if side > MAX_AUTO_SIZE
            else "raised to 8 patches a side"
            if side < 8 * patch
            else "on the 16-px patch grid"
        )
        notes.append(f"data.img_size={img_size}: the images' median short side is {side} px, {why}")
        name = "tiny" if n < 20_000 else "small" if n < 200_000 else "base"
        notes.append(
            f"model {name}_patch16: images above {SMALL_IMAGE} px take 16-px patches; "
            f"{n} training images → {name} (tiny < 20k ≤ small < 200k ≤ base)"
        )
    return img_size, patch, name, notes


def choose_batch(kind: str, n_train: int) -> tuple[int, str]:
    usual = USUAL_BATCH[kind]
    bound = _floor_pow2(n_train / MIN_STEPS_PER_EPOCH)
    batch = max(8, min(usual, bound))
    if batch > n_train:
        batch = max(2, n_train - n_train % 2)
    reason = (
        f"batch_size={batch}: the usual {usual}"
        if batch == usual
        else f"batch_size={batch}: {usual} bounded so that {n_train} training images give at "
        f"least {MIN_STEPS_PER_EPOCH} updates an epoch"
    )
    return batch, reason


def choose_epochs(kind: str, n_train: int, batch: int) -> tuple[int, float, list[str]]:
    steps = max(1, n_train // batch)
    target = TARGET_UPDATES[kind]
    epochs = min(MAX_EPOCHS[kind], max(MIN_EPOCHS, math.ceil(target / steps)))
    warmup = round(max(epochs * WARMUP_FRACTION[kind], min(1.0, epochs * 0.2)), 2)
    notes = [
        f"epochs={epochs}: about {target} optimizer updates at {steps} per epoch "
        f"(bounded to {MIN_EPOCHS}-{MAX_EPOCHS[kind]} epochs)",
        f"warmup_epochs={warmup:g}: {WARMUP_FRACTION[kind]:.0%} of the epochs",
    ]
    return epochs, warmup, notes


def augmentation(img_size: int, n_train: int) -> tuple[dict[str, Any], str]:
    """BFT augmentation by resolution (and, for Mixup / CutMix, by training-set size)."""
    if img_size <= SMALL_IMAGE:
        return (
            {
                "crop_scale": list(SMALL_CROP_SCALE),
                "auto_augment": None,
                "mixup": 0.0,
                "cutmix": 0.0,
                "reprob": 0.0,
            },
            f"augmentation for {img_size} px: crops keep {100 * SMALL_CROP_SCALE[0]:.0f}-"
            f"{100 * SMALL_CROP_SCALE[1]:.0f} % of the area (about CIFAR's 4-px padded crop), flip; no "
            "RandAugment, Mixup/CutMix or random erasing (they remove too much of a small image)",
        )
    if img_size <= MID_IMAGE:
        return (
            {
                "crop_scale": [0.2, 1.0],
                "auto_augment": "rand-m6-mstd0.5-inc1",
                "mixup": 0.0,
                "cutmix": 0.0,
                "reprob": 0.1,
            },
            f"augmentation for {img_size} px: crops keep 20-100 %, RandAugment magnitude 6, "
            "random erasing 0.1, no Mixup/CutMix",
        )
    mixing = n_train >= MIXUP_MIN_IMAGES
    values: dict[str, Any] = {
        "crop_scale": [0.08, 1.0],
        "auto_augment": "rand-m9-mstd0.5-inc1",
        "reprob": 0.25,
        "mixup": 0.8 if mixing else 0.0,
        "cutmix": 1.0 if mixing else 0.0,
    }
    mix = (
        "Mixup 0.8 / CutMix 1.0"
        if mixing
        else f"no Mixup/CutMix (fewer than {MIXUP_MIN_IMAGES:,} training images)"
    )
    return values, (
        f"augmentation for {img_size} px: the paper's 8-100 % crops, RandAugment magnitude 9, "
        f"random erasing 0.25, {mix}"
    )


def _rounded(values: Any) -> list[float]:
    return [round(float(v), 4) for v in values]


def auto_overrides(kind: str, profile: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Overrides of the schema's defaults for a run of ``kind`` on the profiled data set, and
    the notes that give each choice and its reason."""
    missing = [key for key in REQUIRED_KEYS if key not in profile]
    if missing or train_count(profile) == 0:
        raise ValueError(f"the profile lacks {missing or 'training images'}")
    n = train_count(profile)
    img_size, patch, size, notes = choose_geometry(profile)
    grey = profile["colour"] == "grey"
    in_chans = 1 if grey else 3
    data: dict[str, Any] = {
        "img_size": img_size,
        "in_chans": in_chans,
        "mean": _rounded(profile["mean"]),
        "std": _rounded(profile["std"]),
    }
    notes.append(
        f"data.in_chans={in_chans}, mean/std from the data: the images are "
        f"{'grey' if grey else 'colour'}"
    )
    small = patch == 4
    values: dict[str, Any] = {"data": data}
    notes.append(
        "data.num_workers auto: loader processes sized at run time to the cores the job gets "
        "(none on one core, else half of them, at most 4), so that they and the training "
        "threads never exceed those cores"
    )
    if kind == "evaluate":
        values["model"] = f"vit_{size}_patch{patch}"
        split = "test" if "test" in profile["splits"] else "val"
        values["split"] = split
        notes.append(
            f"split={split}: "
            + (
                "the held-out test split"
                if split == "test"
                else "there is no test split; val is also the split that picked the best epoch"
            )
        )
        return values, notes
    values["model"] = f"{'mae_' if kind == 'pretrain' else ''}vit_{size}_patch{patch}"
    batch, why = choose_batch(kind, n)
    notes.append(why)
    epochs, warmup, epoch_notes = choose_epochs(kind, n, batch)
    notes += epoch_notes
    values.update(batch_size=batch, epochs=epochs, warmup_epochs=warmup)
    if kind == "pretrain":
        if small:
            values["blr"] = 0.003
            notes.append(
                "blr=0.003: the CPU models' MGP rate (fashion-mnist-lt preset), lr "
                f"{0.003 * batch / 256:.2g} at batch {batch}"
            )
        return values, notes
    if small:
        values["blr"] = 0.008
        notes.append(
            f"blr=0.008: the CPU models' BFT rate (bench/quality.py), lr {0.008 * batch / 256:.2g} "
            f"at batch {batch}"
        )
    augment, why = augmentation(img_size, n)
    values.update(augment)
    notes.append(why)
    return values, notes
