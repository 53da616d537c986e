"""Building blocks shared by the ViT classifier and the MAE: pre-norm transformer blocks, the
LayerNorm they use, and the checks of a transformer's geometry and of its input images."""

from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import Attention, Block
from torch import nn

from livt_core.errors import ConfigError

ImgSize = int | tuple[int, int]

LayerNorm = partial(nn.LayerNorm, eps=1e-6)


def to_pair(value: ImgSize) -> tuple[int, int]:
    """``224`` → ``(224, 224)``; a pair is returned as a tuple of ints."""
    if isinstance(value, int):
        return value, value
    rows, cols = value
    return int(rows), int(cols)


def check_encoder_geometry(
    img_size: ImgSize,
    patch_size: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    prefix: str = "",
) -> None:
    """Raise :class:`ConfigError` unless the transformer dimensions fit together.

    ``prefix`` is put in front of the field names (``"decoder_"`` for an MAE decoder).
    """
    height, width = to_pair(img_size)
    if height % patch_size or width % patch_size or min(height, width) < patch_size:
        raise ConfigError(
            "img_size",
            f"{height}x{width} pixels is not a whole number of {patch_size}-pixel patches",
            f"use a multiple of {patch_size}",
        )
    if depth < 1:
        raise ConfigError(f"{prefix}depth", f"must be at least 1, got {depth}")
    if num_heads < 1 or embed_dim % num_heads:
        raise ConfigError(
            f"{prefix}num_heads",
            f"embed_dim {embed_dim} is not divisible into {num_heads} heads",
            "choose num_heads dividing embed_dim",
        )


def make_blocks(
    dim: int, depth: int, num_heads: int, mlp_ratio: float, drop_path_rate: float = 0.0
) -> nn.ModuleList:
    """Pre-norm transformer blocks with qkv bias; drop-path grows linearly to ``drop_path_rate``.

    Attention always runs through ``F.scaled_dot_product_attention`` (flash / memory-efficient
    kernels on CUDA, the fused CPU kernel on CPU), whatever timm's global ``TIMM_FUSED_ATTN``
    switch says: :func:`use_sdpa` sets it on every block."""
    rates = torch.linspace(0, drop_path_rate, depth).tolist()
    blocks = nn.ModuleList(
        Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm, drop_path=rate)
        for rate in rates
    )
    use_sdpa(blocks)
    return blocks


def use_sdpa(module: nn.Module) -> None:
    """Makes every timm attention layer inside ``module`` use ``F.scaled_dot_product_attention``
    (the same computation as timm's explicit softmax path; parameters are untouched)."""
    for layer in module.modules():
        if isinstance(layer, Attention):
            layer.fused_attn = True


def check_input(x: torch.Tensor, img_size: tuple[int, int], in_chans: int) -> None:
    """Raise :class:`ConfigError` unless ``x`` is ``[N, in_chans, H, W]`` at the model's size."""
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ConfigError(
            "in_chans",
            f"model expects images [N, {in_chans}, H, W], got {list(x.shape)}",
            "set in_chans to the number of image channels",
        )
    if tuple(x.shape[-2:]) != img_size:
        raise ConfigError(
            "img_size",
            f"model was built for {img_size[0]}x{img_size[1]} images, got "
            f"{x.shape[-2]}x{x.shape[-1]}",
            "build the model with img_size matching the data, or resize the images",
        )
