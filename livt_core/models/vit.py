"""Vision Transformer classifiers for Balanced Fine-Tuning (BFT).

Built from timm layers (``PatchEmbed``, ``Block``) with timm-style state-dict keys, so that the
released LiVT / MAE fine-tuned files load with ``strict=True``:
``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.{i}.*``, then ``fc_norm.*``
(global pool, the default) or ``norm.*`` (class-token pooling), and ``head.*``.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import PatchEmbed, trunc_normal_
from torch import nn

from livt_core.errors import ConfigError
from livt_core.models.factory import register_model
from livt_core.models.layers import (
    ImgSize,
    LayerNorm,
    check_encoder_geometry,
    check_input,
    make_blocks,
    to_pair,
)

HEAD_INIT_STD = 2e-5


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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images ``x: [N, C, H, W]`` into tokens ``[N, 1 + L, D]`` (class token first),
        as timm's ``forward_features``. With class-token pooling the final ``norm`` is applied.
        """
        check_input(x, self.img_size, self.in_chans)
        x = self.patch_embed(x)  # [N, L, D]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens ``[N, 1 + L, D]`` → logits ``[N, num_classes]``, or with ``pre_logits`` the
        pooled, normalised features ``[N, D]`` (as timm's ``forward_head``)."""
        if self.global_pool:
            pooled = self.fc_norm(tokens[:, 1:].mean(dim=1))
        else:
            pooled = tokens[:, 0]
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for images ``x: [N, C, H, W]``."""
        return self.forward_head(self.forward_features(x))


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
