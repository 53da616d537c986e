"""Training engines: ``run(config, output_dir, callbacks=None, resume="auto") -> RunResult``.

Each stage is a recipe with ``setup → train → cleanup`` built from a validated config:
:class:`PretrainRecipe` (MGP), :class:`FinetuneRecipe` (BFT) and :class:`EvaluateRecipe`.
The output directory layout, checkpoint payload and event stream are described in
``docs/architecture.md``.
"""

from livt_core.engine.evaluate import EvaluateRecipe
from livt_core.engine.finetune import FinetuneRecipe
from livt_core.engine.pretrain import PretrainRecipe
from livt_core.engine.recipe import Recipe, TrainRecipe
from livt_core.engine.run import RECIPES, RunResult, failure_reason, run

__all__ = [
    "RECIPES",
    "EvaluateRecipe",
    "FinetuneRecipe",
    "PretrainRecipe",
    "Recipe",
    "RunResult",
    "TrainRecipe",
    "failure_reason",
    "run",
]
