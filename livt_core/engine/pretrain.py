"""MGP: masked generative pretraining of an MAE on the long-tailed training set."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from livt_core.config import PretrainConfig
from livt_core.contract import RECONSTRUCTION_FILE
from livt_core.data import build_dataset, build_eval_transform, build_pretrain_transform
from livt_core.engine.factories import data_spec, dataset_kwargs, model_kwargs, transform_kwargs
from livt_core.engine.recipe import LAST_CHECKPOINT, TrainRecipe
from livt_core.models import create_model

logger = logging.getLogger(__name__)

#: Validation images in the reconstruction grid (the first ones of the split: always the same).
GRID_IMAGES = 8
#: Reconstruction grids per run (every ``ceil(epochs / GRIDS)`` epochs and after the last).
GRIDS = 5


class PretrainRecipe(TrainRecipe):
    """Trains ``config.model`` (an ``mae_vit_*``) with its masked-patch reconstruction loss.

    ``mask_ratio`` and ``norm_pix_loss`` come from the config; augmentation is random resized
    crop + flip only. The result is a loss summary; the encoder lives in ``checkpoint-last.pth``.
    """

    kind = "pretrain"
    config: PretrainConfig
    _grid_images: torch.Tensor | None = None

    def build_data(self) -> Dataset:
        data = self.config.data
        self.spec = data_spec(data)
        transform = build_pretrain_transform(**transform_kwargs(data, self.spec))
        return build_dataset(
            data.dataset,
            "train",
            transform=transform,
            **dataset_kwargs(data, "train", allowed_roots=self.allowed_roots),
        )

    def build_model(self) -> nn.Module:
        return create_model(self.config.model, **model_kwargs(self.config, self.spec))

    def compute_loss(self, batch: Any) -> torch.Tensor:
        """``batch = (images [B, C, H, W], labels)``; labels are unused."""
        images = batch[0].to(self.device, non_blocking=True)
        loss, _pred, _mask = self.forward_model(images)
        return loss

    def after_epoch(self, epoch: int) -> dict[str, Any]:
        """Every few epochs rank 0 redraws ``reconstruction.png`` (a failure only logs)."""
        epochs = self.config.epochs
        every = max(1, math.ceil(epochs / GRIDS))
        if self.ctx.is_main and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
            try:
                self._save_grid(epoch)
            except Exception as exc:  # an illustration never fails the run
                logger.warning("reconstruction grid not written: %s", exc)
        return {}

    def _save_grid(self, epoch: int) -> None:
        from livt_core.engine.reconstruction import save_reconstruction_grid

        if self._grid_images is None:
            data = self.config.data
            val = build_dataset(
                data.dataset,
                "val",
                transform=build_eval_transform(**transform_kwargs(data, self.spec)),
                **dataset_kwargs(data, "val", allowed_roots=self.allowed_roots),
            )
            picks = range(min(GRID_IMAGES, len(val)))
            self._grid_images = torch.stack([val[i][0] for i in picks])
        path = self.output_dir / RECONSTRUCTION_FILE
        with self.fence.writing():
            save_reconstruction_grid(
                self.model,
                self._grid_images.to(self.device),
                self.spec.mean,
                self.spec.std,
                path,
                seed=self.config.seed,
            )
        self.callbacks.on_checkpoint("reconstruction", str(path), epoch)

    def finish(self) -> dict[str, Any]:
        losses = [h["train_loss"] for h in self.history]
        return {
            "kind": self.kind,
            "epochs": self.config.epochs,
            "final_loss": losses[-1] if losses else None,
            "min_loss": min(losses) if losses else None,
            "checkpoint": str(self.output_dir / LAST_CHECKPOINT),
        }
