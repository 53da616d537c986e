"""Masked autoencoder ViT for Masked Generative Pretraining (MGP).

Encoder: patch embedding, class token, fixed 2-D sin-cos position embedding, pre-norm blocks and a
final ``norm``; it sees only the kept patches. Decoder: ``decoder_embed`` to the decoder width, a
learned ``mask_token`` for the dropped patches, fixed sin-cos ``decoder_pos_embed``, blocks,
``decoder_norm`` and ``decoder_pred`` to ``patch_size² × in_chans`` pixel values per patch.

State-dict keys match the released MAE / LiVT pretraining files. The fixed position embeddings
are ``nn.Parameter`` with ``requires_grad=False`` so that they are saved and loaded as in those
files.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import PatchEmbed
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
from livt_core.models.pos_embed import get_2d_sincos_pos_embed


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """Patches the encoder sees: ``int(L * (1 - mask_ratio))``."""
    return int(num_patches * (1 - mask_ratio))


def check_mask_ratio(mask_ratio: float, num_patches: int) -> None:
    """Raise :class:`ConfigError` unless at least one patch is kept and at least one is masked."""
    keep = num_kept(num_patches, mask_ratio)
    if not 0.0 < mask_ratio < 1.0 or not 1 <= keep < num_patches:
        raise ConfigError(
            "mask_ratio",
            f"{mask_ratio} keeps {keep} of {num_patches} patches; at least one patch must be kept "
            "and at least one masked",
            "use a value strictly between 0 and 1 (the paper uses 0.75)",
        )


class MaskedAutoencoderViT(nn.Module):
    """MAE with a ViT encoder and a lightweight ViT decoder.

    ``forward(imgs)`` returns ``(loss, pred, mask)``: the mean squared error over masked patches,
    the predicted pixels ``[N, L, p*p*C]`` for every patch, and the mask ``[N, L]`` (1 = masked).
    """

    FAMILY = "mae"
    OVERRIDABLE = frozenset(
        {
            "img_size",
            "in_chans",
            "embed_dim",
            "depth",
            "num_heads",
            "mlp_ratio",
            "decoder_embed_dim",
            "decoder_depth",
            "decoder_num_heads",
            "mask_ratio",
            "norm_pix_loss",
        }
    )

    def __init__(
        self,
        *,
        img_size: ImgSize = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
    ) -> None:
        super().__init__()
        check_encoder_geometry(img_size, patch_size, embed_dim, depth, num_heads)
        check_encoder_geometry(
            img_size, patch_size, decoder_embed_dim, decoder_depth, decoder_num_heads, "decoder_"
        )
        for field, dim in (("embed_dim", embed_dim), ("decoder_embed_dim", decoder_embed_dim)):
            if dim % 4:
                raise ConfigError(
                    field,
                    f"sin-cos position embeddings need a multiple of 4 channels, got {dim}",
                    "choose a width divisible by 4",
                )
        self.img_size = to_pair(img_size)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss

        self.patch_embed = PatchEmbed(self.img_size, patch_size, in_chans, embed_dim)
        grid = self.patch_embed.grid_size
        num_patches = self.patch_embed.num_patches
        check_mask_ratio(mask_ratio, num_patches)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(
            torch.from_numpy(get_2d_sincos_pos_embed(embed_dim, grid)).unsqueeze(0),
            requires_grad=False,
        )
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio)
        self.norm = LayerNorm(embed_dim)

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.from_numpy(get_2d_sincos_pos_embed(decoder_embed_dim, grid)).unsqueeze(0),
            requires_grad=False,
        )
        self.decoder_blocks = make_blocks(
            decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio
        )
        self.decoder_norm = LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size * patch_size * in_chans)
        self._init_weights()

    def _init_weights(self) -> None:
        proj = self.patch_embed.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def no_weight_decay(self) -> set[str]:
        """Token and position parameters exempt from weight decay besides the 1-D ones."""
        return {"cls_token", "mask_token", "pos_embed", "decoder_pos_embed"}

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """``imgs: [N, C, H, W]`` → patches ``[N, L, p*p*C]`` (row-major patches, pixel-major,
        channel-last inside a patch, as the released decoders predict)."""
        check_input(imgs, self.img_size, self.in_chans)
        p = self.patch_size
        n, c, h, w = imgs.shape
        x = imgs.reshape(n, c, h // p, p, w // p, p)
        x = x.permute(0, 2, 4, 3, 5, 1)  # [N, h, w, p, p, C]
        return x.reshape(n, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """Patches ``x: [N, L, p*p*C]`` → images ``[N, C, H, W]`` (inverse of ``patchify``)."""
        p, c = self.patch_size, self.in_chans
        rows, cols = self.patch_embed.grid_size
        x = x.reshape(x.shape[0], rows, cols, p, p, c)
        x = x.permute(0, 5, 1, 3, 2, 4)  # [N, C, h, p, w, p]
        return x.reshape(x.shape[0], c, rows * p, cols * p)

    def random_masking(
        self, x: torch.Tensor, mask_ratio: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep a random ``int(L * (1 - mask_ratio))`` patches per sample.

        Args:
            x: patch tokens ``[N, L, D]``.

        Returns:
            kept tokens ``[N, K, D]``, mask ``[N, L]`` (0 = kept, 1 = masked) in the original
            patch order, and ``ids_restore [N, L]`` that undoes the shuffle.
        """
        n, length, dim = x.shape
        keep = num_kept(length, mask_ratio)
        noise = torch.rand(n, length, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)  # ascending: the first `keep` are kept
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
        mask = torch.ones(n, length, device=x.device)
        mask[:, :keep] = 0
        return kept, torch.gather(mask, 1, ids_restore), ids_restore

    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``imgs: [N, C, H, W]`` → latent ``[N, 1 + K, D]``, mask ``[N, L]``, ids_restore."""
        check_input(imgs, self.img_size, self.in_chans)
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        x, mask, ids_restore = self.random_masking(x, mask_ratio)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """``latent: [N, 1 + K, D]`` and ``ids_restore: [N, L]`` → pixel predictions
        ``[N, L, p*p*C]``."""
        x = self.decoder_embed(latent)  # [N, 1 + K, Dd]
        n, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], mask_tokens], dim=1)  # shuffled order
        index = ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2])
        patches = torch.gather(patches, 1, index)  # original order
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward_loss(
        self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean squared error on the masked patches only.

        Args:
            imgs: ``[N, C, H, W]``; pred: ``[N, L, p*p*C]``; mask: ``[N, L]`` (1 = masked).

        Returns:
            scalar loss: per-patch mean over pixels, averaged over the masked patches. With
            ``norm_pix_loss`` each target patch is first normalised by its own mean and
            (unbiased) variance, ``(t - mean) / sqrt(var + 1e-6)``, as in the released code.
        """
        target = self.patchify(imgs).float()
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = (pred.float() - target).pow(2).mean(dim=-1)  # [N, L]
        return (per_patch * mask).sum() / mask.sum()

    def forward(
        self, imgs: torch.Tensor, mask_ratio: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``imgs: [N, C, H, W]`` → ``(loss, pred [N, L, p*p*C], mask [N, L])``.

        ``mask_ratio`` defaults to the ratio the model was built with.
        """
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        if mask_ratio is not None:
            check_mask_ratio(ratio, self.patch_embed.num_patches)
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask


def _mae(overrides: dict[str, Any], **arch: Any) -> MaskedAutoencoderViT:
    return MaskedAutoencoderViT(**{**arch, **overrides})


DECODER_512D8B = {"decoder_embed_dim": 512, "decoder_depth": 8, "decoder_num_heads": 16}


@register_model
def mae_vit_tiny_patch16(**overrides: Any) -> MaskedAutoencoderViT:
    """MAE ViT-Ti/16 encoder (192 dims, 12 blocks, 3 heads), 512-d 8-block decoder."""
    return _mae(overrides, patch_size=16, embed_dim=192, depth=12, num_heads=3, **DECODER_512D8B)


@register_model
def mae_vit_small_patch16(**overrides: Any) -> MaskedAutoencoderViT:
    """MAE ViT-S/16 encoder (384 dims, 12 blocks, 6 heads), 512-d 8-block decoder."""
    return _mae(overrides, patch_size=16, embed_dim=384, depth=12, num_heads=6, **DECODER_512D8B)


@register_model
def mae_vit_base_patch16(**overrides: Any) -> MaskedAutoencoderViT:
    """MAE ViT-B/16 encoder, 512-d 8-block decoder (111,907,840 parameters)."""
    return _mae(overrides, patch_size=16, embed_dim=768, depth=12, num_heads=12, **DECODER_512D8B)


@register_model
def mae_vit_large_patch16(**overrides: Any) -> MaskedAutoencoderViT:
    """MAE ViT-L/16 encoder (1024 dims, 24 blocks, 16 heads), 512-d 8-block decoder."""
    return _mae(overrides, patch_size=16, embed_dim=1024, depth=24, num_heads=16, **DECODER_512D8B)


@register_model
def mae_vit_huge_patch14(**overrides: Any) -> MaskedAutoencoderViT:
    """MAE ViT-H/14 encoder (1280 dims, 32 blocks, 16 heads), 512-d 8-block decoder."""
    return _mae(overrides, patch_size=14, embed_dim=1280, depth=32, num_heads=16, **DECODER_512D8B)


@register_model
def mae_vit_nano_patch4(**overrides: Any) -> MaskedAutoencoderViT:
    """CPU-sized MAE for 28–64 px images: encoder as ``vit_nano_patch4``, 64-d 2-block decoder."""
    return _mae(
        overrides,
        img_size=32,
        patch_size=4,
        embed_dim=64,
        depth=4,
        num_heads=4,
        decoder_embed_dim=64,
        decoder_depth=2,
        decoder_num_heads=4,
    )


@register_model
def mae_vit_micro_patch4(**overrides: Any) -> MaskedAutoencoderViT:
    """CPU-sized MAE for 28–64 px images: encoder as ``vit_micro_patch4``, 128-d 2-block
    decoder."""
    return _mae(
        overrides,
        img_size=32,
        patch_size=4,
        embed_dim=128,
        depth=6,
        num_heads=4,
        decoder_embed_dim=128,
        decoder_depth=2,
        decoder_num_heads=4,
    )
