"""The run contract between a training run (``livt_core``) and whoever runs it (the job service,
its client, the ``livt train`` command): every name both sides must agree on, declared once.

- the run kinds and the job statuses,
- the files of a run folder,
- the event stream (``events.jsonl``): event types and the fields of each,
- the result types (:class:`LongTailResult`, :class:`PretrainSummary`),
- the failure reasons and the exit status of ``livt train`` for each.

Channels between a training child and the worker, one per piece of data: progress, per-epoch
metrics, checkpoints, the result and a typed failure travel as events in ``events.jsonl``;
output lines travel on stdout/stderr; cancellation travels the other way as the stop file. The
other files of the run folder (``history.json``, ``results.json``, checkpoints) are artifacts
for people and for the engine's own resuming, not messages: the worker reads none of them. A
resumed run therefore repeats the ``epoch`` events of the epochs it continues after (from its
history) right after ``start``.

This module imports neither torch nor anything of the service, so that every layer can use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

# ------------------------------------------------------------------------- kinds and statuses

Kind = Literal["pretrain", "finetune", "evaluate"]
KINDS: tuple[str, ...] = ("pretrain", "finetune", "evaluate")

JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
JOB_STATUSES: tuple[str, ...] = (
    "queued",
    "running",
    "cancelling",
    "succeeded",
    "failed",
    "cancelled",
)
#: A job in one of these states never changes again (unless it is retried).
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
#: A worker owns a job in one of these states.
ACTIVE_STATUSES = frozenset({"running", "cancelling"})
#: How a run ends (the ``status`` of the ``end`` event).
END_STATUSES: tuple[str, ...] = ("succeeded", "failed", "cancelled")

# ------------------------------------------------------------------------- the environment

#: The number of cores a launcher gives a training process (``livt_core.perf`` sizes torch's
#: threads and the auto loader processes by it).
JOB_CPUS_ENV = "LIVT_JOB_CPUS"
#: The most loader processes an auto ``data.num_workers`` may start (the job service passes its
#: site limit, which explicit values are checked against at submit).
MAX_WORKERS_ENV = "LIVT_MAX_DATA_WORKERS"

# ------------------------------------------------------------------------- the run folder

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
RESULTS_FILE = "results.json"
EVENTS_FILE = "events.jsonl"
LAST_CHECKPOINT = "checkpoint-last.pth"
BEST_CHECKPOINT = "checkpoint-best.pth"
#: Created by the worker to ask the run to stop (``--stop-file``).
STOP_FILE = "STOP"
#: The number of the attempt of a job that owns the run folder (``livt_core.fence``).
ATTEMPT_FILE = "ATTEMPT"
#: Held (``flock``) while an attempt's write checks the owner, and while an attempt takes over.
ATTEMPT_LOCK_FILE = ".attempt.lock"
#: Folder of each attempt's own files: ``attempts/<n>/events.jsonl`` (``EVENTS_FILE``) and
#: ``attempts/<n>/STOP`` (``STOP_FILE``).
ATTEMPTS_DIR = "attempts"
#: The weights export of a finished run (``livt_core.export``): safetensors, config in metadata.
EXPORT_FILE = "model.safetensors"
#: TensorBoard event files of a run, one per attempt (``livt_core.tensorboard``); TensorBoard
#: reads every file whose name holds ``tfevents``.
TENSORBOARD_PREFIX = "events.out.tfevents."

#: The files of a run folder the service registers as artifacts, with their kind.
#: MGP's input / masked / reconstruction grid of fixed validation images (pretrain jobs).
RECONSTRUCTION_FILE = "reconstruction.png"
ARTIFACT_KINDS: dict[str, str] = {
    RECONSTRUCTION_FILE: "image",
    LAST_CHECKPOINT: "checkpoint",
    BEST_CHECKPOINT: "checkpoint",
    CONFIG_FILE: "config",
    RESULTS_FILE: "results",
    HISTORY_FILE: "history",
    EXPORT_FILE: "export",
}
TENSORBOARD_KIND = "tensorboard"


def artifact_kind(name: str) -> str | None:
    """The artifact kind of a file name of a run folder (None: not an artifact)."""
    if name in ARTIFACT_KINDS:
        return ARTIFACT_KINDS[name]
    if name.startswith(TENSORBOARD_PREFIX) and "/" not in name:
        return TENSORBOARD_KIND
    return None


#: Most step points (loss, lr, speed) kept per job: the database and TensorBoard keep the first
#: step of each of at most this many equal spans of the run's steps.
MAX_STEP_POINTS = 2000


def step_bucket(global_step: int, total_steps: int, max_points: int = MAX_STEP_POINTS) -> int:
    """The span (0 … ``max_points`` - 1) of the run's ``total_steps`` that a step lies in;
    ``global_step`` is the step event's (1 … ``total_steps``: the steps done, this one
    included). One point per span bounds the points of a run whatever its length."""
    index = max(int(global_step) - 1, 0)
    total = max(int(total_steps), 1)
    return min(
        index * max_points // total if total > max_points else index, total - 1, max_points - 1
    )


#: The checkpoint of a finished job that a later stage starts from, by the job's kind.
INIT_CHECKPOINT: dict[str, str] = {"pretrain": LAST_CHECKPOINT, "finetune": BEST_CHECKPOINT}

# ------------------------------------------------------------------------- the event stream

START, STEP, EPOCH, CHECKPOINT, RESULT, ERROR, END = (
    "start",
    "step",
    "epoch",
    "checkpoint",
    "result",
    "error",
    "end",
)
EVENT_TYPES: tuple[str, ...] = (START, STEP, EPOCH, CHECKPOINT, RESULT, ERROR, END)


class StartEvent(TypedDict):
    """``threads``, ``num_workers`` and ``cpus``: the torch threads and loader processes rank 0
    runs and its share of cores (``livt_core.perf.plan_cpus``)."""

    type: Literal["start"]
    time: float
    kind: str
    epochs: int
    start_epoch: int
    steps_per_epoch: int
    world_size: int
    threads: int
    num_workers: int
    cpus: int


class StepEvent(TypedDict):
    """Epochs and steps count from 0 (``epoch`` of ``epochs``)."""

    type: Literal["step"]
    time: float
    epoch: int
    epochs: int
    step: int
    steps: int
    global_step: int
    loss: float | None
    lr: float
    images_per_sec: float | None
    eta_seconds: float | None


class EpochEvent(TypedDict):
    """One per trained epoch; a resumed run first repeats those of the epochs before its
    ``start_epoch`` (from the history it resumed), right after ``start``."""

    type: Literal["epoch"]
    time: float
    epoch: int
    metrics: dict[str, Any]


class CheckpointEvent(TypedDict):
    type: Literal["checkpoint"]
    time: float
    name: Literal["last", "best"]
    path: str
    epoch: int


class ResultEvent(TypedDict):
    type: Literal["result"]
    time: float
    result: dict[str, Any]


class ErrorEvent(TypedDict):
    type: Literal["error"]
    time: float
    reason: str
    message: str


class EndEvent(TypedDict):
    type: Literal["end"]
    time: float
    status: Literal["succeeded", "failed", "cancelled"]


def _fields(event: type) -> tuple[str, ...]:
    return tuple(k for k in event.__annotations__ if k not in ("type", "time"))


#: The fields of each event type, besides ``type`` and ``time``.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    START: _fields(StartEvent),
    STEP: _fields(StepEvent),
    EPOCH: _fields(EpochEvent),
    CHECKPOINT: _fields(CheckpointEvent),
    RESULT: _fields(ResultEvent),
    ERROR: _fields(ErrorEvent),
    END: _fields(EndEvent),
}
#: A job's ``progress``: the fields of its latest step event.
PROGRESS_FIELDS: tuple[str, ...] = EVENT_FIELDS[STEP]

# ------------------------------------------------------------------------- results


class LongTailResult(BaseModel):
    """The result of a finetune or evaluate run (``long_tail_report`` of the reported split):
    accuracies in percent, None for an empty group. Further keys of the report are kept: a
    finetune adds ``selection_split`` (the split the best epoch was chosen on) and
    ``split_rule`` (in words, which split chose the epoch and which is reported); an evaluate
    run with ``posthoc_tau`` adds ``posthoc`` (``[{"tau", "overall", "many", "medium", "few"}]``),
    ``posthoc_best_tau`` and ``calibration`` (``{"ece", "ece_scaled", "temperature",
    "fit_split"}``, see ``livt_core.posthoc``). Every run adds ``runtime``: ``{"threads",
    "num_workers", "cpus"}``, the torch threads and loader processes it ran with on its share of
    cores."""

    model_config = ConfigDict(extra="allow")

    overall: float | None = None
    many: float | None = None
    medium: float | None = None
    few: float | None = None
    top5: float | None = None
    ece: float | None = None
    mce: float | None = None
    pdc: float | None = None
    per_class: list[Any] = Field(default_factory=list)
    class_counts: list[int] = Field(default_factory=list)
    split: str | None = None
    class_counts_source: str | None = None


class PretrainSummary(BaseModel):
    """The result of a pretrain (MGP) run: its loss summary and the encoder's checkpoint (and
    ``runtime``, as in :class:`LongTailResult`)."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["pretrain"] = "pretrain"
    epochs: int | None = None
    final_loss: float | None = None
    min_loss: float | None = None
    checkpoint: str | None = None


#: The shot groups of a long-tail result, by training images per class.
SHOT_GROUPS: tuple[str, ...] = ("many", "medium", "few")


def shot_groups(
    class_counts: Sequence[int], many_thr: int = 100, few_thr: int = 20
) -> dict[str, list[int]]:
    """Split classes by their **training** count into shot groups.

    Many: ``n_c > many_thr``; Medium: ``few_thr ≤ n_c ≤ many_thr``; Few: ``n_c < few_thr``
    (the standard 100 / 20 thresholds by default).

    Returns:
        ``{"many": [class ids], "medium": [...], "few": [...]}``, ids ascending.
    """
    if few_thr > many_thr:
        raise ValueError(f"few_thr ({few_thr}) must not exceed many_thr ({many_thr})")
    groups: dict[str, list[int]] = {name: [] for name in SHOT_GROUPS}
    for cls, count in enumerate(class_counts):
        if count < 0:
            raise ValueError(f"class {cls} has a negative count {count}")
        if count > many_thr:
            groups["many"].append(cls)
        elif count < few_thr:
            groups["few"].append(cls)
        else:
            groups["medium"].append(cls)
    return groups


# ------------------------------------------------------------------------- failures

FailureReason = Literal[
    "invalid_data", "non_finite_loss", "out_of_memory", "worker_lost", "internal"
]
#: Why a job failed, as the service stores and reports it.
FAILURE_REASONS: tuple[str, ...] = (
    "invalid_data",
    "non_finite_loss",
    "out_of_memory",
    "worker_lost",
    "internal",
)

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_CANCELLED = 3
#: Exit status of ``livt train`` (and of ``livt wait`` / ``livt results`` for a finished job)
#: by the reason of the run's error (``LivtError.reason``).
EXIT_CODES: dict[str, int] = {
    "internal": EXIT_INTERNAL,
    "invalid_config": EXIT_CONFIG,
    "cancelled": EXIT_CANCELLED,
    "invalid_data": 4,
    "non_finite_loss": 5,
    "out_of_memory": 6,
}


def exit_code(reason: str) -> int:
    """The exit status for an error ``reason`` (1 for a reason without its own)."""
    return EXIT_CODES.get(reason, EXIT_INTERNAL)


#: Exit status of a training child → the job's failure reason. A config the service accepted
#: but the run rejects is the data's fault (e.g. a class count the data set does not have), so
#: ``invalid_config`` counts as ``invalid_data`` here. Any other status is ``internal``.
EXIT_FAILURE_REASONS: dict[int, str] = {
    EXIT_CONFIG: "invalid_data",
    **{code: reason for reason, code in EXIT_CODES.items() if reason in FAILURE_REASONS[:3]},
}
