"""Vision Transformer classifiers for Balanced Fine-Tuning (BFT).

Built from timm layers (``PatchEmbed``, ``Block``) with timm-style state-dict keys, so that the
released LiVT / MAE fine-tuned files load with ``strict=True``:
``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.{i}.*``, then ``fc_norm.*``
(global pool, the default) or ``norm.*`` (class-token pooling), and ``head.*``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import PatchEmbed, trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from livt_core.errors import ConfigError
from livt_core.models.factory import register_model

ImgSize = int | tuple[int, int]

LayerNorm = partial(nn.LayerNorm, eps=1e-6)
HEAD_INIT_STD = 2e-5


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
    """Pre-norm transformer blocks with qkv bias; drop-path grows linearly to ``drop_path_rate``."""
    rates = torch.linspace(0, drop_path_rate, depth).tolist()
    return nn.ModuleList(
        Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm, drop_path=rate)
        for rate in rates
    )


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


class VisionTransformer(nn.Module):
    """ViT classifier: patch embedding, class token, learned position embedding, pre-norm blocks.

    With ``global_pool=True`` (LiVT's default) the logits come from the mean of the patch tokens
    (class token excluded) → ``fc_norm`` → ``head``; there is no final ``norm``. With
    ``global_pool=False`` the final ``norm`` is applied and token 0 (the class token) → ``head``.
    """

    FAMILY = "vit"
    OVERRIDABLE = frozenset(
        {
            "num_classes",
            "img_size",
            "in_chans",
            "embed_dim",
            "depth",
            "num_heads",
            "mlp_ratio",
            "drop_path_rate",
            "global_pool",
        }
    )

    def __init__(
        self,
        *,
        img_size: ImgSize = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        global_pool: bool = True,
    ) -> None:
        super().__init__()
        check_encoder_geometry(img_size, patch_size, embed_dim, depth, num_heads)
        if num_classes < 1:
            raise ConfigError("num_classes", f"must be at least 1, got {num_classes}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ConfigError(
                "drop_path_rate", f"must lie in [0, 1), got {drop_path_rate}", "LiVT uses 0.1"
            )
        self.img_size = to_pair(img_size)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.depth = depth
        self.global_pool = global_pool

        self.patch_embed = PatchEmbed(self.img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio, drop_path_rate)
        self.norm = nn.Identity() if global_pool else LayerNorm(embed_dim)
        self.fc_norm = LayerNorm(embed_dim) if global_pool else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        proj = self.patch_embed.proj
        trunc_normal_(proj.weight.view(proj.weight.shape[0], -1), std=0.02)
        nn.init.zeros_(proj.bias)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.reset_head()

    def reset_head(self) -> None:
        """Re-initialise the classifier ``head``: normal with std 2e-5 truncated at two standard
        deviations, zero bias."""
        std = HEAD_INIT_STD
        trunc_normal_(self.head.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(self.head.bias)

    @property
    def num_layers(self) -> int:
        """Number of blocks + 1: layer ids run from 0 (embeddings) to ``num_layers`` (head)."""
        return self.depth + 1

    def layer_id(self, param_name: str) -> int:
        """Layer id for layer-wise lr decay: embeddings 0, ``blocks.i`` → i + 1, rest depth + 1."""
        if param_name in ("cls_token", "pos_embed") or param_name.startswith("patch_embed."):
            return 0
        if param_name.startswith("blocks."):
            return int(param_name.split(".", 2)[1]) + 1
        return self.depth + 1

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay besides the 1-D ones (norms, biases)."""
        return {"cls_token", "pos_embed"}

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images ``x: [N, C, H, W]`` into tokens ``[N, 1 + L, D]`` (class token first).

        With class-token pooling the final ``norm`` is already applied.
        """
        check_input(x, self.img_size, self.in_chans)
        x = self.patch_embed(x)  # [N, L, D]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, normalised features ``[N, D]`` for images ``x: [N, C, H, W]``."""
        tokens = self.forward_tokens(x)
        if self.global_pool:
            return self.fc_norm(tokens[:, 1:].mean(dim=1))
        return tokens[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for images ``x: [N, C, H, W]``."""
        return self.head(self.forward_features(x))


def _vit(overrides: dict[str, Any], **arch: Any) -> VisionTransformer:
    return VisionTransformer(**{**arch, **overrides})


@register_model
def vit_tiny_patch16(**overrides: Any) -> VisionTransformer:
    """ViT-Ti/16: 192 dims, 12 blocks, 3 heads."""
    return _vit(overrides, patch_size=16, embed_dim=192, depth=12, num_heads=3)


@register_model
def vit_small_patch16(**overrides: Any) -> VisionTransformer:
    """ViT-S/16: 384 dims, 12 blocks, 6 heads."""
    return _vit(overrides, patch_size=16, embed_dim=384, depth=12, num_heads=6)


@register_model
def vit_base_patch16(**overrides: Any) -> VisionTransformer:
    """ViT-B/16: 768 dims, 12 blocks, 12 heads (86,567,656 parameters with 1000 classes)."""
    return _vit(overrides, patch_size=16, embed_dim=768, depth=12, num_heads=12)


@register_model
def vit_large_patch16(**overrides: Any) -> VisionTransformer:
    """ViT-L/16: 1024 dims, 24 blocks, 16 heads."""
    return _vit(overrides, patch_size=16, embed_dim=1024, depth=24, num_heads=16)


@register_model
def vit_huge_patch14(**overrides: Any) -> VisionTransformer:
    """ViT-H/14: 1280 dims, 32 blocks, 16 heads."""
    return _vit(overrides, patch_size=14, embed_dim=1280, depth=32, num_heads=16)


@register_model
def vit_nano_patch4(**overrides: Any) -> VisionTransformer:
    """CPU-sized ViT for 28–64 px images: patch 4, 64 dims, 4 blocks, 4 heads, 10 classes."""
    arch = {"img_size": 32, "num_classes": 10}
    return _vit(overrides, patch_size=4, embed_dim=64, depth=4, num_heads=4, **arch)


@register_model
def vit_micro_patch4(**overrides: Any) -> VisionTransformer:
    """CPU-sized ViT for 28–64 px images: patch 4, 128 dims, 6 blocks, 4 heads, 10 classes."""
    arch = {"img_size": 32, "num_classes": 10}
    return _vit(overrides, patch_size=4, embed_dim=128, depth=6, num_heads=4, **arch)
