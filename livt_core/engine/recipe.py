"""The recipe skeleton: ``setup → train → cleanup``, with the epoch loop shared by both stages.

:class:`Recipe` owns the process group, seeding, the output directory and its rank-0 writes.
:class:`TrainRecipe` adds the optimiser, schedule, checkpoints and resume; a stage fills in the
data, the model, what a batch's loss is, what happens after each epoch and the final result.
"""

from __future__ import annotations

import abc
import logging
import math
import multiprocessing
import sys
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from livt_core.checkpoint import extract_model_state, load_checkpoint, save_checkpoint
from livt_core.config import EvaluateConfig, FinetuneConfig, PretrainConfig
from livt_core.contract import (
    BEST_CHECKPOINT,
    CONFIG_FILE,
    EXPORT_FILE,
    HISTORY_FILE,
    LAST_CHECKPOINT,
    RESULTS_FILE,
)
from livt_core.distributed import (
    DistContext,
    barrier,
    init_distributed,
    shutdown,
    train_sampler,
    unwrap_model,
    wrap_model,
)
from livt_core.engine.factories import optimizer_kwargs
from livt_core.engine.loop import EpochPlan, train_one_epoch
from livt_core.engine.state import checkpoint_payload, load_model_state, read_json, write_json
from livt_core.errors import CheckpointError, ConfigError
from livt_core.events import Callback
from livt_core.export import export_model
from livt_core.fence import AttemptFence, NoFence
from livt_core.optim import (
    GradientStep,
    Precision,
    WarmupCosineSchedule,
    absolute_lr,
    create_optimizer,
    param_groups,
    plan_batch,
    resolve_precision,
    rng_state,
    seed_everything,
    set_rng_state,
)
from livt_core.paths import PathPolicy
from livt_core.perf import (
    CpuPlan,
    adamw_implementation,
    loader_worker_init,
    maybe_compile,
    plan_cpus,
    set_adamw_implementation,
)

logger = logging.getLogger(__name__)

#: How DataLoader workers start: forked on Linux (cheap, the data set is shared copy-on-write),
#: the platform's default elsewhere.
LOADER_START_METHOD = "fork" if sys.platform.startswith("linux") else None

AnyConfig = PretrainConfig | FinetuneConfig | EvaluateConfig


class EpochSeeded(Dataset):
    """A training set whose loader workers reseed NumPy, ``random`` and torch when the epoch
    changes, from ``(seed, epoch, worker id)``: persistent workers then draw the same
    augmentations as workers started anew every epoch would, also after a resume.

    ``epoch`` is a shared integer the recipe sets before each epoch's first batch is asked for.
    The main process (no workers) keeps the run's own generators.
    """

    def __init__(self, dataset: Dataset, seed: int, epoch: Any) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = epoch
        self._seeded: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        epoch = int(self.epoch.value)
        if epoch != self._seeded:
            worker = get_worker_info()
            if worker is not None:
                seed_everything((self.seed + 1000 * epoch) * 1009 + worker.id)
            self._seeded = epoch
        return self.dataset[index]


class Recipe(abc.ABC):
    """One run of a stage. ``setup()`` builds everything, ``train()`` runs and returns the result,
    ``cleanup()`` releases the process group (always call it, also after a failure)."""

    kind: ClassVar[str]

    def __init__(
        self,
        config: AnyConfig,
        output_dir: str | Path,
        *,
        callbacks: Callback | None = None,
        resume: str | None = "auto",
        paths: PathPolicy | None = None,
        fence: AttemptFence | None = None,
        cpus: CpuPlan | None = None,
    ) -> None:
        if config.kind != self.kind:
            raise ConfigError("kind", f"{type(self).__name__} runs {self.kind}, not {config.kind}")
        self.config = config
        self.output_dir = Path(output_dir)
        self.callbacks = callbacks or Callback()
        self.resume = resume
        self.paths = paths
        #: every write into ``output_dir`` goes through ``fence.writing()`` (job attempts)
        self.fence: AttemptFence | NoFence = fence or NoFence()
        #: the torch threads and loader workers of this process (``livt_core.perf.plan_cpus``)
        self.cpus = cpus or plan_cpus(config.threads, config.data.num_workers)
        self.ctx = DistContext()
        self.history: list[dict[str, Any]] = []
        self.checkpoints: dict[str, str] = {}
        self.precision = Precision("cpu", None)
        #: The epoch the training loader's workers seed for, shared with the forked workers.
        self.loader_epoch = multiprocessing.Value("q", 0, lock=False)

    @property
    def allowed_roots(self) -> tuple[Path, ...] | None:
        """The data roots the dataset's files must stay inside (None: anywhere)."""
        return None if self.paths is None else self.paths.data_roots

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    def setup(self) -> None:
        """Joins the process group, seeds every generator, writes ``config.json`` (rank 0)."""
        self.ctx = init_distributed(self.config.device)
        seed_everything(self.config.seed + self.ctx.rank)
        self.precision = resolve_precision(self.config.amp, self.device)
        if self.ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with self.fence.writing():
                write_json(self.output_dir / CONFIG_FILE, self.config.model_dump(mode="json"))
        logger.info(
            "%s run on %s (rank %d of %d, precision %s), output in %s",
            self.kind,
            self.device,
            self.ctx.rank,
            self.ctx.world_size,
            self.precision.name,
            self.output_dir,
        )

    @abc.abstractmethod
    def train(self) -> dict[str, Any]:
        """Runs the stage; returns the result also written to ``results.json``."""

    def cleanup(self) -> None:
        shutdown(self.ctx)

    def loader(
        self,
        dataset: Dataset,
        sampler: Sampler,
        batch_size: int,
        *,
        train: bool,
        persistent: bool = True,
    ) -> DataLoader:
        """A loader over this rank's share; training drops the last incomplete batch.

        Loader workers live for the whole run (``persistent``; a loader used once passes
        False) and reseed at the start of every epoch from the run's seed, the rank, the epoch
        and their id (:class:`EpochSeeded`), so a resumed run augments as an uninterrupted
        one. On Linux they are forked whatever the process's default start method: a process
        that was itself spawned (a pool worker, for instance) would otherwise spawn them too,
        re-importing torch and pickling the data set. Each worker runs one torch thread
        (:func:`loader_worker_init`); there are ``self.cpus.num_workers`` of them, the
        resolved ``data.num_workers``."""
        workers = self.cpus.num_workers
        if workers > 0 and train:
            dataset = EpochSeeded(dataset, self.config.seed + self.ctx.rank, self.loader_epoch)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            drop_last=train,
            worker_init_fn=loader_worker_init,
            multiprocessing_context=LOADER_START_METHOD if workers > 0 else None,
            persistent_workers=workers > 0 and persistent,
        )

    def write_export(self) -> None:
        """Rank 0 writes the weights export ``model.safetensors`` (``livt_core.export``) of
        ``self.model``: the classifier that gives the result, or an MAE's encoder."""
        if not self.ctx.is_main:
            return
        classes = getattr(getattr(self, "train_set", None), "classes", None)
        spec = self.spec  # type: ignore[attr-defined]
        with self.fence.writing():
            export_model(
                self.model,  # type: ignore[attr-defined]
                self.output_dir / EXPORT_FILE,
                model_name=self.config.model,
                kind=self.kind,
                mean=spec.mean,
                std=spec.std,
                label_names=list(classes) if classes is not None else None,
            )

    def write_result(self, result: dict[str, Any]) -> None:
        """Writes ``result`` with the process's ``runtime`` (threads, loader workers, cores)."""
        result["runtime"] = self.cpus.record()
        if self.ctx.is_main:
            with self.fence.writing():
                write_json(self.output_dir / RESULTS_FILE, result)
        self.callbacks.on_result(result)


class TrainRecipe(Recipe):
    """A training stage: epochs of :func:`train_one_epoch`, checkpoints and resume."""

    config: PretrainConfig | FinetuneConfig

    def __init__(self, config: AnyConfig, output_dir: str | Path, **kwargs: Any) -> None:
        super().__init__(config, output_dir, **kwargs)
        self.start_epoch = 0
        self.global_step = 0
        self.best: dict[str, Any] | None = None

    # -- what a stage provides --------------------------------------------------------------

    @abc.abstractmethod
    def build_data(self) -> Dataset:
        """Builds this stage's data; returns the training set (item = ``(image, label)``)."""

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """The unwrapped model on CPU."""

    @abc.abstractmethod
    def compute_loss(self, batch: Any) -> torch.Tensor:
        """Scalar mean loss of a training batch through ``self.forward_model`` (under autocast)."""

    def initialize(self) -> None:
        """Initialises a fresh (not resumed) model, e.g. from a pretrained checkpoint."""

    def after_epoch(self, epoch: int) -> dict[str, Any]:
        """Extra epoch metrics, e.g. validation accuracy."""
        return {}

    def update_best(self, epoch: int, metrics: dict[str, Any]) -> bool:
        """Records ``epoch`` in ``self.best`` when it is the best so far; True then."""
        return False

    @abc.abstractmethod
    def finish(self) -> dict[str, Any]:
        """The run's result after the last epoch."""

    # -- setup ----------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        cfg = self.config
        train_set = self.build_data()
        self.model = self.build_model().to(self.device)
        self.batch = plan_batch(
            batch_size=cfg.batch_size,
            accum_iter=cfg.accum_iter,
            world_size=self.ctx.world_size,
            effective_batch_size=cfg.effective_batch_size,
        )
        lr = absolute_lr(
            blr=cfg.blr, effective_batch_size=self.batch.effective_batch_size, lr=cfg.lr
        )
        self.optimizer = create_optimizer(
            param_groups(self.model, **optimizer_kwargs(cfg)),
            lr=lr,
            betas=cfg.betas,
            device=self.device,
        )
        self.grad = GradientStep(self.optimizer, self.precision, clip_grad=cfg.clip_grad)
        self.schedule = WarmupCosineSchedule(
            self.optimizer,
            lr=lr,
            min_lr=cfg.min_lr,
            warmup_epochs=cfg.warmup_epochs,
            epochs=cfg.epochs,
        )
        self.sampler = train_sampler(train_set, self.ctx, seed=cfg.seed)
        self.train_loader = self.loader(train_set, self.sampler, cfg.batch_size, train=True)
        self.steps = min(len(self.train_loader), cfg.max_steps_per_epoch or math.inf)
        if self.steps == 0:
            raise ConfigError(
                "batch_size",
                f"the training set has {len(self.sampler)} images per process, fewer than "
                f"batch_size={cfg.batch_size}",
                "lower batch_size",
            )
        logger.info(
            "effective batch %d (%d × accum %d × %d processes), lr %.3g, %d steps per epoch",
            self.batch.effective_batch_size,
            cfg.batch_size,
            self.batch.accum_iter,
            self.ctx.world_size,
            lr,
            self.steps,
        )
        resume_from = self.resume_path()
        if resume_from is not None:
            self.restore(resume_from)
        else:
            self.initialize()
        self.train_model = wrap_model(self.model, self.ctx)
        # the training forward: compiled or eager; self.model keeps timm's state-dict keys
        self.forward_model, self.compile_reason = maybe_compile(
            self.train_model, cfg.compile, self.device
        )

    def resume_path(self) -> Path | None:
        if self.resume is None:
            return None
        if self.resume == "auto":
            last = self.output_dir / LAST_CHECKPOINT
            return last if last.is_file() else None
        path = Path(self.resume)
        if not path.is_file():
            raise CheckpointError(f"resume checkpoint {path} does not exist")
        return path

    def restore(self, path: Path) -> None:
        """Restores model, optimiser, scaler, epoch, schedule position, best and RNG state."""
        ckpt = load_checkpoint(path)
        kind = ckpt.get("kind")
        if kind is not None and kind != self.kind:
            raise CheckpointError(
                f"cannot resume a {self.kind} run from {path}: it was written by a {kind} run"
            )
        for key in ("optimizer", "epoch"):
            if key not in ckpt:
                raise CheckpointError(
                    f"cannot resume from {path}: it has no {key!r} entry (a weights-only file); "
                    "use it as init instead"
                )
        load_model_state(self.model, extract_model_state(ckpt), str(path))
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            # a checkpoint saved with another kernel (or before the choice existed) keeps
            # this device's fastest one
            set_adamw_implementation(self.optimizer, adamw_implementation(self.device))
        except (ValueError, KeyError) as exc:
            raise CheckpointError(
                f"the optimizer state in {path} does not match this run's parameter groups: {exc}"
            ) from exc
        self.grad.load_scaler_state(ckpt.get("scaler"))
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.global_step = int(ckpt.get("global_step", self.start_epoch * self.steps))
        self.best = ckpt.get("best")
        if self.ctx.is_main and "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        else:  # the file holds rank 0's generators; the other ranks start fresh streams
            seed_everything(self.config.seed + 1000 * self.start_epoch + self.ctx.rank)
        history_file = self.output_dir / HISTORY_FILE
        if history_file.is_file():
            self.history = [h for h in read_json(history_file) if h["epoch"] < self.start_epoch]
        if (self.output_dir / BEST_CHECKPOINT).is_file():
            self.checkpoints["best"] = str(self.output_dir / BEST_CHECKPOINT)
        self.checkpoints["last"] = str(path)
        logger.info("resumed from %s: continuing at epoch %d", path, self.start_epoch)

    # -- training -------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        cfg = self.config
        self.callbacks.on_start(
            {
                "kind": self.kind,
                "epochs": cfg.epochs,
                "start_epoch": self.start_epoch,
                "steps_per_epoch": self.steps,
                "world_size": self.ctx.world_size,
                **self.cpus.record(),
            }
        )
        # a resumed run first reports the epochs it continues after, from its history, so that
        # the event stream alone carries every epoch's metrics (``livt_core.contract``)
        for entry in self.history:
            earlier = {k: v for k, v in entry.items() if k != "epoch"}
            self.callbacks.on_epoch_end(int(entry["epoch"]), earlier)
        for epoch in range(self.start_epoch, cfg.epochs):
            self.sampler.set_epoch(epoch)
            self.loader_epoch.value = epoch
            outcome = train_one_epoch(
                self.train_model,
                self.train_loader,
                self.compute_loss,
                plan=EpochPlan(
                    epoch=epoch,
                    epochs=cfg.epochs,
                    steps=self.steps,
                    accum_iter=self.batch.accum_iter,
                    global_step=self.global_step,
                    images_per_step=cfg.batch_size * self.ctx.world_size,
                ),
                grad=self.grad,
                schedule=self.schedule,
                precision=self.precision,
                ctx=self.ctx,
                callbacks=self.callbacks,
            )
            self.global_step = outcome.global_step
            metrics: dict[str, Any] = {"train_loss": outcome.train_loss, "lr": outcome.lr}
            metrics.update(self.after_epoch(epoch))
            improved = self.update_best(epoch, metrics)
            metrics["epoch_seconds"] = outcome.seconds
            self.history.append({"epoch": epoch, **metrics})
            if self.ctx.is_main:
                with self.fence.writing():
                    write_json(self.output_dir / HISTORY_FILE, self.history)
            logger.info(
                "epoch %d/%d: %s",
                epoch + 1,
                cfg.epochs,
                ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)),
            )
            self.callbacks.on_epoch_end(epoch, metrics)
            if improved:
                self.save(BEST_CHECKPOINT, "best", epoch)
            self.save(LAST_CHECKPOINT, "last", epoch)
        result = self.finish()
        self.write_export()
        self.write_result(result)
        return result

    def save(self, filename: str, name: str, epoch: int) -> None:
        """Rank 0 writes the checkpoint atomically; every rank waits for it."""
        path = self.output_dir / filename
        if self.ctx.is_main:
            payload = checkpoint_payload(
                kind=self.kind,
                model=unwrap_model(self.train_model),  # == self.model
                optimizer=self.optimizer,
                scaler=self.grad.scaler_state(),
                epoch=epoch,
                global_step=self.global_step,
                args=self.config.model_dump(mode="json"),
                rng=rng_state(),
                best=self.best,
            )
            with self.fence.writing():
                save_checkpoint(path, payload)
            self.callbacks.on_checkpoint(name, str(path), epoch)
        barrier(self.ctx)
        self.checkpoints[name] = str(path)
