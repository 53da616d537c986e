"""``run(config, output_dir)``: the single entry point that executes any stage."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from livt_core.config import EvaluateConfig, FinetuneConfig, PretrainConfig
from livt_core.distributed import env_rank
from livt_core.engine.evaluate import EvaluateRecipe
from livt_core.engine.finetune import FinetuneRecipe
from livt_core.engine.pretrain import PretrainRecipe
from livt_core.engine.recipe import Recipe
from livt_core.errors import LivtError, StopRequested
from livt_core.events import Callback
from livt_core.fence import AttemptFence
from livt_core.paths import PathPolicy, confine_config_paths
from livt_core.perf import configure_threads, plan_cpus

logger = logging.getLogger(__name__)

RECIPES: dict[str, type[Recipe]] = {
    "pretrain": PretrainRecipe,
    "finetune": FinetuneRecipe,
    "evaluate": EvaluateRecipe,
}


@dataclass
class RunResult:
    """What a run produced. ``status``: ``succeeded`` or ``cancelled`` (failures raise).

    ``result`` is the content of ``results.json`` (empty when cancelled), ``history`` the
    per-epoch metrics, ``checkpoints`` maps ``last`` / ``best`` to their paths.
    """

    kind: str
    status: str
    result: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: dict[str, str] = field(default_factory=dict)
    output_dir: str = ""


def failure_reason(exc: BaseException) -> str:
    """The machine-readable failure class of an exception (see ``livt_core.errors``)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return "out_of_memory"
    if isinstance(exc, LivtError):
        return exc.reason
    return "internal"


def run(
    config: PretrainConfig | FinetuneConfig | EvaluateConfig,
    output_dir: str | Path,
    callbacks: Callback | None = None,
    resume: str | None = "auto",
    paths: PathPolicy | None = None,
    fence: AttemptFence | None = None,
) -> RunResult:
    """Runs one stage described by a validated ``config`` into ``output_dir``.

    Args:
        config: from :func:`livt_core.config.resolve_config`.
        output_dir: receives ``config.json``, checkpoints, ``history.json``, ``results.json``
            (rank 0 only).
        callbacks: progress receiver; only rank 0's is called. ``should_stop()`` is polled every
            step.
        resume: ``"auto"`` continues from ``output_dir/checkpoint-last.pth`` when it exists, a
            path continues from that checkpoint, ``None`` starts afresh.
        paths: where the config's paths and the dataset's files must stay (the job service
            passes its roots); every path field is confined before anything is opened. None:
            no confinement (a local run by the owner of the files).
        fence: the run is one attempt of a service job: it writes into ``output_dir`` only
            while no later attempt has taken the folder over (``livt_core.fence``).

    Returns:
        The :class:`RunResult`; a stop request ends the run with status ``cancelled`` and the
        last checkpoint intact.

    Raises:
        LivtError: typed failures (configuration, data, checkpoint, non-finite loss), after
            ``on_error`` and ``on_end("failed")`` were called; anything else likewise.
    """
    cbs = callbacks if callbacks is not None and env_rank() == 0 else Callback()
    cpus = plan_cpus(config.threads, config.data.num_workers)
    configure_threads(cpus.threads)
    logger.info("%s", cpus.describe())
    recipe = RECIPES[config.kind](
        config, output_dir, callbacks=cbs, resume=resume, paths=paths, fence=fence, cpus=cpus
    )
    status = "succeeded"
    result: dict[str, Any] = {}
    try:
        if paths is not None:
            confine_config_paths(type(config), config.model_dump(mode="json"), paths)
        recipe.setup()
        result = recipe.train()
    except StopRequested as exc:
        logger.info("run cancelled: %s", exc)
        status = "cancelled"
    except KeyboardInterrupt:
        cbs.on_end("cancelled")
        raise
    except Exception as exc:
        cbs.on_error(failure_reason(exc), str(exc))
        cbs.on_end("failed")
        raise
    finally:
        recipe.cleanup()
    cbs.on_end(status)
    return RunResult(
        kind=config.kind,
        status=status,
        result=result,
        history=list(recipe.history),
        checkpoints=dict(recipe.checkpoints),
        output_dir=str(output_dir),
    )
