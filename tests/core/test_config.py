"""Run configs: defaults, presets, overrides and errors that name the field and the fix."""

from __future__ import annotations

import json

import pytest

from livt_core.config import (
    PRESETS,
    ConfigErrors,
    FinetuneConfig,
    PretrainConfig,
    config_from_dict,
    load_config_file,
    parse_overrides,
    resolve_config,
)


def _fields(exc: ConfigErrors) -> dict[str, str]:
    return {e.field: str(e) for e in exc.errors}


def test_defaults_are_the_papers():
    pre = PretrainConfig()
    assert (pre.epochs, pre.warmup_epochs, pre.blr, pre.betas) == (800, 40, 1.5e-4, (0.9, 0.95))
    assert (pre.mask_ratio, pre.norm_pix_loss, pre.weight_decay) == (0.75, True, 0.05)
    ft = FinetuneConfig()
    assert (ft.loss, ft.tau, ft.layer_decay, ft.drop_path) == ("bal_bce", 1.0, 0.75, 0.1)
    assert (ft.mixup, ft.cutmix, ft.smoothing, ft.reprob) == (0.8, 1.0, 0.1, 0.25)
    assert (ft.blr, ft.min_lr, ft.epochs, ft.warmup_epochs) == (1e-3, 1e-6, 100, 10)
    assert ft.auto_augment == "rand-m9-mstd0.5-inc1"


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("kind", ["pretrain", "finetune", "evaluate"])
def test_every_preset_resolves(preset, kind):
    cfg = resolve_config(kind, preset)
    assert cfg.kind == kind


def test_preset_values_per_dataset():
    assert resolve_config("finetune", "places-lt").tau == 1.05
    assert resolve_config("finetune", "places-lt").epochs == 30
    assert resolve_config("finetune", "inat18").drop_path == 0.2
    assert resolve_config("pretrain", "inat18").data.img_size == 128
    assert resolve_config("pretrain", "imagenet-lt").effective_batch_size == 4096
    assert resolve_config("finetune", "imagenet-lt").effective_batch_size == 1024
    assert resolve_config("finetune", "cifar10-lt").layer_decay == 0.65
    assert resolve_config("finetune", "imagenet-lt").crop_scale == (0.08, 1.0)
    assert resolve_config("finetune", "fashion-mnist-lt").crop_scale == (0.8, 1.0)
    assert resolve_config("evaluate", "fashion-mnist-lt").threads == 1
    assert resolve_config("pretrain", "imagenet-lt").threads is None


def test_overrides_win_over_preset_and_merge_nested():
    cfg = resolve_config("finetune", "fashion-mnist-lt", {"epochs": 3, "data": {"num_workers": 0}})
    assert cfg.epochs == 3
    assert cfg.data.num_workers == 0
    assert cfg.data.img_size == 28  # kept from the preset


def test_loader_workers_default_to_auto_and_explicit_counts_still_load():
    """``data.num_workers`` is auto (null) unless a preset or the user sets it; a paper preset
    leaves it auto, fashion-mnist-lt keeps its one loader process, and a run folder's
    ``config.json`` written with a count (the former default 4 included) still validates."""
    assert PretrainConfig().data.num_workers is None
    assert resolve_config("pretrain", "imagenet-lt").data.num_workers is None
    # fashion-mnist-lt fixes one torch thread and leaves its loader processes auto
    fmnist = resolve_config("finetune", "fashion-mnist-lt")
    assert (fmnist.threads, fmnist.data.num_workers) == (1, None)
    cfg = resolve_config("finetune", "fashion-mnist-lt", {"data": {"num_workers": 1}})
    assert cfg.data.num_workers == 1
    assert parse_overrides(["data.num_workers=null"]) == {"data": {"num_workers": None}}
    stored = resolve_config("finetune", "imagenet-lt").model_dump(mode="json")
    stored["data"]["num_workers"] = 4
    assert config_from_dict(stored).data.num_workers == 4
    with pytest.raises(ConfigErrors) as info:
        resolve_config("finetune", None, {"data": {"num_workers": -1}})
    assert "data.num_workers=0" in _fields(info.value)["data.num_workers"]


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigErrors) as info:
        resolve_config("finetune", "imagenet")
    assert "imagenet-lt" in _fields(info.value)["preset"]


@pytest.mark.parametrize(
    ("overrides", "field", "hint"),
    [
        ({"epochs": 0}, "epochs", "positive"),
        ({"blr": -1}, "blr", "> 0"),
        ({"lr": 0}, "lr", "> 0"),
        ({"loss": "focal"}, "loss", "bal_bce"),
        ({"model": "resnet50"}, "model", "vit_base_patch16"),
        ({"model": "mae_vit_base_patch16"}, "model", "classifier"),
        ({"loss": "lade", "mixup": 0.8}, "loss", "mixup=0"),
        ({"loss": "ce", "tau": 1.5}, "tau", "set tau=1"),
        ({"layer_decay": 0}, "layer_decay", "(0, 1]"),
        ({"crop_scale": [0.0, 1.0]}, "crop_scale", "crop_scale=[0.08, 1.0]"),
        ({"threads": 0}, "threads", "set threads to 1 or more"),
        ({"crop_scale": [0.9, 0.5]}, "crop_scale", "low ≤ high"),
        ({"min_lr": 1, "lr": 0.1}, "min_lr", "lower min_lr"),
        ({"data": {"dataset": "mnist"}}, "data.dataset", "fashion-mnist-lt"),
        ({"data": {"mean": [0.5]}}, "data.std", "both"),
        ({"bogus": 1}, "bogus", "unknown setting"),
        ({"device": "tpu"}, "device", "cuda:N"),
    ],
)
def test_invalid_finetune_settings_name_field_and_fix(overrides, field, hint):
    with pytest.raises(ConfigErrors) as info:
        resolve_config("finetune", "fashion-mnist-lt", overrides)
    fields = _fields(info.value)
    assert field in fields, fields
    assert hint in fields[field]


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.1])
def test_mask_ratio_outside_open_interval_is_rejected(ratio):
    with pytest.raises(ConfigErrors) as info:
        resolve_config("pretrain", "fashion-mnist-lt", {"mask_ratio": ratio})
    assert "mask_ratio" in _fields(info.value)


def test_pretrain_needs_an_mae_model():
    with pytest.raises(ConfigErrors) as info:
        resolve_config("pretrain", None, {"model": "vit_base_patch16"})
    assert "mae_vit_base_patch16" in _fields(info.value)["model"]


def test_several_errors_are_reported_together():
    with pytest.raises(ConfigErrors) as info:
        resolve_config("finetune", None, {"epochs": -1, "blr": 0})
    assert {"epochs", "blr"} <= set(_fields(info.value))


def test_resolved_config_round_trips_through_json():
    cfg = resolve_config("finetune", "fashion-mnist-lt", {"epochs": 2})
    again = config_from_dict(json.loads(cfg.model_dump_json()))
    assert again == cfg


def test_parse_overrides_builds_nested_typed_values():
    out = parse_overrides(["epochs=5", "data.root=/d", "betas=[0.9, 0.95]", "init=", "amp=off"])
    assert out == {
        "epochs": 5,
        "data": {"root": "/d"},
        "betas": [0.9, 0.95],
        "init": None,
        "amp": "off",
    }


def test_parse_overrides_rejects_missing_equals():
    with pytest.raises(ConfigErrors) as info:
        parse_overrides(["epochs"])
    assert "KEY=VALUE" in str(info.value)


def test_load_config_file_reads_yaml_and_json(tmp_path):
    (tmp_path / "a.yaml").write_text("epochs: 4\ndata:\n  num_workers: 0\n")
    (tmp_path / "b.json").write_text('{"epochs": 6}')
    assert load_config_file(tmp_path / "a.yaml") == {"epochs": 4, "data": {"num_workers": 0}}
    assert load_config_file(tmp_path / "b.json") == {"epochs": 6}


def test_load_config_file_errors_are_clear(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigErrors, match="mapping"):
        load_config_file(tmp_path / "list.yaml")
    with pytest.raises(ConfigErrors, match="does not exist"):
        load_config_file(tmp_path / "missing.yaml")


def test_set_parser_keeps_amp_off_a_string():
    from livt_core.config import parse_overrides

    assert parse_overrides(["amp=off", "data.root=/d", "global_pool=false"]) == {
        "amp": "off",
        "data": {"root": "/d"},
        "global_pool": False,
    }


def test_config_file_keeps_amp_off_a_string(tmp_path):
    from livt_core.config import load_config_file

    path = tmp_path / "run.yaml"
    path.write_text("amp: off\nepochs: 2\n")
    assert load_config_file(path) == {"amp": "off", "epochs": 2}


def test_every_run_kind_shares_the_run_base():
    from livt_core.config.schema import EvaluateConfig, RunBase

    for cls in (PretrainConfig, FinetuneConfig, EvaluateConfig):
        assert issubclass(cls, RunBase)
    shared = set(RunBase.model_fields)
    assert {"data", "model_kwargs", "amp", "device", "threads", "seed"} <= shared
