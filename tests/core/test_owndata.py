"""A user's own image folder: its profile, the auto recipe derived from it, the checks against
it at resolve time, the decoded-image cache and persistent loader workers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from livt_core.cli import main
from livt_core.config import ConfigErrors, resolve_config
from livt_core.config.auto import MAX_EPOCHS, TARGET_UPDATES, auto_overrides
from livt_core.data import build_dataset
from livt_core.data.profile import profile_imagefolder
from livt_core.data.transforms import channel_stats
from livt_core.errors import ConfigError
from tests.folders import make_imagefolder


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    """A small user set: 10 classes, 463 training images (120 → 10), 32 px RGB PNG, train/val."""
    return make_imagefolder(tmp_path_factory.mktemp("lt463"))


@pytest.fixture(scope="module")
def small_profile(small_set) -> dict:
    return profile_imagefolder(small_set).to_dict()


def _errors(exc: ConfigErrors) -> dict[str, str]:
    return {e.field: "; ".join(filter(None, (e.message, e.fix))) for e in exc.errors}


def _big_profile(n_per_class: int, side: int, classes: int = 100) -> dict:
    names = [f"c{i}" for i in range(classes)]
    return {
        "splits": {"train": dict.fromkeys(names, n_per_class), "val": dict.fromkeys(names, 10)},
        "sizes": {"median_side": side},
        "colour": "colour",
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.2, 0.2],
    }


# -- the profile ------------------------------------------------------------------------------


def test_profile_counts_sizes_colour_and_statistics(small_set, small_profile):
    p = small_profile
    assert p["images"] == {"train": 463, "val": 100}
    assert sorted(p["splits"]["train"].values(), reverse=True)[0] == 120
    assert min(p["splits"]["train"].values()) == 10
    assert p["sizes"]["median_side"] == 32 and p["sizes"]["uniform"] is True
    assert (p["colour"], p["channels"]) == ("colour", 3)
    assert p["formats"] == {"PNG": 563}
    pixels = np.concatenate(
        [
            np.asarray(Image.open(f), dtype=np.float64).reshape(-1, 3) / 255
            for f in sorted((small_set / "train").rglob("*.png"))
        ]
    )
    assert p["mean"] == pytest.approx(pixels.mean(axis=0), abs=1e-3)
    assert p["std"] == pytest.approx(pixels.std(axis=0), abs=1e-3)
    assert (p["missing_classes"], p["unreadable_count"]) == ({}, 0)
    assert p["imbalance_ratio"] == 12.0


def test_profile_finds_grey_images_missing_classes_and_unreadable_files(tmp_path):
    root = make_imagefolder(tmp_path, n_max=20, imbalance=4, per_class=3, colour=False, size=28)
    for image in (root / "val" / "bag").iterdir():
        image.unlink()
    (root / "val" / "bag").rmdir()
    (root / "train" / "coat" / "0000.png").write_bytes(b"not an image")
    (root / "val" / "stray").mkdir()
    p = profile_imagefolder(root).to_dict()
    assert (p["colour"], p["channels"], len(p["mean"])) == ("grey", 1, 1)
    assert p["missing_classes"] == {"val": ["bag"]}
    assert p["extra_classes"] == {"val": ["stray"]}
    assert p["unreadable"] == ["train/coat/0000.png"] and p["unreadable_count"] == 1
    assert p["sizes"]["median_side"] == 28


# -- the auto recipe --------------------------------------------------------------------------


def test_auto_recipe_for_a_small_32px_colour_set(small_set, small_profile):
    data = {"dataset": "imagefolder", "root": str(small_set)}
    mgp = resolve_config("pretrain", None, {"data": data}, profile=small_profile)
    bft = resolve_config("finetune", None, {"data": data}, profile=small_profile)
    assert (mgp.model, bft.model) == ("mae_vit_nano_patch4", "vit_nano_patch4")
    for config in (mgp, bft):
        assert (config.data.img_size, config.data.in_chans) == (32, 3)
        assert list(config.data.mean) == small_profile["mean"]
        assert config.batch_size <= 463 // 8
        steps = 463 // config.batch_size
        target = TARGET_UPDATES[config.kind]
        assert config.epochs * steps >= target or config.epochs == MAX_EPOCHS[config.kind]
        assert 0 < config.warmup_epochs <= 0.1 * config.epochs
        assert config.recipe_notes[0].startswith("auto recipe")
        assert any(n.startswith("epochs=") for n in config.recipe_notes)
    # what the ImageNet-LT defaults did: 8-100 % crops, RandAugment and Mixup/CutMix on 32 px images
    assert bft.crop_scale[0] >= 0.3 and bft.auto_augment is None
    assert bft.mixup == bft.cutmix == 0.0


def test_auto_recipe_does_not_overtrain_a_large_set():
    values, notes = auto_overrides("pretrain", _big_profile(1000, 224))
    assert values["model"] == "mae_vit_small_patch16" and values["data"]["img_size"] == 224
    assert values["epochs"] == 5  # 100k images: the floor, not 108 epochs
    finetune, _ = auto_overrides("finetune", _big_profile(1000, 224))
    assert finetune["mixup"] > 0 and finetune["crop_scale"] == [0.08, 1.0]
    mid, _ = auto_overrides("finetune", _big_profile(50, 96, classes=10))
    assert mid["data"]["img_size"] == 128 and mid["mixup"] == 0.0
    assert mid["auto_augment"] == "rand-m6-mstd0.5-inc1"


def test_named_preset_wins_over_the_auto_recipe(small_set, small_profile):
    data = {"dataset": "imagefolder", "root": str(small_set)}
    config = resolve_config("pretrain", "fashion-mnist-lt", {"data": data}, profile=small_profile)
    assert (config.epochs, config.batch_size, config.data.img_size) == (40, 64, 28)
    # the preset's grey model gets the data's statistics fitted to one channel
    assert config.data.in_chans == 1
    assert config.data.mean == (round(sum(small_profile["mean"]) / 3, 4),)
    assert resolve_config("pretrain", "fashion-mnist-lt") == resolve_config(
        "pretrain", "fashion-mnist-lt", {}
    )


def test_a_grey_preset_on_a_colour_folder_runs_without_a_profile(small_set):
    # preset fashion-mnist-lt on an RGB folder used to fail at run time with
    # "data.mean: has 3 values for a model with in_chans=1; give 1 or 1 values"
    from livt_core.engine.factories import data_spec

    data = {"dataset": "imagefolder", "root": str(small_set)}
    config = resolve_config("pretrain", "fashion-mnist-lt", {"data": data})
    spec = data_spec(config.data)
    assert spec.in_chans == 1 and len(spec.mean) == len(spec.std) == 1
    channel_stats(spec.mean, spec.std, spec.in_chans)


def test_user_settings_win_over_the_auto_recipe(small_set, small_profile):
    values = {"data": {"dataset": "imagefolder", "root": str(small_set)}, "epochs": 3}
    config = resolve_config("finetune", None, values, profile=small_profile)
    assert config.epochs == 3 and config.warmup_epochs < 3


# -- checks at resolve time -------------------------------------------------------------------


def test_warmup_not_below_epochs_is_refused_with_the_fix():
    with pytest.raises(ConfigErrors) as err:
        resolve_config("pretrain", None, {"epochs": 30, "warmup_epochs": 40})
    message = _errors(err.value)["warmup_epochs"]
    assert "never reach its peak" in message and "set warmup_epochs to about 3" in message


def test_an_inherited_warmup_shrinks_with_the_users_epochs():
    config = resolve_config("pretrain", None, {"epochs": 30})  # the paper's 40 of 800
    assert config.warmup_epochs == 1.5
    assert any("scaled" in n for n in config.recipe_notes)
    unchanged = resolve_config("finetune", "fashion-mnist-lt", {"epochs": 20})
    assert unchanged.warmup_epochs == 7.8 and unchanged.recipe_notes == []


def test_batch_larger_than_the_training_set_is_refused(small_set, small_profile):
    values = {"data": {"dataset": "imagefolder", "root": str(small_set)}, "batch_size": 512}
    with pytest.raises(ConfigErrors) as err:
        resolve_config("finetune", None, values, profile=small_profile)
    assert "set batch_size to at most 463" in _errors(err.value)["batch_size"]


def test_evaluate_split_the_data_lacks_is_refused(small_set, small_profile):
    values = {"data": {"dataset": "imagefolder", "root": str(small_set)}, "split": "test"}
    with pytest.raises(ConfigErrors) as err:
        resolve_config("evaluate", None, values, profile=small_profile)
    assert "no test split" in _errors(err.value)["split"] and "split=val" in str(err.value)
    auto = resolve_config("evaluate", None, {"data": values["data"]}, profile=small_profile)
    assert auto.split == "val"


def test_mean_of_the_wrong_length_reads_naturally():
    with pytest.raises(ConfigErrors) as err:
        data = {"in_chans": 1, "mean": [0.5] * 3, "std": [0.2] * 3}
        resolve_config("pretrain", None, {"data": data})
    assert _errors(err.value)["data.mean"] == "has 3 values for in_chans=1; give 1 value"
    with pytest.raises(ConfigError) as one:
        channel_stats((0.5,) * 3, (0.2,) * 3, in_chans=1)
    assert one.value.fix == "give 1 value" and "1 or 1" not in str(one.value)


def test_profile_problems_are_refused_before_the_run(tmp_path):
    root = make_imagefolder(tmp_path, n_max=20, imbalance=4, per_class=3)
    (root / "train" / "coat" / "0001.png").write_bytes(b"broken")
    profile = profile_imagefolder(root).to_dict()
    values = {"data": {"dataset": "imagefolder", "root": str(root)}}
    with pytest.raises(ConfigErrors) as err:
        resolve_config("pretrain", None, values, profile=profile)
    assert "1 image cannot be read ('train/coat/0001.png')" in _errors(err.value)["data.root"]


def test_print_config_shows_the_recipe_notes(small_set, capsys):
    assert main(["train", "finetune", "--data", str(small_set), "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["model"] == "vit_nano_patch4" and config["data"]["root"] == str(small_set)
    assert any(n.startswith("batch_size=") for n in config["recipe_notes"])


# -- the decoded-image cache ------------------------------------------------------------------


def test_cached_images_equal_the_files_and_the_budget_holds(small_set):
    files = build_dataset("imagefolder", "train", root=small_set)
    cached = build_dataset("imagefolder", "train", root=small_set, cache_bytes=64 << 20)
    assert files.cached is None and cached.cached is not None
    assert cached.cached.shape == (463, 32, 32, 3) and cached.cached.dtype == np.uint8
    for i in (0, 200, 462):
        assert np.array_equal(np.asarray(files.load_image(i)), np.asarray(cached.load_image(i)))
    over = build_dataset("imagefolder", "train", root=small_set, cache_bytes=463 * 32 * 32)
    assert over.cached is None
    assert math.isclose(cached.estimated_bytes(), 463 * 32 * 32 * 3)


# -- zero-config training ---------------------------------------------------------------------


@pytest.mark.slow
def test_zero_config_finetune_on_a_small_set_learns(small_set, tmp_path, capsys):
    # Only the folder and a shorter schedule: everything else is the auto recipe's. The
    # ImageNet-LT defaults scored 16.3 % overall and 0 % few on this set.
    out = tmp_path / "bft"
    argv = ["train", "finetune", "--data", str(small_set), "--output-dir", str(out)]
    argv += ["--set", "epochs=20", "--set", "threads=1", "--no-progress"]
    assert main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "vit_nano_patch4" and config["recipe_notes"]
    assert result["split"] == result["selection_split"] == "val"
    assert result["split_rule"].startswith("no test split: the best epoch was chosen on val")
    assert result["overall"] >= 25.0, result  # chance is 10 %; 20 epochs from scratch: 28 %
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.slow
def test_resumed_run_with_persistent_workers_ends_identical(small_set, tmp_path):
    from livt_core.engine import run
    from tests.core.test_engine import Recorder

    values = {
        "data": {"dataset": "imagefolder", "root": str(small_set), "num_workers": 1},
        "epochs": 2,
        "max_steps_per_epoch": 3,
        "threads": 1,
        "auto_augment": "rand-m9-mstd0.5-inc1",
        "reprob": 0.25,
        "model_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2},
    }
    profile = profile_imagefolder(small_set).to_dict()
    config = resolve_config("finetune", None, values, profile=profile)
    straight = run(config, tmp_path / "straight", resume=None)
    first = run(config, tmp_path / "resumed", callbacks=Recorder(stop_after_epoch=0))
    assert first.status == "cancelled"
    second = run(config, tmp_path / "resumed")
    strip = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in straight.history]
    again = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in second.history]
    assert strip == again
