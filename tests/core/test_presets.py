"""Presets are data: one YAML file per preset, shipped with the package."""

from __future__ import annotations

import pytest
import yaml

from livt_core.config import KINDS, PRESET_DIR, PRESETS, resolve_config
from livt_core.data.stats import IMAGENET_LT_STATS, IMAGENET_STATS, INAT18_STATS


def test_one_yaml_file_per_preset():
    assert sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) == sorted(PRESETS)
    for path in PRESET_DIR.glob("*.yaml"):
        assert set(yaml.safe_load(path.read_text())) <= set(KINDS), path.name


@pytest.mark.parametrize(
    ("preset", "stats"),
    [("imagenet-lt", IMAGENET_LT_STATS), ("inat18", INAT18_STATS), ("places-lt", IMAGENET_STATS)],
)
def test_preset_statistics_match_the_data_sets(preset, stats):
    config = resolve_config("finetune", preset)
    assert config.data.mean == pytest.approx(stats[0])
    assert config.data.std == pytest.approx(stats[1])
