"""Datasets, long-tailed selection, the bundled Fashion-MNIST-LT subset and the transforms."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from livt_core.data import (
    build_dataset,
    build_eval_transform,
    build_mixup,
    build_pretrain_transform,
    build_train_transform,
    dataset_info,
    list_datasets,
    longtail_counts,
    normalization,
    select_longtail,
    split_longtail_holdout,
)
from livt_core.data.fashion import BUNDLED_ROOT, CLASSES, read_idx
from livt_core.data.transforms import posterize
from livt_core.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
SHARED_FASHION = REPO.parent / "shared" / "data" / "fashion-mnist"
FASHION_LT = [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]


def _row_hashes(dataset) -> set[str]:
    return {hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest() for img in dataset.images}


# --- long-tail counts and selection ----------------------------------------------------------


@pytest.mark.parametrize(
    ("num_classes", "n_max", "gamma", "profile", "total"),
    [
        (10, 5000, 100, "exp", 12_406),
        (10, 5000, 10, "exp", 20_431),
        (100, 500, 100, "exp", 10_847),
        (100, 500, 10, "exp", 19_573),
        (10, 5000, 100, "step", 25_250),
        (10, 5000, 10, "step", 27_500),
        (100, 500, 100, "step", 25_250),
        (100, 500, 10, "step", 27_500),
    ],
)
def test_cifar_longtail_totals(num_classes, n_max, gamma, profile, total):
    counts = longtail_counts(n_max, num_classes, gamma, profile)
    assert sum(counts) == total
    assert counts[0] == n_max and counts[-1] == n_max // gamma
    assert counts == sorted(counts, reverse=True)
    balanced = np.repeat(np.arange(num_classes), n_max)
    chosen = select_longtail(balanced.tolist(), counts, seed=0)
    assert len(chosen) == total == len(set(chosen))
    assert np.bincount(balanced[chosen], minlength=num_classes).tolist() == counts


def test_fashion_longtail_counts():
    assert longtail_counts(1000, 10, 100.0, "exp") == FASHION_LT


def test_step_profile_odd_class_count_puts_the_middle_class_in_the_head():
    assert longtail_counts(100, 5, 10.0, "step") == [100, 100, 100, 10, 10]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"profile": "linear"}, "data.profile"),
        ({"imbalance_factor": 0.5}, "data.imbalance_factor"),
        ({"n_max": 0}, "data.n_max"),
        ({"n_max": 50}, "data.n_max"),  # γ = 100 leaves the tail class with no image
    ],
)
def test_longtail_counts_rejects_bad_settings(kwargs, field):
    args = {"n_max": 1000, "num_classes": 10, "imbalance_factor": 100.0, "profile": "exp"}
    with pytest.raises(ConfigError) as info:
        longtail_counts(**{**args, **kwargs})
    assert info.value.field == field


def test_select_longtail_is_seeded():
    targets = np.repeat(np.arange(4), 50).tolist()
    counts = [50, 20, 8, 3]
    first = select_longtail(targets, counts, seed=0)
    assert first == select_longtail(targets, counts, seed=0)
    assert first != select_longtail(targets, counts, seed=1)


def test_holdout_is_disjoint_balanced_and_leaves_train_unchanged():
    targets = np.repeat(np.arange(4), 60)
    counts = [50, 20, 8, 3]
    train, val = split_longtail_holdout(targets.tolist(), counts, 10, seed=3)
    assert train == select_longtail(targets.tolist(), counts, seed=3)
    assert not set(train) & set(val)
    assert np.bincount(targets[val]).tolist() == [10, 10, 10, 10]


def test_holdout_names_the_class_that_runs_short():
    targets = np.repeat(np.arange(3), 20).tolist()
    with pytest.raises(DataError, match=r"class 0 \('a'\) has 20 images .* needs 25"):
        split_longtail_holdout(targets, [20, 10, 5], 5, class_names=["a", "b", "c"])


# --- CIFAR ---------------------------------------------------------------------------------------


def _write_pickle(path: Path, obj: dict, protocol: int) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _cifar_batch(rng, per_class: int, num_classes: int, label_key: bytes) -> dict:
    labels = np.repeat(np.arange(num_classes), per_class)
    rng.shuffle(labels)
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    return {b"data": data, label_key: labels.tolist(), b"batch_label": b"synthetic"}


@pytest.fixture(scope="module")
def cifar10_root(tmp_path_factory) -> Path:
    """A CIFAR-10 layout with 60 training images per class (12 per batch) and 20 test images."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        # The published files are Python 2 pickles (protocol 2); write both kinds.
        protocol = 2 if i % 2 else pickle.HIGHEST_PROTOCOL
        _write_pickle(folder / f"data_batch_{i}", _cifar_batch(rng, 12, 10, b"labels"), protocol)
    _write_pickle(folder / "test_batch", _cifar_batch(rng, 20, 10, b"labels"), 2)
    names = [f"class{i}".encode() for i in range(10)]
    _write_pickle(folder / "batches.meta", {b"label_names": names}, 2)
    return root


CIFAR_SMALL = {"n_max": 40, "imbalance_factor": 10.0, "val_per_class": 10}


def test_cifar10_splits(cifar10_root):
    train = build_dataset("cifar10-lt", "train", root=cifar10_root, **CIFAR_SMALL)
    val = build_dataset("cifar10-lt", "val", root=cifar10_root, **CIFAR_SMALL)
    test = build_dataset("cifar10-lt", "test", root=cifar10_root, **CIFAR_SMALL)
    assert train.class_counts == longtail_counts(40, 10, 10.0, "exp")
    assert val.class_counts == [10] * 10
    assert test.class_counts == [20] * 10
    assert train.classes[3] == "class3" and train.num_classes == 10 and train.in_chans == 3
    assert not _row_hashes(train) & _row_hashes(val)
    assert "exp γ=10 n_max=40 seed=0" in train.source


def test_cifar_images_are_rgb_in_pixel_order(cifar10_root):
    with (cifar10_root / "cifar-10-batches-py" / "test_batch").open("rb") as f:
        batch = pickle.load(f, encoding="bytes")
    test = build_dataset("cifar10-lt", "test", root=cifar10_root / "cifar-10-batches-py")
    image, label = test[5]
    assert image.mode == "RGB" and image.size == (32, 32) and label == batch[b"labels"][5]
    pixels = np.asarray(image)
    row = batch[b"data"][5]
    assert pixels[0, 1].tolist() == [row[1], row[1024 + 1], row[2048 + 1]]


def test_cifar_selection_depends_on_seed(cifar10_root):
    a = build_dataset("cifar10-lt", "train", root=cifar10_root, **CIFAR_SMALL)
    b = build_dataset("cifar10-lt", "train", root=cifar10_root, **CIFAR_SMALL)
    c = build_dataset("cifar10-lt", "train", root=cifar10_root, lt_seed=1, **CIFAR_SMALL)
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert a.class_counts == c.class_counts


def test_cifar_val_without_room_names_class_and_need(cifar10_root):
    # n_max defaults to the 5,000 images of a real CIFAR-10 class: this pool has 60.
    with pytest.raises(DataError, match=r"class 0 \('class0'\) has 60 images .* needs 5000"):
        build_dataset("cifar10-lt", "train", root=cifar10_root)
    with pytest.raises(DataError, match=r"needs 75 \(40 for the long-tailed .* \+ 35 held out"):
        build_dataset(
            "cifar10-lt", "val", root=cifar10_root, **{**CIFAR_SMALL, "val_per_class": 35}
        )


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    _write_pickle(folder / "train", _cifar_batch(rng, 6, 100, b"fine_labels"), 2)
    _write_pickle(folder / "test", _cifar_batch(rng, 2, 100, b"fine_labels"), 2)
    names = [f"c{i}".encode() for i in range(100)]
    _write_pickle(folder / "meta", {b"fine_label_names": names}, 2)
    small = {"n_max": 5, "imbalance_factor": 5.0, "val_per_class": 1}
    train = build_dataset("cifar100-lt", "train", root=tmp_path, **small)
    assert train.class_counts == longtail_counts(5, 100, 5.0, "exp")
    val = build_dataset("cifar100-lt", "val", root=tmp_path, **small)
    assert val.class_counts == [1] * 100  # 6 per class − 5 for the head class
    assert len(build_dataset("cifar100-lt", "test", root=tmp_path)) == 200


def test_cifar_pickle_that_would_run_code_is_refused(cifar10_root, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(cifar10_root / "cifar-10-batches-py", folder)
    _write_pickle(folder / "test_batch", {b"data": os.system}, 2)
    with pytest.raises(DataError, match="refusing to load"):
        build_dataset("cifar10-lt", "test", root=tmp_path)


def test_cifar_missing_folder(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        build_dataset("cifar10-lt", "train", root=tmp_path)


# --- imagefolder and splitfile ---------------------------------------------------------------


def _png(path: Path, value: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    size = (12, 10)
    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(path)


@pytest.fixture()
def folder_root(tmp_path) -> Path:
    for split, counts in (("train", {"dog": 4, "ant": 3, "cat": 1}), ("val", {"ant": 2, "dog": 2})):
        for name, n in counts.items():
            for i in range(n):
                _png(tmp_path / split / name / f"{i}.png", 10 * i, mode="L" if i % 2 else "RGB")
    return tmp_path


def test_imagefolder(folder_root):
    train = build_dataset("imagefolder", "train", root=str(folder_root))
    assert train.classes == ["ant", "cat", "dog"]
    assert train.class_counts == [3, 1, 4]
    val = build_dataset("imagefolder", "val", root=folder_root)
    assert val.class_counts == [2, 0, 2]
    image, label = val[0]
    assert image.mode == "RGB" and image.size == (12, 10) and label == 0
    assert not dataset_info("imagefolder", root=folder_root).has_test


def test_imagefolder_missing_test_split(folder_root):
    with pytest.raises(DataError, match=r"test not found; imagefolder expects"):
        build_dataset("imagefolder", "test", root=folder_root)
    _png(folder_root / "test" / "cat" / "0.png", 1)
    assert dataset_info("imagefolder", root=folder_root).has_test
    assert build_dataset("imagefolder", "test", root=folder_root).class_counts == [0, 1, 0]


def test_imagefolder_unknown_class_in_val(folder_root):
    _png(folder_root / "val" / "emu" / "0.png", 1)
    with pytest.raises(DataError, match="missing from .*: emu"):
        build_dataset("imagefolder", "val", root=folder_root)


def test_imagefolder_unreadable_image(folder_root):
    (folder_root / "train" / "cat" / "0.png").write_bytes(b"not a png")
    dataset = build_dataset("imagefolder", "train", root=folder_root)
    with pytest.raises(DataError, match="cannot read image"):
        dataset[dataset.targets.index(1)]


def _outside_class(tmp_path: Path) -> Path:
    """A class folder of images outside the dataset's data root."""
    outside = tmp_path / "outside" / "secret-class"
    _png(outside / "0.png", 7)
    return outside


def test_imagefolder_refuses_class_folder_linked_outside_the_roots(tmp_path, folder_root):
    root = folder_root / "ds"
    shutil.copytree(folder_root / "train", root / "train")
    shutil.copytree(folder_root / "val", root / "val")
    outside = _outside_class(tmp_path.parent / f"{tmp_path.name}-x")
    (root / "train" / "emu").symlink_to(outside, target_is_directory=True)
    # a local run (no roots to keep to) reads it; the service's roots refuse the dataset
    assert "emu" in build_dataset("imagefolder", "train", root=root).classes
    with pytest.raises(DataError, match="train/emu is a link that leads outside") as info:
        build_dataset("imagefolder", "train", root=root, allowed_roots=[folder_root])
    assert str(outside) not in str(info.value) and "secret" not in str(info.value)


def test_imagefolder_refuses_image_linked_outside_the_roots(tmp_path, folder_root):
    outside = _outside_class(tmp_path.parent / f"{tmp_path.name}-y")
    (folder_root / "train" / "cat" / "9.png").symlink_to(outside / "0.png")
    with pytest.raises(DataError, match="train/cat/9.png is a link that leads outside"):
        build_dataset("imagefolder", "train", root=folder_root, allowed_roots=[folder_root])
    # a link that stays inside the roots is honoured
    (folder_root / "train" / "cat" / "9.png").unlink()
    (folder_root / "train" / "cat" / "9.png").symlink_to(folder_root / "train" / "dog" / "0.png")
    train = build_dataset("imagefolder", "train", root=folder_root, allowed_roots=[folder_root])
    assert train.class_counts == [3, 2, 4]


def test_splitfile_refuses_split_file_or_entry_linked_outside_the_roots(tmp_path):
    root = _split_root(tmp_path / "root", ["img/0.png 0", "img/1.png 1"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "list.txt").write_text("img/0.png 0\n")
    (root / "linked.txt").symlink_to(outside / "list.txt")
    with pytest.raises(DataError, match="split file is a link that leads outside"):
        build_dataset(
            "splitfile", "train", root=root, split_file="linked.txt", allowed_roots=[root]
        )
    _png(outside / "x.png", 3)
    (root / "img" / "x.png").symlink_to(outside / "x.png")
    (root / "train.txt").write_text("img/0.png 0\nimg/x.png 1\n")
    with pytest.raises(DataError, match="entry 2 of split file train.txt is a link"):
        build_dataset("splitfile", "train", root=root, allowed_roots=[root])


def _split_root(tmp_path: Path, lines: list[str], name: str = "train.txt") -> Path:
    for i in range(4):
        _png(tmp_path / "img" / f"{i}.png", i)
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    return tmp_path


def test_splitfile(tmp_path):
    lines = ["img/0.png 2", "", "img/1.png 0", "img/2.png 2"]
    root = _split_root(tmp_path, lines, "ImageNet_LT_train.txt")
    train = build_dataset("splitfile", "train", root=root, split_file="ImageNet_LT_train.txt")
    assert train.classes == ["0", "1", "2"] and train.class_counts == [1, 0, 2]
    assert train.targets == [2, 0, 2]
    assert train[1][0].mode == "RGB"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("img/3.png", "expected 'relative/path label'"),
        ("img/3.png cat", "the label is not an integer; expected 'relative/path label'"),
        ("img/3.png -1", "the label is negative"),
        ("../outside.png 1", "the image path must be relative to the dataset root"),
    ],
)
def test_splitfile_bad_line_names_file_and_line(tmp_path, bad, message):
    root = _split_root(tmp_path, ["img/0.png 0", "img/1.png 1", bad])
    with pytest.raises(DataError, match=rf"split file train\.txt, line 3: {message}") as info:
        build_dataset("splitfile", "train", root=root)
    # the error gives the line number and the expected format, never the file's text
    assert bad not in str(info.value) and bad.split()[-1] not in str(info.value).split()


def test_splitfile_parse_error_never_quotes_the_file(tmp_path):
    root = _split_root(tmp_path, ["img/0.png 0"])
    (root / "secret.txt").write_text("LIVT_BOOTSTRAP_TOKEN=s3cr3t-value\nDB=postgres://u:pw@h\n")
    with pytest.raises(DataError) as info:
        build_dataset("splitfile", "train", root=root, split_file="secret.txt")
    text = str(info.value)
    assert "line 1" in text and "expected 'relative/path label'" in text
    assert "s3cr3t" not in text and "LIVT_BOOTSTRAP_TOKEN" not in text and "pw@h" not in text


def test_splitfile_missing_image_or_file(tmp_path):
    root = _split_root(tmp_path, ["img/0.png 0", "img/9.png 1"])
    with pytest.raises(DataError, match=r"1 images listed in split file train\.txt do not exist"):
        build_dataset("splitfile", "train", root=root)
    with pytest.raises(DataError, match=r"val\.txt not found"):
        build_dataset("splitfile", "val", root=root)


def test_build_dataset_argument_errors(tmp_path):
    with pytest.raises(ConfigError) as info:
        build_dataset("imagenet", "train", root=tmp_path)
    assert info.value.field == "data.dataset" and "fashion-mnist-lt" in str(info.value)
    with pytest.raises(ConfigError, match="unknown split 'valid'"):
        build_dataset("imagefolder", "valid", root=tmp_path)
    with pytest.raises(ConfigError, match="needs a root folder"):
        build_dataset("imagefolder", "train", root=None)
    with pytest.raises(DataError, match="does not exist"):
        build_dataset("imagefolder", "train", root=tmp_path / "nowhere")


def test_registry_and_info():
    assert list_datasets() == [
        "cifar10-lt",
        "cifar100-lt",
        "fashion-mnist-lt",
        "imagefolder",
        "splitfile",
    ]
    info = dataset_info("fashion-mnist-lt")
    assert (info.num_classes, info.in_chans, info.has_test) == (10, 1, True)
    assert (info.mean, info.std) == normalization("fashion-mnist-lt")
    assert dataset_info("cifar100-lt").mean == (0.4914, 0.4822, 0.4465)
    assert normalization("imagenet-lt")[0] == (0.479672, 0.457713, 0.407721)
    assert normalization("places-lt") == normalization("anything-else")


# --- Fashion-MNIST-LT ------------------------------------------------------------------------


def test_bundled_fashion_splits():
    train = build_dataset("fashion-mnist-lt", "train", root=None)
    val = build_dataset("fashion-mnist-lt", "val", root=None)
    test = build_dataset("fashion-mnist-lt", "test", root=None)
    assert train.class_counts == FASHION_LT
    assert train.classes == list(CLASSES) and train.classes[0] == "T-shirt/top"
    assert (val.class_counts, test.class_counts) == ([50] * 10, [100] * 10)
    assert not _row_hashes(train) & _row_hashes(val)
    image, label = train[0]
    assert image.mode == "L" and image.size == (28, 28) and 0 <= label < 10
    assert "bundled subset" in train.source and "n_max=1000" in train.source


def test_bundled_fashion_pool_is_exact():
    with pytest.raises(DataError, match=r"class 0 \('T-shirt/top'\) has 1050 images .* needs 1051"):
        build_dataset("fashion-mnist-lt", "val", root=None, val_per_class=51)


def test_bundled_asset_is_small_and_licensed():
    files = {p.name: p.stat().st_size for p in BUNDLED_ROOT.iterdir()}
    assert {"LICENSE", "README.md", "train-images-idx3-ubyte.gz"} <= files.keys()
    assert sum(files.values()) < 2.5e6
    assert "Zalando SE" in (BUNDLED_ROOT / "LICENSE").read_text()


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda raw: b"\x00\x00\x08\x01" + raw[4:], "not an IDX file of 3-d unsigned bytes"),
        (lambda raw: raw[:-100], "header says"),
        (None, "cannot read IDX file"),
    ],
)
def test_corrupt_idx_is_a_data_error(tmp_path, corrupt, message):
    shutil.copytree(BUNDLED_ROOT, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    if corrupt is None:
        path.write_bytes(path.read_bytes()[:1000])  # truncated gzip stream
    else:
        path.write_bytes(gzip.compress(corrupt(gzip.decompress(path.read_bytes()))))
    with pytest.raises(DataError, match=message):
        build_dataset("fashion-mnist-lt", "test", root=tmp_path)


def test_read_idx_uncompressed(tmp_path):
    raw = gzip.decompress((BUNDLED_ROOT / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "labels").write_bytes(raw)
    assert np.bincount(read_idx(tmp_path / "labels", 1)).tolist() == [100] * 10


@pytest.mark.skipif(not SHARED_FASHION.is_dir(), reason="needs the Fashion-MNIST originals")
def test_demo_subset_script_reproduces_the_bundle(tmp_path):
    spec = importlib.util.spec_from_file_location("make_demo", REPO / "scripts/make_demo_subset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--source", str(SHARED_FASHION), "--out", str(tmp_path)])
    for path in tmp_path.iterdir():
        assert path.read_bytes() == (BUNDLED_ROOT / path.name).read_bytes(), path.name


# --- transforms ------------------------------------------------------------------------------

GREY = Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8))
RGB = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8))
BUILDERS = [build_pretrain_transform, build_train_transform, build_eval_transform]


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("image", [GREY, RGB], ids=["grey", "rgb"])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_transform_shapes(builder, image, in_chans):
    transform = builder(32, (0.5,), (0.25,), in_chans)
    out = transform(image)
    assert out.shape == (in_chans, 32, 32) and out.dtype == torch.float32


def test_grey_to_rgb_replicates_the_channel():
    out = build_eval_transform(28, (0.2860,), (0.3530,), in_chans=3)(GREY)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


@pytest.mark.parametrize(("img_size", "resize"), [(28, 32), (64, 73), (224, 256), (384, 384)])
def test_eval_resize_rule(img_size, resize):
    transform = build_eval_transform(img_size, (0.5,) * 3, (0.5,) * 3, 3)
    assert transform.transforms[1].size == resize
    assert transform(RGB).shape == (3, img_size, img_size)


@pytest.mark.parametrize(("image", "in_chans"), [(GREY, 1), (RGB, 3), (GREY, 3)])
def test_rand_augment_runs_every_op(image, in_chans):
    # 15 ops per image, always applied: every geometric op fills with a colour of in_chans values.
    transform = build_train_transform(
        24, (0.5,), (0.5,), in_chans, auto_augment="rand-m9-mstd0.5-inc1-n15-p1.0", reprob=1.0
    )
    for _ in range(40):
        out = transform(image)
        assert out.shape == (in_chans, 24, 24) and torch.isfinite(out).all()


def test_posterize_zero_bits_is_black():
    assert posterize(RGB, 0).getextrema() == ((0, 0), (0, 0), (0, 0))
    assert posterize(GREY, 8) is GREY
    ops = build_train_transform(24, (0.5,), (0.5,), 1).transforms[3].ops
    poster = next(op for op in ops if op.name == "PosterizeIncreasing")
    assert poster.aug_fn is posterize


def test_crop_scale_bounds_the_crop_area():
    # A ramp image: the crop's mean brightness tells how much of the ramp a crop kept. With the
    # whole area kept (scale 1–1) the output is the resized image; a small area changes it.
    ramp = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1)))
    full = build_train_transform(
        16, (0.0,), (1.0,), 1, auto_augment=None, reprob=0.0, hflip=0.0, crop_scale=(1.0, 1.0)
    )
    first = full(ramp)
    assert all(torch.equal(first, full(ramp)) for _ in range(5))
    small = build_train_transform(
        16, (0.0,), (1.0,), 1, auto_augment=None, reprob=0.0, hflip=0.0, crop_scale=(0.05, 0.05)
    )
    torch.manual_seed(0)
    spans = [float(out.amax() - out.amin()) for out in (small(ramp) for _ in range(20))]
    assert max(spans) < float(first.amax() - first.amin()) / 2
    with pytest.raises(ConfigError, match="crop_scale"):
        build_train_transform(16, (0.5,), (0.5,), 1, crop_scale=(0.0, 1.0))


def test_transform_argument_errors():
    with pytest.raises(ConfigError) as info:
        build_eval_transform(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), in_chans=1)
    assert info.value.field == "data.mean"
    with pytest.raises(ConfigError, match="auto_augment"):
        build_train_transform(32, (0.5,), (0.5,), 3, auto_augment="v0")
    with pytest.raises(ConfigError, match="data.in_chans"):
        build_pretrain_transform(32, (0.5,), (0.5,), 4)


def test_mixup_soft_targets_sum_to_one():
    np.random.seed(0)  # timm draws λ and the mixup/cutmix switch from numpy's global generator
    mixup = build_mixup(0.8, 1.0, 1.0, 0.5, 0.1, num_classes=10)
    x = torch.randn(8, 3, 16, 16)
    labels = torch.arange(8)
    mixed, targets = mixup(x, labels)
    assert mixed.shape == x.shape and targets.shape == (8, 10)
    assert torch.allclose(targets.sum(1), torch.ones(8))
    # Each row mixes its label with the mirrored image's (smoothing alone gives 0.01 elsewhere).
    assert ((targets > 0.01 + 1e-4).sum(1) == 2).all()


def test_mixup_off_and_invalid():
    assert build_mixup(0.0, 0.0, 1.0, 0.5, 0.1, num_classes=10) is None
    with pytest.raises(ConfigError, match="cutmix"):
        build_mixup(0.8, -1.0, 1.0, 0.5, 0.1, num_classes=10)
    with pytest.raises(ConfigError, match="mixup_prob"):
        build_mixup(0.8, 1.0, 1.5, 0.5, 0.1, num_classes=10)
