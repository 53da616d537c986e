"""Request and response bodies of ``/sweeps`` (see ``docs/service.md``, "Sweeps")."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.schemas import JobSummary
from livt_core.paths import SafeStr

SweepStatus = Literal["running", "succeeded", "failed", "cancelled"]
#: The result fields a sweep table aggregates over seeds.
TABLE_METRICS: tuple[str, ...] = ("overall", "many", "medium", "few", "top5", "ece")
#: Most values of one grid field, and most seeds.
MAX_GRID_VALUES = 50
MAX_SEEDS = 20


ObjectiveMetric = Literal["val_overall", "val_many", "val_medium", "val_few"]


class SearchParam(BaseModel):
    """A continuous run field to search: ``low ≤ value ≤ high``, sampled on a log scale with
    ``log``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> SearchParam:
        if not self.low < self.high:
            raise ValueError("low must be below high; e.g. {'low': 1e-4, 'high': 1e-2}")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0; raise low or set log: false")
        return self


class SearchSpec(BaseModel):
    """Adaptive search (Optuna's TPE, ask-and-tell, its study stored in the service's
    database): ``trials`` finetune jobs, at most ``parallel`` at a time, each next one asked
    once earlier ones told their objective (the validation metrics of their best epoch)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    space: dict[SafeStr, SearchParam] = Field(min_length=1, max_length=8)
    objective: ObjectiveMetric | dict[ObjectiveMetric, float] = Field(
        "val_overall",
        description="a validation metric to maximise, or weights of several "
        "(e.g. {'val_few': 0.5, 'val_overall': 0.5})",
    )
    trials: int = Field(8, ge=1, le=1000)
    parallel: int = Field(2, ge=1, le=64)


class SweepCreate(BaseModel):
    """One job per grid point × seed, each the ``base`` spec with the grid's fields set."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "name": "loss x tau",
                    "base": {
                        "kind": "finetune",
                        "preset": "fashion-mnist-lt",
                        "init": {"job": "j_01hx0000000000000000000000"},
                        "epochs": 1,
                    },
                    "grid": {"loss": ["bal_bce", "bal_ce"], "tau": [0.5, 1.0]},
                    "seeds": [0, 1, 2],
                },
                {
                    "name": "mgp per seed",
                    "base": {
                        "stages": [
                            {"kind": "pretrain", "preset": "fashion-mnist-lt", "epochs": 1},
                            {"kind": "finetune", "preset": "fashion-mnist-lt", "epochs": 1},
                        ]
                    },
                    "grid": {"loss": ["bal_bce", "ce"]},
                    "seeds": [0, 1],
                },
            ]
        },
    )

    name: SafeStr | None = Field(None, max_length=200)
    base: dict[str, Any] = Field(
        description="a job spec as for POST /jobs, or a pipeline {'stages': [...]} as for POST "
        "/pipelines: its first stage runs once per seed and the grid applies to its finetune "
        "stages, which fan out from it"
    )
    grid: dict[SafeStr, list[Any]] = Field(
        default_factory=dict,
        max_length=8,
        description="run field (dotted for nested ones, e.g. data.imbalance_factor) → the values "
        f"to try (1-{MAX_GRID_VALUES}, distinct); every combination is a grid point. In a "
        "pipeline base, init: ['scratch', 'pretrained'] runs the finetune stages from random "
        "weights and from the first stage",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0],
        min_length=1,
        max_length=MAX_SEEDS,
        description="each grid point runs once per seed (the run's seed field)",
    )
    search: SearchSpec | None = Field(
        None, description="adaptive search over continuous fields instead of a grid"
    )


class MeanStd(BaseModel):
    """Mean and sample standard deviation over the seeds that have the value (``std`` is None
    below two)."""

    mean: float | None
    std: float | None
    n: int


class SweepCell(BaseModel):
    seed: int
    job: str
    status: str
    failure_message: str | None = None


class SweepRow(BaseModel):
    """One grid point: ``n`` seeds finished with a result, and the metrics over them
    (``objective``: an adaptive trial's value, told to the search)."""

    params: dict[str, Any]
    objective: float | None = None
    n: int
    status: dict[str, int] = Field(description="how many of its seeds' jobs are in each status")
    cells: list[SweepCell]
    overall: MeanStd
    many: MeanStd
    medium: MeanStd
    few: MeanStd
    top5: MeanStd
    ece: MeanStd


class SweepPublic(BaseModel):
    id: str
    name: str | None
    status: SweepStatus
    created_at: datetime
    grid: dict[str, list[Any]]
    seeds: list[int]
    jobs: list[JobSummary]
    table: list[SweepRow]
    search: dict[str, Any] | None = None
    best: dict[str, Any] | None = Field(
        None, description="an adaptive sweep's best trial so far: {'params', 'objective', 'job'}"
    )


class SweepSummary(BaseModel):
    id: str
    name: str | None
    status: SweepStatus
    created_at: datetime
    grid: dict[str, list[Any]]
    seeds: list[int]
    num_jobs: int


class SweepList(BaseModel):
    items: list[SweepSummary]
