"""The one settings object of the service, read by the API, the worker and Alembic's ``env.py``.

Every field comes from an environment variable with the ``LIVT_`` prefix (``LIVT_DATA_DIR``,
``LIVT_DATABASE_URL``, ...). The embedded mode (the default) derives everything from the data
directory: a SQLite database, an embedded Celery transport and the artifact folder all live under
it. The production mode takes PostgreSQL and Redis from the environment and refuses to start
without them, so that no address or secret has a usable default outside the embedded mode.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from livt_core.limits import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_IMG_SIZE, MAX_NUM_WORKERS
from livt_core.paths import PathPolicy, confine_path

Mode = Literal["embedded", "production"]


def bundled_data_root() -> Path | None:
    """The folder of the datasets shipped inside ``livt_core`` (found without importing torch)."""
    spec = importlib.util.find_spec("livt_core")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "assets"


class Settings(BaseSettings):
    """Service settings; see ``docs/service.md`` for the meaning of each field."""

    model_config = SettingsConfigDict(env_prefix="LIVT_", extra="ignore", validate_default=True)

    mode: Mode = Field("embedded", description="embedded (one machine) or production")
    data_dir: Path = Field(Path("./livt-data"), description="state directory")
    database_url: str = Field(description="SQLAlchemy URL; embedded: SQLite under data_dir")
    broker_url: str = Field(description="Celery broker; embedded: SQLite transport")
    result_backend: str | None = Field(
        None, description="Celery result backend; unset: none (the job row holds the outcome)"
    )
    artifact_dir: Path = Field(description="one folder per job; embedded: data_dir/artifacts")
    data_roots: Annotated[list[Path], NoDecode] = Field(
        description="comma-separated folders every user-given path must resolve inside"
    )
    max_gpus: int = Field(1, ge=1, description="most GPUs a job may ask for without a worker")
    # Site limits on run settings, below the library's own bounds (livt_core.config.MAX_*):
    # what this site's machines and queue can take from one job.
    max_epochs: int = Field(
        2_000, ge=1, le=MAX_EPOCHS, description="most epochs a job may train (the paper: 800)"
    )
    max_img_size: int = Field(
        1_024, ge=8, le=MAX_IMG_SIZE, description="largest data.img_size in pixels"
    )
    max_batch_size: int = Field(
        4_096, ge=1, le=MAX_BATCH_SIZE, description="largest per-device batch_size"
    )
    max_data_workers: int = Field(
        32, ge=0, le=MAX_NUM_WORKERS, description="most data.num_workers per training process"
    )
    max_sweep_jobs: int = Field(
        200, ge=1, le=10_000, description="most jobs one sweep (POST /sweeps) may create"
    )
    default_queue: str = Field("default", min_length=1)
    allow_unknown_queues: bool = Field(
        False,
        description="accept jobs for a queue no worker has served yet (its workers start later); "
        "unset: such a spec is a 422 naming resources.queue and the known queues",
    )
    worker_address: str | None = Field(
        None,
        description="the address other hosts reach this worker's host at (multi-node "
        "rendezvous); unset: the address the host name resolves to",
    )
    gang_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="how long the nodes of a multi-node job wait for the whole gang before "
        "their slots are released and the job waits in the queue again",
    )
    retention_keep_best_days: float | None = Field(
        None,
        gt=0,
        description="this many days after a job succeeded, the workers delete its checkpoints "
        "except the one later stages start from (finetune: checkpoint-best.pth, pretrain: "
        "checkpoint-last.pth); unset: checkpoints are kept until the job is deleted",
    )
    warm_start: bool = Field(
        True,
        description="fork single-process training runs from a launcher process that has torch "
        "and the engine imported (worker.zygote): the first step comes seconds sooner, for "
        "about 0.7 GB more worker memory; off: every run starts a fresh interpreter",
    )
    heartbeat_seconds: float = Field(5.0, gt=0)
    worker_lost_seconds: float = Field(60.0, gt=0)
    pending_workers_ttl_seconds: float = Field(
        2.0,
        ge=0,
        description="how long an API process reuses the live workers it read for pending "
        "reasons (0: read them on every request)",
    )
    worker_restart_delay_max_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="livt serve: longest wait before restarting its worker after it died",
    )
    requeue_grace_seconds: float = Field(
        60.0,
        gt=0,
        description="a queued job without a message in the broker for this long is sent again",
    )
    bootstrap_token: str | None = Field(
        None, description="if set, an admin token with this value exists once the API starts"
    )
    sweep_advance_seconds: float = Field(
        5.0,
        ge=0,
        description="how often the API tells adaptive sweeps their finished trials and asks "
        "the next ones (0: only reads of a sweep do)",
    )
    webhook_poll_seconds: float = Field(
        2.0,
        ge=0,
        description="how often the API looks for webhook deliveries to make (0: this API "
        "process sends none, another one must)",
    )
    webhook_max_attempts: int = Field(
        6, ge=1, le=30, description="tries of one webhook delivery before it is marked failed"
    )
    webhook_backoff_seconds: float = Field(
        5.0, gt=0, description="wait after the first failed try; doubles after each (max 1 h)"
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="seconds a webhook receiver has to answer"
    )
    metrics_token: SecretStr | None = Field(
        None,
        min_length=16,
        description="a bearer token that may read /metrics only (for Prometheus); unset: admins only",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking server (extra livt[mlflow]): each finished job is logged "
        "there as a run of the experiment livt/<data set>; unset: off",
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="largest request body accepted (413 above it, before it is read)",
    )
    max_json_depth: int = Field(
        32, ge=4, le=1000, description="deepest nesting of a JSON body (422 beyond it)"
    )
    max_json_keys: int = Field(
        10_000, ge=100, description="most object keys in a JSON body, all levels together (422)"
    )
    max_json_items: int = Field(
        10_000, ge=100, description="most array items in a JSON body, all levels together (422)"
    )
    log_stream_poll_seconds: float = Field(
        1.0, gt=0, description="how often the log stream looks for new lines"
    )
    broker_poll_seconds: float = Field(
        0.05,
        gt=0,
        le=10,
        description="how often a worker on the embedded SQLite broker looks for new messages",
    )
    readiness_timeout_seconds: float = Field(
        3.0, gt=0, description="time limit of each /readyz check"
    )
    profile_inline_images: int = Field(
        1000,
        ge=0,
        description="an image folder with at most this many images is profiled in the "
        "POST /datasets request; a larger one by a worker (the dataset is 'profiling' meanwhile)",
    )

    @model_validator(mode="before")
    @classmethod
    def _derive_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        values = {k: v for k, v in data.items() if v not in (None, "")}
        data_dir = Path(values.get("data_dir") or "./livt-data").expanduser().resolve()
        values["data_dir"] = data_dir
        if values.get("mode", "embedded") == "production":
            missing = [
                f"LIVT_{name.upper()}"
                for name in ("database_url", "broker_url")
                if name not in values
            ]
            if missing:
                raise ValueError(
                    f"{' and '.join(missing)} must be set in production mode (no default "
                    "address or secret is used outside the embedded mode); set them, or set "
                    "LIVT_MODE=embedded"
                )
        values.setdefault("database_url", f"sqlite:///{data_dir / 'livt.sqlite'}")
        values.setdefault("broker_url", f"sqla+sqlite:///{data_dir / 'broker.sqlite'}")
        values.setdefault("artifact_dir", data_dir / "artifacts")
        if not values.get("data_roots"):
            bundled = bundled_data_root()
            values["data_roots"] = [data_dir / "datasets"] + ([bundled] if bundled else [])
        return values

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("data_roots")
    @classmethod
    def _resolve_roots(cls, value: list[Path]) -> list[Path]:
        return [root.expanduser().resolve() for root in value]

    @field_validator("artifact_dir")
    @classmethod
    def _resolve_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def embedded(self) -> bool:
        return self.mode == "embedded"

    def job_artifact_dir(self, job_id: str) -> Path:
        """``<artifact_dir>/<job id>``: where a job's run writes its files."""
        return self.artifact_dir / job_id

    def path_policy(self, *checkpoint_roots: Path) -> PathPolicy:
        """Where user paths may point: the data roots, plus ``checkpoint_roots`` for
        checkpoints (e.g. the artifact folder of the job a run starts from)."""
        return PathPolicy(tuple(self.data_roots), tuple(checkpoint_roots))

    def resolve_user_path(self, path: str | Path, *, field: str = "path") -> Path:
        """Resolves a user-given path (symlinks too) and checks it lies inside a data root.

        A relative path is taken relative to the first data root that holds it (else the first
        root). Raises :class:`~livt_core.paths.PathOutsideRootsError` naming ``field`` when the
        result is outside every root (see :func:`livt_core.paths.confine_path`).
        """
        return confine_path(path, self.data_roots, field=field)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once (``cache_clear()`` to reread)."""
    return Settings()
