"""The model registry: ``register_model``, ``create_model``, ``list_models``, ``is_mae_model``.

The registry records each model's family (``vit`` or ``mae``) from its class's ``FAMILY``.

A model variant is a small factory function ``name(**overrides) -> ModelClass``. Its return
annotation names the class it builds; the class lists the settings a caller may override in
``OVERRIDABLE``, so that an unknown override fails before anything is built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from livt_core import catalog
from livt_core.errors import ConfigError
from livt_core.registry import Registry

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model", "model", known=catalog.MODEL_FAMILIES)
#: The family of each registered model (``vit`` or ``mae``), as its class declares it.
FAMILIES: dict[str, str] = {}


def _model_class(factory: ModelFactory) -> type[nn.Module]:
    annotation = inspect.signature(factory, eval_str=True).return_annotation
    if not (
        inspect.isclass(annotation)
        and issubclass(annotation, nn.Module)
        and hasattr(annotation, "OVERRIDABLE")
        and hasattr(annotation, "FAMILY")
    ):
        raise TypeError(
            f"model factory {factory.__name__} must be annotated to return a model class "
            "that defines OVERRIDABLE and FAMILY"
        )
    return annotation


def register_model(factory: ModelFactory) -> ModelFactory:
    """Decorator: register ``factory`` under its function name, with its class's family."""
    name = factory.__name__
    family = _model_class(factory).FAMILY  # type: ignore[attr-defined]
    if catalog.MODEL_FAMILIES.get(name, family) != family:
        raise TypeError(
            f"model {name!r} is a {family} model, but livt_core.catalog lists it as "
            f"{catalog.MODEL_FAMILIES[name]}"
        )
    MODELS.register()(factory)
    FAMILIES[name] = family
    return factory


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with architecture ``overrides``.

    Classifiers accept ``num_classes``, ``img_size``, ``in_chans``, ``embed_dim``, ``depth``,
    ``num_heads``, ``mlp_ratio``, ``drop_path_rate``, ``global_pool``; MAE models accept
    ``img_size``, ``in_chans``, ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``,
    ``decoder_embed_dim``, ``decoder_depth``, ``decoder_num_heads``, ``mask_ratio``,
    ``norm_pix_loss``. An unknown name or override raises :class:`ConfigError`.
    """
    factory = MODELS.get(name)
    allowed = _model_class(factory).OVERRIDABLE  # type: ignore[attr-defined]
    for key in overrides:
        if key not in allowed:
            raise ConfigError(
                key,
                f"model {name!r} has no setting {key!r}",
                f"use one of: {', '.join(sorted(allowed))}",
            )
    return factory(**overrides)


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return MODELS.names()


def is_mae_model(name: str) -> bool:
    """True for masked-autoencoder (pretraining) models; unknown names raise ConfigError."""
    MODELS.get(name)
    return FAMILIES[name] == "mae"
