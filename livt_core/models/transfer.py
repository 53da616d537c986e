"""Initialise a ViT classifier from a pretrained checkpoint (MGP → BFT, or a previous BFT run).

Rules, in the order they are applied to each checkpoint key:

* ``mask_token`` and ``decoder_*`` (the MAE decoder) are dropped.
* ``norm.*`` / ``fc_norm.*`` / ``head.*`` that the classifier does not have are dropped: a
  global-pool classifier has no final ``norm``, a class-token classifier no ``fc_norm``.
* ``pos_embed`` is resized (bicubic, class position kept) when the patch grid differs.
* ``patch_embed.proj.weight`` is adapted when only the number of input channels differs
  (RGB → grey sums the channels).
* ``head.*`` with a different number of classes is dropped with a warning.
* Any other shape difference, an encoder key the classifier lacks, or an encoder weight the
  checkpoint lacks is a :class:`CheckpointError` naming the key and the shapes.

``fc_norm``, ``norm`` and ``head`` left without weights keep their initial values; the head is
re-initialised (truncated normal, std 2e-5) whenever it is not loaded.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from timm.models import adapt_input_conv

from livt_core.checkpoint import extract_model_state
from livt_core.errors import CheckpointError
from livt_core.models.pos_embed import interpolate_pos_embed
from livt_core.models.vit import VisionTransformer

logger = logging.getLogger(__name__)

_DECODER_PREFIXES = ("decoder_", "mask_token")
_POOLING_PREFIXES = ("norm.", "fc_norm.", "head.")


def _shape(t: torch.Tensor | torch.Size) -> list[int]:
    return list(t.shape if isinstance(t, torch.Tensor) else t)


def _fit_pos_embed(
    value: torch.Tensor, model: VisionTransformer
) -> tuple[torch.Tensor, dict[str, list[int]]]:
    expected = model.pos_embed.shape
    if value.ndim != 3 or value.shape[-1] != expected[-1]:
        raise CheckpointError(
            f"pos_embed: checkpoint has shape {_shape(value)}, model expects {_shape(expected)}; "
            "the embedding widths differ, so the checkpoint belongs to another model size"
        )
    resized = interpolate_pos_embed(value, model.patch_embed.grid_size)
    old_side = math.isqrt(value.shape[1] - 1)  # interpolate_pos_embed checked it is square
    info = {"from": [old_side, old_side], "to": list(model.patch_embed.grid_size)}
    logger.info("resized pos_embed from a %s to a %s patch grid", info["from"], info["to"])
    return resized, info


def _fit_patch_embed(value: torch.Tensor, expected: torch.Size) -> torch.Tensor:
    if value.ndim != 4 or value.shape[0] != expected[0] or value.shape[2:] != expected[2:]:
        raise CheckpointError(
            f"patch_embed.proj.weight: checkpoint has shape {_shape(value)}, model expects "
            f"{_shape(expected)}; the patch size or embedding width differs"
        )
    logger.info("adapted patch_embed from %d to %d input channels", value.shape[1], expected[1])
    return adapt_input_conv(expected[1], value, base_chans=value.shape[1])


def load_encoder_into_classifier(model: VisionTransformer, checkpoint: Any) -> dict[str, Any]:
    """Copy the encoder weights of ``checkpoint`` into the classifier ``model`` in place.

    Args:
        model: the classifier to initialise.
        checkpoint: an MAE or classifier checkpoint: a released-format dict
            (``{"model": state_dict, ...}``) or a state dict.

    Returns:
        a report: ``source`` (``"mae"`` or ``"classifier"``), ``loaded_keys`` (count),
        ``missing_keys`` (classifier weights left at their initial values), ``unexpected_keys``
        (checkpoint weights dropped), ``pos_embed_resized`` (``{"from": grid, "to": grid}`` or
        None), ``in_chans_adapted`` (``[old, new]`` or None) and ``head_reinitialized``.

    Raises:
        CheckpointError: the checkpoint is not a state dict or its encoder does not fit ``model``.
        TypeError: ``model`` is not a classifier.
    """
    if not isinstance(model, VisionTransformer):
        raise TypeError(
            f"load_encoder_into_classifier needs a VisionTransformer, got {type(model).__name__}; "
            "resume an MAE model with model.load_state_dict(extract_model_state(checkpoint))"
        )
    state = extract_model_state(checkpoint)
    target = model.state_dict()
    source = "mae" if any(k.startswith(_DECODER_PREFIXES) for k in state) else "classifier"
    loaded: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    foreign: list[str] = []
    resized: dict[str, list[int]] | None = None
    adapted: list[int] | None = None
    for key, value in state.items():
        if key.startswith(_DECODER_PREFIXES):
            dropped.append(key)
            continue
        if key not in target:
            (dropped if key.startswith(_POOLING_PREFIXES) else foreign).append(key)
            continue
        expected = target[key].shape
        if value.shape != expected:
            if key == "pos_embed":
                value, resized = _fit_pos_embed(value, model)
            elif key == "patch_embed.proj.weight":
                adapted = [value.shape[1], expected[1]]
                value = _fit_patch_embed(value, expected)
            elif key.startswith("head."):
                dropped.append(key)
                continue
            else:
                raise CheckpointError(
                    f"{key}: checkpoint has shape {_shape(value)}, model expects "
                    f"{_shape(expected)}; build the classifier with the checkpoint's model size"
                )
        loaded[key] = value
    if foreign:
        raise CheckpointError(
            f"checkpoint has {len(foreign)} weights the classifier lacks, e.g. "
            f"{', '.join(sorted(foreign)[:3])}; build the classifier with the checkpoint's depth "
            "and model size"
        )
    _check_complete(target, loaded)
    head_keys = [k for k in target if k.startswith("head.")]
    head_loaded = all(k in loaded for k in head_keys)
    if not head_loaded:
        for key in head_keys:
            if loaded.pop(key, None) is not None:
                dropped.append(key)
        if "head.weight" in state:
            logger.warning(
                "the checkpoint's head has shape %s but the model has %d classes; "
                "the head is re-initialised",
                _shape(state["head.weight"]),
                model.num_classes,
            )
    model.load_state_dict(loaded, strict=False)
    if not head_loaded:
        model.reset_head()
    missing = sorted(k for k in target if k not in loaded)
    logger.info(
        "loaded %d tensors from a %s checkpoint; dropped %d; left at init: %s",
        len(loaded),
        source,
        len(dropped),
        ", ".join(missing) or "none",
    )
    return {
        "source": source,
        "loaded_keys": len(loaded),
        "missing_keys": missing,
        "unexpected_keys": sorted(dropped),
        "pos_embed_resized": resized,
        "in_chans_adapted": adapted,
        "head_reinitialized": not head_loaded,
    }


def _check_complete(target: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor]) -> None:
    absent = [k for k in target if k not in loaded and not k.startswith(_POOLING_PREFIXES)]
    if absent:
        raise CheckpointError(
            f"checkpoint lacks {len(absent)} encoder weights of the classifier, e.g. "
            f"{', '.join(absent[:3])}; build the classifier with the checkpoint's depth and "
            "model size"
        )
