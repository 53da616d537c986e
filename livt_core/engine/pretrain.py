"""MGP: masked generative pretraining of an MAE on the long-tailed training set."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from livt_core.config import PretrainConfig
from livt_core.data import build_dataset, build_pretrain_transform
from livt_core.engine.factories import data_spec, dataset_kwargs, model_kwargs, transform_kwargs
from livt_core.engine.recipe import LAST_CHECKPOINT, TrainRecipe
from livt_core.models import create_model


class PretrainRecipe(TrainRecipe):
    """Trains ``config.model`` (an ``mae_vit_*``) with its masked-patch reconstruction loss.

    ``mask_ratio`` and ``norm_pix_loss`` come from the config; augmentation is random resized
    crop + flip only. The result is a loss summary; the encoder lives in ``checkpoint-last.pth``.
    """

    kind = "pretrain"
    config: PretrainConfig

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

    def finish(self) -> dict[str, Any]:
        losses = [h["train_loss"] for h in self.history]
        return {
            "kind": self.kind,
            "epochs": self.config.epochs,
            "final_loss": losses[-1] if losses else None,
            "min_loss": min(losses) if losses else None,
            "checkpoint": str(self.output_dir / LAST_CHECKPOINT),
        }
