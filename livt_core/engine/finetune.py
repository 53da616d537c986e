"""BFT: balanced fine-tuning of a ViT classifier (Bal-BCE by default) with model selection."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from livt_core.checkpoint import extract_model_state, load_checkpoint
from livt_core.config import FinetuneConfig
from livt_core.data import (
    LTDataset,
    build_dataset,
    build_eval_transform,
    build_mixup,
    build_train_transform,
)
from livt_core.distributed import barrier, eval_sampler
from livt_core.engine.factories import (
    data_spec,
    dataset_kwargs,
    loss_kwargs,
    mixing_enabled,
    mixup_kwargs,
    model_kwargs,
    train_augment_kwargs,
    transform_kwargs,
)
from livt_core.engine.loop import predict
from livt_core.engine.recipe import BEST_CHECKPOINT, TrainRecipe
from livt_core.engine.state import load_model_state
from livt_core.errors import ConfigError
from livt_core.losses import build_loss
from livt_core.metrics import long_tail_report
from livt_core.models import create_model, load_encoder_into_classifier

logger = logging.getLogger(__name__)

SELECTION_SPLIT = "val"
VAL_METRICS = ("overall", "many", "medium", "few", "top5", "ece")


def split_rule(report_split: str) -> str:
    """The result's statement of which split chose the best epoch and which is reported."""
    if report_split == SELECTION_SPLIT:
        return (
            f"no test split: the best epoch was chosen on {SELECTION_SPLIT} and the result is "
            f"on {SELECTION_SPLIT} too (an optimistic estimate; add a test split for an "
            "unbiased one)"
        )
    return f"the best epoch was chosen on {SELECTION_SPLIT}; the result is on {report_split}"


class FinetuneRecipe(TrainRecipe):
    """Fine-tunes ``config.model`` from ``config.init`` (an MGP or classifier checkpoint).

    Each epoch is evaluated on ``val`` (shot groups from the **training** class counts) and the
    best by val top-1 is kept as ``checkpoint-best.pth``. At the end that checkpoint is
    evaluated on ``test`` when the data set has one, else on ``val`` (then the reported split is
    also the selection split, which ``results.json`` states). Evaluation uses raw logits: the
    Bal-BCE bias lives only inside the training loss.
    """

    kind = "finetune"
    config: FinetuneConfig

    def build_data(self) -> Dataset:
        cfg = self.config
        data = cfg.data
        self.spec = data_spec(data)
        common = transform_kwargs(data, self.spec)
        train_set = build_dataset(
            data.dataset,
            "train",
            transform=build_train_transform(**common, **train_augment_kwargs(cfg)),
            **dataset_kwargs(data, "train", allowed_roots=self.allowed_roots),
        )
        self.train_set = train_set
        self.eval_transform = build_eval_transform(**common)
        self.val_set = self.eval_dataset(SELECTION_SPLIT)
        self.report_split = "test" if self.spec.has_test else SELECTION_SPLIT
        self.class_counts = list(train_set.class_counts)
        self.num_classes = train_set.num_classes
        self.mixup = None
        if mixing_enabled(cfg):
            if cfg.batch_size % 2:
                raise ConfigError(
                    "batch_size",
                    f"Mixup/CutMix pair the images of a batch, so batch_size must be even, "
                    f"got {cfg.batch_size}",
                    "use an even batch_size, or set mixup=0 and cutmix=0",
                )
            self.mixup = build_mixup(**mixup_kwargs(cfg, self.num_classes))
        self.loss_fn = build_loss(cfg.loss, **loss_kwargs(cfg, self.class_counts)).to(self.device)
        batch = cfg.eval_batch_size or cfg.batch_size
        self.val_loader = self.loader(
            self.val_set, eval_sampler(self.val_set, self.ctx), batch, train=False
        )
        return train_set

    def eval_dataset(self, split: str) -> LTDataset:
        data = self.config.data
        return build_dataset(
            data.dataset,
            split,
            transform=self.eval_transform,
            **dataset_kwargs(data, split, allowed_roots=self.allowed_roots),
        )

    def build_model(self) -> nn.Module:
        return create_model(
            self.config.model, **model_kwargs(self.config, self.spec, self.num_classes)
        )

    def initialize(self) -> None:
        if self.config.init is None:
            logger.warning("no init checkpoint: fine-tuning from random weights")
            return
        report = load_encoder_into_classifier(self.model, load_checkpoint(self.config.init))
        logger.info(
            "initialised from %s (%s checkpoint, %d tensors)",
            self.config.init,
            report["source"],
            report["loaded_keys"],
        )

    def compute_loss(self, batch: Any) -> torch.Tensor:
        """``batch = (images [B, C, H, W], labels [B])``; Mixup/CutMix (if on) makes soft
        targets ``[B, num_classes]`` that the loss takes as they are."""
        images, labels = batch
        images = images.to(self.device, non_blocking=True)
        targets = labels.to(self.device, non_blocking=True)
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)
        return self.loss_fn(self.forward_model(images), targets)

    def evaluate(self, loader: Any, total: int) -> dict[str, Any]:
        """``long_tail_report`` of the current model on a split (all ranks)."""
        logits, labels = predict(
            self.model, loader, total=total, precision=self.precision, ctx=self.ctx
        )
        return long_tail_report(logits, labels, self.class_counts, self.train_set.classes)

    def after_epoch(self, epoch: int) -> dict[str, Any]:
        report = self.evaluate(self.val_loader, len(self.val_set))
        return {f"val_{name}": report[name] for name in VAL_METRICS}

    def update_best(self, epoch: int, metrics: dict[str, Any]) -> bool:
        if self.best is not None and metrics["val_overall"] <= self.best["val_overall"]:
            return False
        self.best = {"epoch": epoch, **{k: v for k, v in metrics.items() if k.startswith("val_")}}
        return True

    def finish(self) -> dict[str, Any]:
        best_path = self.output_dir / BEST_CHECKPOINT
        barrier(self.ctx)
        if best_path.is_file():
            load_model_state(
                self.model, extract_model_state(load_checkpoint(best_path)), str(best_path)
            )
        if self.report_split == SELECTION_SPLIT:
            logger.warning(
                "%s has no test split: the result is on %s, the split the best epoch was chosen on",
                self.config.data.dataset,
                SELECTION_SPLIT,
            )
            loader, total = self.val_loader, len(self.val_set)
        else:
            test_set = self.eval_dataset(self.report_split)
            batch = self.config.eval_batch_size or self.config.batch_size
            loader = self.loader(
                test_set, eval_sampler(test_set, self.ctx), batch, train=False, persistent=False
            )
            total = len(test_set)
        report = self.evaluate(loader, total)
        return {
            **report,
            "split": self.report_split,
            "selection_split": SELECTION_SPLIT,
            "split_rule": split_rule(self.report_split),
            "class_counts_source": self.train_set.source,
            "best_epoch": self.best["epoch"] if self.best else None,
            "checkpoint": str(best_path),
        }
