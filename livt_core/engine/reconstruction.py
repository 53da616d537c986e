"""What MGP learned, as a picture: input / masked input / reconstruction of fixed images.

:func:`reconstruction_grid` runs an MAE on a few images with a fixed mask (seeded, without
touching the training RNG) and lays out three rows: the images, the images with the masked
patches greyed out, and the reconstruction (the visible patches pasted back over the decoder's
prediction, as in the MAE paper's figures). With ``norm_pix_loss`` the decoder predicts
per-patch normalised pixels; each patch is mapped back with the target patch's own mean and
variance, which the grid may use because it only illustrates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

#: Pixels between the tiles of the grid.
PAD = 2


@torch.no_grad()
def reconstruction_rows(
    model: torch.nn.Module, images: torch.Tensor, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, masked, reconstruction)``, each ``[N, C, H, W]`` in the model's (normalised)
    input space; masked patches are 0 in ``masked``."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _loss, pred, mask = model(images)
    finally:
        model.train(was_training)
    pred = pred.float()
    if getattr(model, "norm_pix_loss", False):
        target = model.patchify(images).float()
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        pred = pred * (var + 1e-6) ** 0.5 + mean
    width = pred.shape[-1]
    pixel_mask = model.unpatchify(mask.unsqueeze(-1).expand(-1, -1, width).float())  # 1 = masked
    recon = model.unpatchify(pred)
    masked = images * (1 - pixel_mask)
    pasted = images * (1 - pixel_mask) + recon * pixel_mask
    return images, masked, pasted


def to_grid(
    rows: Sequence[torch.Tensor], mean: Sequence[float], std: Sequence[float]
) -> Image.Image:
    """Rows of ``[N, C, H, W]`` normalised images → one PIL image (grey or RGB)."""
    channels = rows[0].shape[1]
    m = torch.tensor(list(mean)[:channels] or [0.0]).view(1, -1, 1, 1)
    s = torch.tensor(list(std)[:channels] or [1.0]).view(1, -1, 1, 1)
    n, _, height, width = rows[0].shape
    canvas = torch.ones(
        channels, len(rows) * (height + PAD) + PAD, n * (width + PAD) + PAD
    )  # white background
    for r, row in enumerate(rows):
        pixels = (row.float().cpu() * s + m).clamp(0, 1)
        for i in range(n):
            top, left = PAD + r * (height + PAD), PAD + i * (width + PAD)
            canvas[:, top : top + height, left : left + width] = pixels[i]
    array = (canvas * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if channels == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    return Image.fromarray(array[:, :, :3], mode="RGB")


def save_reconstruction_grid(
    model: torch.nn.Module,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    path: Path,
    *,
    seed: int = 0,
) -> Path:
    """Writes the grid PNG atomically (a partial file is never served); returns ``path``."""
    grid = to_grid(reconstruction_rows(model, images, seed), mean, std)
    partial = path.with_name(path.name + ".part")
    grid.save(partial, format="PNG")
    partial.replace(path)
    return path
