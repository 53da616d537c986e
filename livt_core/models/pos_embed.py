"""Fixed 2-D sine-cosine position embeddings and resizing of learned ones.

The sin-cos layout follows the released MAE weights, so that a freshly built MAE model carries the
same fixed ``pos_embed`` / ``decoder_pos_embed`` as the published checkpoints: the first half of
the channels encodes the column (x) coordinate, the second half the row (y) coordinate, each half
as ``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 10000^(-k / (D/4))``. A class-token position
is an all-zero row in front.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from livt_core.errors import CheckpointError, ConfigError

GridSize = int | tuple[int, int]


def _as_grid(grid_size: GridSize) -> tuple[int, int]:
    if isinstance(grid_size, int):
        return grid_size, grid_size
    rows, cols = grid_size
    return int(rows), int(cols)


def _sincos_1d(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    """Encode positions ``[M]`` as ``[M, embed_dim]`` (sines in the first half, cosines after)."""
    half = embed_dim // 2
    frequencies = 1.0 / 10000.0 ** (np.arange(half, dtype=np.float64) / half)
    angles = positions.reshape(-1, 1).astype(np.float64) * frequencies.reshape(1, -1)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def get_2d_sincos_pos_embed(
    embed_dim: int, grid_size: GridSize, cls_token: bool = True
) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding.

    Args:
        embed_dim: channels ``D``; must be divisible by 4 (sin and cos for each of two axes).
        grid_size: patch grid as ``rows`` (square) or ``(rows, cols)``.
        cls_token: prepend an all-zero row for the class-token position.

    Returns:
        float32 array ``[rows * cols (+1), D]``, patches in row-major order.
    """
    if embed_dim % 4 != 0:
        raise ConfigError(
            "embed_dim",
            f"sin-cos position embeddings need a multiple of 4 channels, got {embed_dim}",
            "choose embed_dim divisible by 4",
        )
    rows, cols = _as_grid(grid_size)
    ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")  # each [rows, cols]
    emb = np.concatenate(
        [_sincos_1d(embed_dim // 2, xs.ravel()), _sincos_1d(embed_dim // 2, ys.ravel())], axis=1
    )
    if cls_token:
        emb = np.concatenate([np.zeros((1, embed_dim)), emb], axis=0)
    return emb.astype(np.float32)


def interpolate_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resize a position embedding with a leading class-token position to a new patch grid.

    Args:
        pos_embed: ``[1, 1 + L_old, D]``; the first position belongs to the class token.
        new_grid: target ``(rows, cols)``.
        old_grid: source ``(rows, cols)``; inferred as square from ``L_old`` when omitted.

    Returns:
        ``[1, 1 + rows * cols, D]`` in the input dtype: the class position unchanged, the patch
        positions resized with bicubic interpolation (computed in float32).
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise CheckpointError(
            f"pos_embed must have shape [1, 1 + L, D], got {list(pos_embed.shape)}"
        )
    num_patches = pos_embed.shape[1] - 1
    if old_grid is None:
        side = math.isqrt(num_patches)
        if side * side != num_patches:
            raise CheckpointError(
                f"pos_embed has {num_patches} patch positions, which is not a square grid; "
                "pass old_grid=(rows, cols)"
            )
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != num_patches:
        raise CheckpointError(
            f"pos_embed has {num_patches} patch positions, not {old_grid[0]}x{old_grid[1]}"
        )
    new_grid = (int(new_grid[0]), int(new_grid[1]))
    if tuple(old_grid) == new_grid:
        return pos_embed
    dim = pos_embed.shape[2]
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    grid = patch_pos.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False)
    patch_pos = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)
    return torch.cat([cls_pos, patch_pos.to(pos_embed.dtype)], dim=1)
