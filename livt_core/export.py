"""Export a model's weights for timm: ``model.safetensors`` plus timm's ``config.json``.

The export holds the weights only (no optimizer, no training state), under timm's state-dict
keys. A classifier exports whole; an MAE (MGP) model exports its encoder (``mask_token`` and
``decoder_*`` dropped), which timm builds as a ``VisionTransformer`` without a head
(``num_classes=0``, class-token pooling after the final ``norm``).

``config.json`` has the layout timm's ``push_to_hub`` writes and ``timm.create_model(
"local-dir:DIR")`` reads::

    {"architecture": "vit_base_patch16_224", "num_classes": C, "num_features": D,
     "global_pool": "avg" | "token", "model_args": {img_size, patch_size, in_chans, embed_dim,
     depth, num_heads, mlp_ratio, global_pool, class_token}, "pretrained_cfg": {input_size,
     mean, std, num_classes, label_names, interpolation, crop_pct, ...}}

The same JSON is stored in the safetensors metadata under ``config`` (with ``format: pt`` and
the ``livt_version`` / ``kind`` that wrote it), so the weights file alone is enough:
:func:`read_metadata` reads it back without torch (the API and the client use it).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from livt_core.contract import EXPORT_FILE

logger = logging.getLogger(__name__)

#: The export's file names (the artifact of a job is ``WEIGHTS_FILE``).
WEIGHTS_FILE = EXPORT_FILE
TIMM_CONFIG_FILE = "config.json"
#: Export formats of ``livt export`` and ``GET /jobs/{id}/export``.
FORMATS = ("safetensors", "timm")
#: The safetensors metadata key that holds the timm config JSON.
METADATA_CONFIG_KEY = "config"
#: Largest safetensors header read (the header is JSON; ours are a few kB).
MAX_HEADER_BYTES = 16 << 20

#: livt model name → the timm architecture whose defaults it shares. Any other ViT (the
#: CPU-sized ones) is built from ``vit_tiny_patch16_224`` with every size in ``model_args``.
TIMM_ARCHITECTURES = {
    "vit_tiny_patch16": "vit_tiny_patch16_224",
    "vit_small_patch16": "vit_small_patch16_224",
    "vit_base_patch16": "vit_base_patch16_224",
    "vit_large_patch16": "vit_large_patch16_224",
    "vit_huge_patch14": "vit_huge_patch14_224",
}
DEFAULT_ARCHITECTURE = "vit_tiny_patch16_224"
_DECODER_PREFIXES = ("decoder_", "mask_token")


def timm_architecture(model_name: str) -> str:
    """The timm architecture name of a livt model name (``mae_`` prefix ignored)."""
    return TIMM_ARCHITECTURES.get(model_name.removeprefix("mae_"), DEFAULT_ARCHITECTURE)


def model_args(model: Any) -> dict[str, Any]:
    """timm ``VisionTransformer`` keyword arguments that rebuild ``model``'s encoder (and head).

    ``model``: a livt ``VisionTransformer`` or ``MaskedAutoencoderViT``."""
    proj = model.patch_embed.proj
    embed_dim = int(proj.out_channels)
    block = model.blocks[0]
    is_mae = getattr(model, "FAMILY", "") == "mae"
    pooled = bool(getattr(model, "global_pool", False)) and not is_mae
    return {
        "img_size": list(model.img_size),
        "patch_size": int(proj.kernel_size[0]),
        "in_chans": int(proj.in_channels),
        "embed_dim": embed_dim,
        "depth": len(model.blocks),
        "num_heads": int(block.attn.num_heads),
        "mlp_ratio": block.mlp.fc1.out_features / embed_dim,
        "global_pool": "avg" if pooled else "token",
        "class_token": True,
        "qkv_bias": True,
    }


def export_state(model: Any) -> dict[str, Any]:
    """The exported tensors: the model's state dict, the MAE decoder dropped (contiguous,
    on the CPU)."""
    return {
        key: value.detach().to("cpu").contiguous()
        for key, value in model.state_dict().items()
        if not key.startswith(_DECODER_PREFIXES)
    }


def timm_config(
    model: Any,
    *,
    model_name: str,
    mean: Sequence[float],
    std: Sequence[float],
    label_names: Sequence[str] | None = None,
    crop_pct: float = 0.875,
) -> dict[str, Any]:
    """timm's hub ``config.json`` of ``model`` (see the module docstring)."""
    args = model_args(model)
    is_mae = getattr(model, "FAMILY", "") == "mae"
    num_classes = 0 if is_mae else int(model.head.out_features)
    names = list(label_names) if label_names is not None and not is_mae else None
    if names is not None and len(names) != num_classes:
        names = None
    pretrained_cfg = {
        "architecture": timm_architecture(model_name),
        "input_size": [args["in_chans"], *args["img_size"]],
        "fixed_input_size": True,
        "interpolation": "bicubic",
        "crop_pct": crop_pct,
        "crop_mode": "center",
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "num_classes": num_classes,
        "pool_size": None,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "label_names": names,
        "description": f"livt {model_name} ({'MGP encoder' if is_mae else 'classifier'})",
    }
    return {
        "architecture": pretrained_cfg["architecture"],
        "num_classes": num_classes,
        "num_features": args["embed_dim"],
        "global_pool": args["global_pool"],
        "model_args": args,
        "pretrained_cfg": pretrained_cfg,
    }


def write_weights(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    kind: str,
) -> Path:
    """Writes ``tensors`` as safetensors with ``config`` in the metadata, atomically."""
    from safetensors.torch import save_file

    from livt_core import __version__

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": "pt",
        METADATA_CONFIG_KEY: json.dumps(config, sort_keys=True),
        "kind": kind,
        "livt_version": __version__,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        save_file(dict(tensors), tmp, metadata=metadata)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, read from its JSON header (no torch).

    Raises:
        ValueError: not a safetensors file.
    """
    with Path(path).open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is not a safetensors file (shorter than its header)")
        (size,) = struct.unpack("<Q", raw)
        if size > MAX_HEADER_BYTES:
            raise ValueError(f"{path} is not a safetensors file (header of {size} bytes)")
        header = fh.read(size)
    try:
        parsed = json.loads(header)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a safetensors file (header is not JSON)") from exc
    meta = parsed.get("__metadata__") if isinstance(parsed, dict) else None
    return {str(k): str(v) for k, v in (meta or {}).items()}


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The timm ``config.json`` stored in an export's metadata (no torch).

    Raises:
        ValueError: not a safetensors file, or one without livt's config.
    """
    meta = read_metadata(path)
    if METADATA_CONFIG_KEY not in meta:
        raise ValueError(f"{path} holds no model config in its metadata (not a livt export)")
    return json.loads(meta[METADATA_CONFIG_KEY])


def write_timm_folder(weights: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """``out_dir/model.safetensors`` (a copy of ``weights``) and ``out_dir/config.json``."""
    import shutil

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config = read_config(weights)
    target = folder / WEIGHTS_FILE
    if Path(weights).resolve() != target.resolve():
        shutil.copyfile(weights, target)
    (folder / TIMM_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def export_model(
    model: Any,
    path: str | os.PathLike[str],
    *,
    model_name: str,
    kind: str,
    mean: Sequence[float],
    std: Sequence[float],
    label_names: Sequence[str] | None = None,
) -> Path:
    """Writes ``model``'s weights (the encoder of an MAE) as a safetensors export to ``path``."""
    config = timm_config(model, model_name=model_name, mean=mean, std=std, label_names=label_names)
    return write_weights(path, export_state(model), config, kind=kind)


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    label_names: Sequence[str] | None = None,
) -> Path:
    """Exports a checkpoint this project wrote (its ``args`` hold the run config) into
    ``out_dir`` as ``model.safetensors`` + ``config.json``; returns the folder.

    The model is rebuilt from the checkpoint's run config; the number of classes and input
    channels come from its weights, the normalisation from the config (else the data set's).

    Raises:
        CheckpointError: unreadable, or without the run config of this project.
    """
    from livt_core.checkpoint import extract_model_state, load_checkpoint
    from livt_core.config import resolve_config
    from livt_core.engine.factories import data_spec
    from livt_core.engine.state import load_model_state
    from livt_core.errors import CheckpointError
    from livt_core.models import create_model

    payload = load_checkpoint(checkpoint)
    args, kind = payload.get("args"), payload.get("kind")
    if not isinstance(args, dict) or kind not in ("pretrain", "finetune"):
        raise CheckpointError(
            f"checkpoint {checkpoint} holds no run config of this project ('args' and 'kind'); "
            "export a checkpoint-last.pth or checkpoint-best.pth written by livt"
        )
    state = extract_model_state(payload)
    config = resolve_config(kind, None, {k: v for k, v in args.items() if k != "kind"})
    weight = state.get("patch_embed.proj.weight")
    if weight is None:
        raise CheckpointError(f"checkpoint {checkpoint} holds no ViT (no patch_embed.proj.weight)")
    overrides: dict[str, Any] = {"img_size": config.data.img_size, "in_chans": weight.shape[1]}
    if kind == "finetune":
        overrides.update(num_classes=state["head.weight"].shape[0], global_pool=config.global_pool)
    model = create_model(config.model, **{**overrides, **config.model_kwargs})
    load_model_state(model, state, str(checkpoint))
    try:
        spec = data_spec(config.data)
        mean, std = spec.mean, spec.std
    except Exception as exc:  # the data set is not on this machine: the config's values, else
        # ImageNet's (the channel mean of them for a grey model), said in the log
        grey = weight.shape[1] == 1
        mean = config.data.mean or ((0.449,) if grey else (0.485, 0.456, 0.406))
        std = config.data.std or ((0.226,) if grey else (0.229, 0.224, 0.225))
        logger.warning(
            "the data set of %s is not readable here (%s): config.json states mean %s, std %s",
            checkpoint,
            exc,
            list(mean),
            list(std),
        )
    folder = Path(out_dir)
    export_model(
        model,
        folder / WEIGHTS_FILE,
        model_name=config.model,
        kind=kind,
        mean=mean,
        std=std,
        label_names=label_names,
    )
    return write_timm_folder(folder / WEIGHTS_FILE, folder)
