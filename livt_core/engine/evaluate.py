"""Long-tail evaluation of a classifier checkpoint on one split."""

from __future__ import annotations

import logging
from typing import Any

from livt_core.checkpoint import extract_model_state, load_checkpoint
from livt_core.config import EvaluateConfig
from livt_core.data import build_dataset, build_eval_transform
from livt_core.distributed import eval_sampler
from livt_core.engine.factories import data_spec, dataset_kwargs, model_kwargs, transform_kwargs
from livt_core.engine.loop import predict
from livt_core.engine.recipe import Recipe
from livt_core.engine.state import load_model_state
from livt_core.errors import ConfigError
from livt_core.metrics import long_tail_report
from livt_core.models import create_model
from livt_core.posthoc import best_tau, calibration_report, tradeoff_curve

logger = logging.getLogger(__name__)


class EvaluateRecipe(Recipe):
    """Loads ``config.checkpoint`` into ``config.model`` and reports ``config.split``.

    Shot groups come from the training split's class counts, whose ``source`` the result
    records. With ``config.posthoc_tau`` the same logits also give ``result.posthoc`` (one
    entry per τ after post-hoc logit adjustment with the training prior), ``posthoc_best_tau``
    and ``calibration``: ECE before and after temperature scaling, the temperature fitted on the
    ``val`` split (on the evaluated split itself when that is ``val``: data sets without a
    test split have no other held-out split; ``calibration.fit_split`` says which). A checkpoint that is missing, not a state dict, or of another architecture raises
    :class:`~livt_core.errors.CheckpointError` naming the problem.
    """

    kind = "evaluate"
    config: EvaluateConfig

    def setup(self) -> None:
        super().setup()
        cfg = self.config
        data = cfg.data
        if cfg.checkpoint is None:
            raise ConfigError(
                "checkpoint", "is required", "set checkpoint to a fine-tuned classifier file"
            )
        spec = self.spec = data_spec(data)
        if cfg.split == "test" and not spec.has_test:
            raise ConfigError(
                "split", f"data set {data.dataset!r} has no test split here", "use split=val"
            )
        self.train_set = build_dataset(
            data.dataset, "train", **dataset_kwargs(data, "train", allowed_roots=self.allowed_roots)
        )
        self.eval_set = build_dataset(
            data.dataset,
            cfg.split,
            transform=build_eval_transform(**transform_kwargs(data, spec)),
            **dataset_kwargs(data, cfg.split, allowed_roots=self.allowed_roots),
        )
        self.model = create_model(cfg.model, **model_kwargs(cfg, spec, self.train_set.num_classes))
        state = extract_model_state(load_checkpoint(cfg.checkpoint))
        load_model_state(self.model, state, cfg.checkpoint)
        self.model.to(self.device)
        self.eval_loader = self.loader(
            self.eval_set,
            eval_sampler(self.eval_set, self.ctx),
            cfg.batch_size,
            train=False,
            persistent=False,
        )
        self.fit_loader = None
        if cfg.posthoc_tau and cfg.split != "val":
            self.fit_set = build_dataset(
                data.dataset,
                "val",
                transform=build_eval_transform(**transform_kwargs(data, spec)),
                **dataset_kwargs(data, "val", allowed_roots=self.allowed_roots),
            )
            self.fit_loader = self.loader(
                self.fit_set,
                eval_sampler(self.fit_set, self.ctx),
                cfg.batch_size,
                train=False,
                persistent=False,
            )

    def posthoc(self, logits: Any, labels: Any) -> dict[str, Any]:
        """The post-hoc part of the result (see the class docstring)."""
        counts = self.train_set.class_counts
        curve = tradeoff_curve(logits, labels, counts, self.config.posthoc_tau)
        fit_logits, fit_labels = logits, labels
        if self.fit_loader is not None:
            fit_logits, fit_labels = predict(
                self.model,
                self.fit_loader,
                total=len(self.fit_set),
                precision=self.precision,
                ctx=self.ctx,
            )
        calibration = calibration_report(logits, labels, fit_logits, fit_labels, fit_split="val")
        return {"posthoc": curve, "posthoc_best_tau": best_tau(curve), "calibration": calibration}

    def train(self) -> dict[str, Any]:
        self.callbacks.on_start(
            {
                "kind": self.kind,
                "epochs": 0,
                "start_epoch": 0,
                "steps_per_epoch": len(self.eval_loader),
                "world_size": self.ctx.world_size,
                **self.cpus.record(),
            }
        )
        logits, labels = predict(
            self.model,
            self.eval_loader,
            total=len(self.eval_set),
            precision=self.precision,
            ctx=self.ctx,
        )
        report = long_tail_report(
            logits, labels, self.train_set.class_counts, self.train_set.classes
        )
        result = {
            **report,
            "split": self.config.split,
            "class_counts_source": self.train_set.source,
            "checkpoint": self.config.checkpoint,
        }
        if self.config.posthoc_tau:
            result.update(self.posthoc(logits, labels))
        logger.info(
            "%s on %s: top-1 %.2f%%", self.config.checkpoint, self.config.split, report["overall"]
        )
        self.write_export()
        self.write_result(result)
        return result
