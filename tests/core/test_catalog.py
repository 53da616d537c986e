"""The torch-free catalogue (``livt_core.catalog``) names exactly what the registries hold."""

from __future__ import annotations

import pytest

from livt_core import catalog
from livt_core.data import list_datasets
from livt_core.losses import LOSSES
from livt_core.models import list_models
from livt_core.models.factory import FAMILIES
from livt_core.registry import Registry


def test_catalogue_lists_every_registered_model_with_its_family():
    assert catalog.list_models() == list_models()
    assert FAMILIES == catalog.MODEL_FAMILIES


def test_catalogue_lists_every_registered_loss_and_data_set():
    assert catalog.list_losses() == LOSSES.names()
    assert catalog.list_datasets() == list_datasets()


def test_registering_a_name_missing_from_the_catalogue_fails():
    registry: Registry[int] = Registry("loss", "loss", known=catalog.LOSSES)
    with pytest.raises(ValueError, match="missing from livt_core.catalog"):
        registry.add("focal", 1)


def test_loss_settings_are_checked_without_building_the_loss():
    with pytest.raises(catalog.ConfigError, match="no prior bias") as info:
        catalog.check_loss_settings("ce", tau=1.5, smoothing=0.1, options={})
    assert info.value.field == "tau"
    with pytest.raises(catalog.ConfigError, match="needs smoothing > 0"):
        catalog.check_loss_settings("ls_ce", tau=1.0, smoothing=0.0, options={})
