"""Request and response bodies of the API, one schema per use (see ``docs/service.md``)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from livt_core import catalog
from livt_core.config import CONFIG_CLASSES
from livt_core.contract import (
    FailureReason,
    LongTailResult,
    PretrainSummary,
)
from livt_core.contract import JobStatus as JobStatus
from livt_core.contract import Kind as JobKind
from livt_core.paths import PathStr, SafeStr
from livt_service import models
from livt_service.labels import device_label

_QUEUE_PATTERN = r"^[A-Za-z0-9._-]{1,100}$"
_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"
#: Dataset names (in bodies and in ``/datasets/{name}``).
NAME_PATTERN = _NAME_PATTERN
#: Ids in URLs and bodies (``j_...``, ``p_...``) and artifact names: no NUL, no slash.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
ARTIFACT_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"
#: Most processes one job may ask for (a site's real limit is LIVT_MAX_GPUS / its workers).
MAX_GPUS = 1_024
#: Most hosts one job may span.
MAX_NODES = 256


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("value_error", message)


# --------------------------------------------------------------------------------------------
# job specs


class Resources(BaseModel):
    """What a job needs: GPU processes (``torchrun`` world size) and the Celery queue."""

    model_config = ConfigDict(extra="forbid")

    gpus: Annotated[int, Strict()] = Field(
        1,
        le=MAX_GPUS,
        description="processes (GPUs) the run uses; at most what a worker of the queue offers "
        "(LIVT_MAX_GPUS without one)",
    )
    nodes: Annotated[int, Strict()] = Field(
        1,
        ge=1,
        le=MAX_NODES,
        description="hosts the run spans, gpus processes on each (above 1: gang-scheduled, "
        "production mode)",
    )
    queue: SafeStr | None = Field(
        None,
        description="Celery queue; default LIVT_DEFAULT_QUEUE. Must be a queue some worker has "
        "served, unless LIVT_ALLOW_UNKNOWN_QUEUES is set",
    )

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: int) -> int:
        if value < 1:
            raise _invalid("must be at least 1; set resources.gpus to the number of GPUs to use")
        return value

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(_QUEUE_PATTERN, value):
            raise _invalid(
                "must be 1-100 letters, digits, '.', '_' or '-'; name an existing worker queue"
            )
        return value


class InitRef(BaseModel):
    """Where a finetune / evaluate run starts from: a job of this service or a checkpoint file."""

    model_config = ConfigDict(extra="forbid")

    job: str | None = Field(
        None, pattern=ID_PATTERN, description="id of a succeeded pretrain or finetune job"
    )
    checkpoint: PathStr | None = Field(None, description="checkpoint path inside the data roots")

    @model_validator(mode="after")
    def _exactly_one(self) -> InitRef:
        if (self.job is None) == (self.checkpoint is None):
            raise _invalid('set exactly one of init.job and init.checkpoint, e.g. {"job": "j_..."}')
        return self


# --------------------------------------------------------------------------------------------
# the run fields of a job spec, in its JSON schema: generated from the livt_core config models

#: Config fields a job spec does not take as run fields: ``kind`` (the spec's own), ``init``
#: (the service's :class:`InitRef`) and ``checkpoint`` (set from ``init``).
_NOT_RUN_FIELDS = frozenset({"kind", "init", "checkpoint"})
#: Constraint names pydantic leaves in a schema when a validator wraps the type → JSON Schema.
_CONSTRAINT_KEYWORDS = {
    "le": "maximum",
    "ge": "minimum",
    "lt": "exclusiveMaximum",
    "gt": "exclusiveMinimum",
}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``$ref`` to ``defs`` replaced by the definition, pydantic's leftover
    constraint names made JSON Schema keywords, and no ``required`` (run fields are partial
    overrides of the preset and its defaults)."""
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return _inline({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("required", "title"):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _inline(v, defs) for name, v in value.items()}
        elif key in _CONSTRAINT_KEYWORDS and isinstance(value, int | float):
            out.setdefault(_CONSTRAINT_KEYWORDS[key], value)
        else:
            out[key] = _inline(value, defs)
    return out


def run_fields_schema(kind: str) -> dict[str, Any]:
    """JSON schemas of the run fields of a ``kind`` job spec: every field of the ``livt_core``
    config of that kind with its type, bounds, enum, default and description; model, loss and
    data set names from ``livt_core.catalog``."""
    schema = CONFIG_CLASSES[kind].model_json_schema(mode="validation")
    defs = schema.get("$defs", {})
    fields = {
        name: _inline(sub, defs)
        for name, sub in schema["properties"].items()
        if name not in _NOT_RUN_FIELDS
    }
    family = "mae" if kind == "pretrain" else "vit"
    models_ = [m for m in catalog.list_models() if catalog.model_family(m) == family]
    fields["model"].update(enum=models_, description=f"the {family} model (GET /presets)")
    if "loss" in fields:
        fields["loss"].update(enum=catalog.list_losses(), description="training loss")
    dataset = fields["data"]["properties"]["dataset"]
    dataset["enum"] = list(catalog.DATASET_NAMES)
    return fields


def _spec_schema(kind: str, example: dict[str, Any]) -> Any:
    """``json_schema_extra`` of a job spec: its run fields typed, nothing else accepted."""

    def extra(schema: dict[str, Any]) -> None:
        properties = schema.setdefault("properties", {})
        for name, sub in run_fields_schema(kind).items():
            properties.setdefault(name, sub)
        schema["additionalProperties"] = False
        schema["examples"] = [example]

    return extra


class _JobSpecBase(BaseModel):
    """Service fields of a job spec; every other key is a run field of the ``livt_core`` config
    of that kind (``model``, ``epochs``, ``blr``, ``loss``, ``data`` ...): validated by
    ``resolve_config`` and typed in the JSON schema (:func:`run_fields_schema`)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: SafeStr | None = Field(None, max_length=200, description="a label for people")
    preset: SafeStr | None = Field(
        None, max_length=100, description="per-dataset defaults, see GET /presets"
    )
    idempotency_key: SafeStr | None = Field(
        None, min_length=1, max_length=200, description="repeating it returns the existing job"
    )
    resources: Resources = Field(default_factory=Resources)
    dataset: SafeStr | None = Field(
        None, max_length=100, description="a registered dataset; fills data.*"
    )

    def run_fields(self) -> dict[str, Any]:
        """The keys that are not service fields: overrides of the run config."""
        return dict(self.model_extra or {})


class _InitJobSpec(_JobSpecBase):
    init: InitRef | None = Field(
        None, description="start from a job's checkpoint or from a checkpoint file"
    )

    @field_validator("init", mode="before")
    @classmethod
    def _init_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise _invalid(
                'init is an object; write {"job": "<job id>"} or {"checkpoint": "<path>"}'
            )
        return value


class PretrainJobCreate(_JobSpecBase):
    """MGP: masked generative pretraining of an MAE model on the long-tailed training set."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra=_spec_schema(
            "pretrain", {"kind": "pretrain", "preset": "fashion-mnist-lt", "epochs": 1}
        ),
    )

    kind: Literal["pretrain"]


class FinetuneJobCreate(_InitJobSpec):
    """BFT: balanced fine-tuning of a ViT classifier, from a pretrain job or a checkpoint."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra=_spec_schema(
            "finetune",
            {
                "kind": "finetune",
                "preset": "fashion-mnist-lt",
                "init": {"job": "j_01hx0000000000000000000000"},
                "loss": "bal_bce",
                "epochs": 1,
            },
        ),
    )

    kind: Literal["finetune"]


class EvaluateJobCreate(_InitJobSpec):
    """Long-tail evaluation of a finetune job's best checkpoint (or a checkpoint file)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra=_spec_schema(
            "evaluate",
            {
                "kind": "evaluate",
                "preset": "fashion-mnist-lt",
                "init": {"job": "j_01hx0000000000000000000000"},
                "split": "test",
            },
        ),
    )

    kind: Literal["evaluate"]


JobCreate = Annotated[
    PretrainJobCreate | FinetuneJobCreate | EvaluateJobCreate, Field(discriminator="kind")
]
JobSpec = PretrainJobCreate | FinetuneJobCreate | EvaluateJobCreate


class PipelineCreate(BaseModel):
    """Stages that run one after another; a stage without ``init`` starts from the previous
    stage's checkpoint."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "fmnist",
                    "stages": [
                        {"kind": "pretrain", "preset": "fashion-mnist-lt", "epochs": 1},
                        {"kind": "finetune", "preset": "fashion-mnist-lt", "epochs": 1},
                        {"kind": "evaluate", "preset": "fashion-mnist-lt"},
                    ],
                }
            ]
        },
    )

    name: SafeStr | None = Field(None, max_length=200)
    stages: list[JobCreate] = Field(min_length=1, max_length=20)


# --------------------------------------------------------------------------------------------
# jobs


class JobProgress(BaseModel):
    """Live position of a running job (0-based ``epoch`` of ``epochs``, ``step`` of ``steps``)."""

    model_config = ConfigDict(extra="allow")

    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    global_step: int | None = None
    loss: float | None = None
    lr: float | None = None
    images_per_sec: float | None = None
    eta_seconds: float | None = None
    updated_at: datetime | None = None


def _result_type(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return "pretrain" if kind == "pretrain" else "long_tail"


#: The result of a finished run: a pretrain summary, or the long-tail report of the others.
JobResult = Annotated[
    Annotated[PretrainSummary, Tag("pretrain")] | Annotated[LongTailResult, Tag("long_tail")],
    Discriminator(_result_type),
]


class JobFailure(BaseModel):
    reason: FailureReason
    message: str


class JobSummary(BaseModel):
    """A job as listed by ``GET /jobs`` (``JobPublic`` without ``spec`` and ``config``)."""

    id: str
    kind: JobKind
    name: str
    status: JobStatus
    owner: str
    preset: str | None
    dataset: str | None
    model: str
    loss: str | None
    queue: str
    gpus: int
    nodes: int = Field(1, description="hosts the run spans, gpus processes on each")
    devices: str = Field(description="what it runs on: CPU, 1 GPU, 2 nodes × 4 GPUs")
    pending_reason: str | None = Field(
        None, description="why a queued job waits (None for any other status)"
    )
    attempt: int
    progress: JobProgress | None
    result: JobResult | None
    failure: JobFailure | None
    pipeline_id: str | None
    stage: int | None
    init_job_id: str | None
    depends_on: str | None
    idempotency_key: str | None
    tags: list[str] = Field(default_factory=list)
    notes: str | None = None
    sweep_id: str | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def _fields_of(cls, job: models.Job, pending_reason: str | None = None) -> dict[str, Any]:
        failure = None
        if job.failure_reason is not None:
            failure = JobFailure(
                reason=job.failure_reason,  # type: ignore[arg-type]
                message=job.failure_message or "",
            )
        return {
            "id": job.id,
            "kind": job.kind,
            "name": job.name,
            "status": job.status,
            "owner": job.owner.name,
            "preset": job.preset,
            "dataset": job.dataset,
            "model": job.model,
            "loss": job.loss,
            "queue": job.queue,
            "gpus": job.gpus,
            "nodes": job.nodes or 1,
            "devices": device_label(job),
            "pending_reason": pending_reason if job.status == "queued" else None,
            "attempt": job.attempt,
            "progress": job.progress,
            "result": job.result,
            "failure": failure,
            "pipeline_id": job.pipeline_id,
            "stage": job.stage,
            "init_job_id": job.init_job_id,
            "depends_on": job.depends_on,
            "idempotency_key": job.idempotency_key,
            "tags": job.tags or [],
            "notes": job.notes,
            "sweep_id": job.sweep_id,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "updated_at": job.updated_at,
        }

    @classmethod
    def from_job(cls, job: models.Job, pending_reason: str | None = None) -> JobSummary:
        return cls.model_validate(cls._fields_of(job, pending_reason))


class JobPublic(JobSummary):
    """A job with the spec it was submitted with and its fully resolved run config."""

    spec: dict[str, Any]
    config: dict[str, Any]

    @classmethod
    def from_job(cls, job: models.Job, pending_reason: str | None = None) -> JobPublic:
        fields = cls._fields_of(job, pending_reason)
        return cls.model_validate({**fields, "spec": job.spec, "config": job.config})


class JobList(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")


class MetricPointPublic(BaseModel):
    epoch: int = Field(description="the epoch (0-based); of a step point, the epoch it lies in")
    metrics: dict[str, Any] = Field(
        description="epoch level: train_loss, lr, val_overall, val_many, val_medium, val_few, "
        "...; step level: loss, lr, images_per_sec"
    )
    global_step: int | None = Field(
        None, description="step level only: the training step (0-based, across epochs)"
    )


class MetricHistory(BaseModel):
    job_id: str
    level: Literal["epoch", "step"] = "epoch"
    items: list[MetricPointPublic]


class LogLinePublic(BaseModel):
    seq: int
    ts: datetime
    level: str
    message: str


class LogPage(BaseModel):
    """Log lines from an offset; ``finished``: the job is over and no line follows these."""

    job_id: str
    lines: list[LogLinePublic]
    next_offset: int
    finished: bool


class ArtifactPublic(BaseModel):
    name: str
    kind: str
    size_bytes: int
    created_at: datetime
    url: str


class ArtifactList(BaseModel):
    items: list[ArtifactPublic]


class PipelinePublic(BaseModel):
    id: str
    name: str | None
    jobs: list[JobPublic]


# --------------------------------------------------------------------------------------------
# datasets, presets, health


class DatasetCreate(BaseModel):
    """A dataset root to register; ``params`` are ``data.*`` settings (``imbalance_factor``,
    ``n_max``, ``lt_seed``, split files ...) used with it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "fmnist", "kind": "fashion-mnist-lt", "root": "fashion-mnist"}]
        },
    )

    name: str = Field(pattern=_NAME_PATTERN, description="lowercase letters, digits, . _ -")
    kind: SafeStr = Field(
        max_length=100, description="a dataset type of livt_core.data (e.g. imagefolder)"
    )
    root: PathStr | None = Field(None, description="folder inside the data roots; None = bundled")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="data.* settings; split files (train_split, ...) are relative to root",
    )


class ShotGroups(BaseModel):
    """Class ids by training count: many > 100, medium 20-100, few < 20."""

    many: list[int]
    medium: list[int]
    few: list[int]


DatasetStatus = Literal["profiling", "ready", "failed"]


class DatasetProgress(BaseModel):
    """Images read by the profiling so far, of ``total``."""

    done: int
    total: int | None


class DatasetPublic(BaseModel):
    """A registered dataset. An ``imagefolder`` has a ``profile`` (``livt_core.data.profile``)
    once ``status`` is ``ready``; while ``profiling`` the class counts come from the file
    names and ``progress`` counts the images read; ``failed`` says why in ``status_reason``."""

    name: str
    kind: str
    root: str | None
    params: dict[str, Any]
    classes: list[str]
    class_counts: list[int]
    shot_groups: ShotGroups
    num_train: int
    created_at: datetime
    status: DatasetStatus = "ready"
    status_reason: str | None = None
    progress: DatasetProgress | None = None
    profile: dict[str, Any] | None = None


class DatasetList(BaseModel):
    items: list[DatasetPublic]


class PresetPublic(BaseModel):
    name: str
    configs: dict[JobKind, dict[str, Any]] = Field(
        description="the fully resolved run config of each kind under this preset"
    )


class PresetList(BaseModel):
    items: list[PresetPublic]
    defaults: dict[JobKind, dict[str, Any]] = Field(description="run configs without a preset")
    models: dict[JobKind, list[str]] = Field(description="model names each kind accepts")
    losses: list[str]
    datasets: list[str] = Field(description="dataset types (data.dataset)")


# --------------------------------------------------------------------------------------------
# tokens

TokenStatus = Literal["active", "expired", "revoked"]


class TokenPublic(BaseModel):
    """An API token as people see it: never its value or hash, ``prefix`` tells it apart."""

    id: int
    user: str
    prefix: str
    status: TokenStatus
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_token(cls, token: models.ApiToken) -> TokenPublic:
        return cls(
            id=token.id,
            user=token.user.name,
            prefix=token.prefix,
            status=token.status(),  # type: ignore[arg-type]
            created_at=token.created_at,
            last_used_at=token.last_used_at,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
        )


class TokenList(BaseModel):
    items: list[TokenPublic]


class ErrorMessage(BaseModel):
    """An error answer whose ``detail`` is one sentence naming the problem and the fix."""

    detail: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    database: str
    broker: str
