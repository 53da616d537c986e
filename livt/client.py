"""Python client of the LiVT job service (the REST contract in ``docs/service.md``).

>>> from livt.client import LivtClient
>>> with LivtClient("http://127.0.0.1:8000", token) as client:
...     job = client.submit({"kind": "finetune", "preset": "fashion-mnist-lt", "epochs": 2})
...     job = client.wait(job.id)
...     print(job.result.many, job.result.medium, job.result.few, job.result.overall)

Every call returns typed objects (:class:`Job`, :class:`JobPage`, :class:`Metrics`, ...); an error
answer raises :class:`LivtApiError` whose ``errors`` list the bad fields of a 422, and a server
that cannot be reached raises :class:`LivtConnectionError`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from livt_core import contract

logger = logging.getLogger(__name__)

#: Statuses after which a job no longer changes on its own.
TERMINAL_STATUSES = contract.TERMINAL_STATUSES


class LivtClientError(Exception):
    """Base class of the client's errors."""


class LivtConnectionError(LivtClientError):
    """The server could not be reached (refused, unknown host, timeout)."""

    def __init__(self, url: str, cause: Exception) -> None:
        self.url = url
        self.cause = cause
        super().__init__(f"cannot reach {url}: {cause}; is the server running at {url}?")


@dataclass(frozen=True)
class FieldError:
    """One entry of a 422 answer: the field path, what is wrong and how to fix it."""

    field: str
    message: str
    type: str | None = None

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class LivtApiError(LivtClientError):
    """The server answered with an error status.

    ``detail`` is the ``detail`` member of the answer (a string, or a list of FastAPI validation
    entries for 422); ``errors`` holds those entries as :class:`FieldError` (field + message).
    """

    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail
        self.errors = _field_errors(detail)
        super().__init__(self._describe())

    def _describe(self) -> str:
        if self.errors:
            return f"HTTP {self.status}: " + "; ".join(str(e) for e in self.errors)
        return f"HTTP {self.status}: {self.detail}"


def _field_errors(detail: Any) -> list[FieldError]:
    if not isinstance(detail, list):
        return []
    out = []
    for item in detail:
        if not isinstance(item, Mapping):
            out.append(FieldError("request", str(item)))
            continue
        loc = [str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path")]
        out.append(
            FieldError(".".join(loc) or "request", str(item.get("msg", "")), item.get("type"))
        )
    return out


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


_T = TypeVar("_T")


def _decode(cls: type[_T], data: Mapping[str, Any], **given: Any) -> _T:
    """The dataclass ``cls`` from a JSON object: each field from the key of its name (timestamps
    parsed), a missing key leaves the field's default, and ``given`` values win."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in given:
            values[f.name] = given[f.name]
        elif f.name in data:
            values[f.name] = _time(data[f.name]) if "datetime" in str(f.type) else data[f.name]
    return cls(**values)


@dataclass(frozen=True)
class Progress:
    """Live position of a running job; ``epoch`` and ``step`` are 0-based."""

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

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Progress:
        return _decode(cls, data)

    @property
    def fraction(self) -> float | None:
        """Share of the run done, in [0, 1], or None when the size is not known yet."""
        if not self.epochs:
            return None
        within = (self.step + 1) / self.steps if self.steps and self.step is not None else 0.0
        return min(1.0, ((self.epoch or 0) + min(within, 1.0)) / self.epochs)


@dataclass(frozen=True)
class Result:
    """Long-tail report of a finished finetune / evaluate job (accuracies in percent).

    ``per_class`` holds ``{"class", "name", "accuracy", "train_count", "support", "group"}`` per
    class; keys of the report not named here (e.g. ``confusion_matrix``) are kept in ``extra``.
    """

    overall: float | None = None
    many: float | None = None
    medium: float | None = None
    few: float | None = None
    top5: float | None = None
    ece: float | None = None
    mce: float | None = None
    pdc: float | None = None
    per_class: list[dict[str, Any]] = field(default_factory=list)
    class_counts: list[int] = field(default_factory=list)
    group_sizes: dict[str, int] = field(default_factory=dict)
    num_samples: int | None = None
    split: str | None = None
    class_counts_source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Result:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names and v is not None}
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})


@dataclass(frozen=True)
class Failure:
    """Why a job failed: ``reason`` is one of invalid_data, non_finite_loss, out_of_memory,
    worker_lost, internal."""

    reason: str
    message: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Failure:
        return cls(reason=str(data.get("reason", "internal")), message=str(data.get("message", "")))


@dataclass(frozen=True)
class Job:
    """A job as the service reports it (``JobPublic``); ``spec`` and ``config`` are None in
    list answers."""

    id: str
    kind: str
    status: str
    name: str | None = None
    owner: str | None = None
    preset: str | None = None
    dataset: str | None = None
    model: str | None = None
    loss: str | None = None
    queue: str | None = None
    gpus: int = 1
    nodes: int = 1
    #: what it runs on: ``CPU``, ``1 GPU``, ``2 nodes × 4 GPUs``
    devices: str | None = None
    #: why a queued job waits (None for any other status)
    pending_reason: str | None = None
    attempt: int = 1
    progress: Progress | None = None
    result: Result | None = None
    failure: Failure | None = None
    pipeline_id: str | None = None
    stage: int | None = None
    init_job_id: str | None = None
    depends_on: str | None = None
    idempotency_key: str | None = None
    tags: list[str] = field(default_factory=list)
    notes: str | None = None
    sweep_id: str | None = None
    spec: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        progress = data.get("progress")
        result = data.get("result")
        failure = data.get("failure")
        return _decode(
            cls,
            data,
            id=data["id"],
            kind=data["kind"],
            status=data["status"],
            gpus=int(data.get("gpus") or 1),
            nodes=int(data.get("nodes") or 1),
            attempt=int(data.get("attempt") or 1),
            progress=Progress.from_json(progress) if progress else None,
            result=Result.from_json(result) if result else None,
            failure=Failure.from_json(failure) if failure else None,
        )

    @property
    def finished(self) -> bool:
        """True once the job is succeeded, failed or cancelled."""
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class JobPage:
    """One page of ``GET /jobs``, newest first; pass ``next_cursor`` to get the next one."""

    items: list[Job]
    next_cursor: str | None


@dataclass(frozen=True)
class MetricPoint:
    """Metrics of one epoch (0-based): ``train_loss``, ``lr``, ``val_overall``, ``val_many``, ..."""

    epoch: int
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class Metrics:
    """Per-epoch history of a job."""

    job_id: str
    items: list[MetricPoint]

    def series(self, name: str) -> list[tuple[int, float]]:
        """``[(epoch, value), ...]`` of one metric, skipping epochs that lack it."""
        return [(p.epoch, v) for p in self.items if (v := p.metrics.get(name)) is not None]


@dataclass(frozen=True)
class LogLine:
    seq: int
    message: str
    level: str = "INFO"
    ts: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LogLine:
        return cls(
            seq=int(data.get("seq", 0)),
            message=str(data.get("message", "")),
            level=str(data.get("level") or "INFO"),
            ts=_time(data.get("ts")),
        )


@dataclass(frozen=True)
class LogChunk:
    """Log lines from an offset; read on from ``next_offset``. ``finished``: the job is over and
    no more lines will come."""

    job_id: str
    lines: list[LogLine]
    next_offset: int
    finished: bool


@dataclass(frozen=True)
class Artifact:
    name: str
    kind: str
    size_bytes: int
    url: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class Dataset:
    """A registered dataset with its class counts and many / medium / few class groups."""

    name: str
    kind: str
    root: str | None
    params: dict[str, Any]
    classes: list[str]
    class_counts: list[int]
    shot_groups: dict[str, list[int]]
    num_train: int | None
    created_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Dataset:
        return cls(
            name=data["name"],
            kind=data.get("kind", ""),
            root=data.get("root"),
            params=dict(data.get("params") or {}),
            classes=list(data.get("classes") or []),
            class_counts=list(data.get("class_counts") or []),
            shot_groups=dict(data.get("shot_groups") or {}),
            num_train=data.get("num_train"),
            created_at=_time(data.get("created_at")),
        )


@dataclass(frozen=True)
class Pipeline:
    """Stages chained pretrain → finetune → evaluate; ``jobs`` in stage order."""

    id: str
    name: str | None
    jobs: list[Job]


@dataclass(frozen=True)
class Sweep:
    """A grid × seeds of jobs (``POST /sweeps``). ``table`` has one row per grid point:
    ``{"params", "n", "status", "cells", "overall": {"mean", "std", "n"}, "many", "medium",
    "few", "top5", "ece"}``; ``status`` is ``running`` until every job is finished (and an
    adaptive sweep has asked and told all its trials)."""

    id: str
    name: str | None
    status: str
    grid: dict[str, list[Any]]
    seeds: list[int]
    jobs: list[Job]
    table: list[dict[str, Any]]
    created_at: datetime | None = None
    search: dict[str, Any] | None = None
    best: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sweep:
        return cls(
            id=data["id"],
            name=data.get("name"),
            status=data["status"],
            grid=dict(data.get("grid") or {}),
            seeds=list(data.get("seeds") or []),
            jobs=[Job.from_json(j) for j in data.get("jobs", [])],
            table=list(data.get("table") or []),
            created_at=_time(data.get("created_at")),
            search=data.get("search"),
            best=data.get("best"),
        )

    @property
    def finished(self) -> bool:
        return self.status != "running"


@dataclass(frozen=True)
class Token:
    """An API token as the service shows it: never its value; ``prefix`` tells it apart."""

    id: int
    user: str
    prefix: str
    status: str  # active | expired | revoked
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Token:
        return _decode(cls, data)


class LivtClient:
    """Talks to one LiVT job service.

    Args:
        url: the service's base URL, e.g. ``http://127.0.0.1:8000``.
        token: an API token (``livt token create --name NAME``).
        timeout: seconds to wait for each answer.
    """

    def __init__(self, url: str, token: str | None, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LivtClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # transport -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise LivtConnectionError(self.url, exc) from exc
        _raise_for_status(response)
        return response.json() if response.content else None

    # service -------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok"}`` when the API process is up."""
        return self._request("GET", "/healthz")

    def ready(self) -> dict[str, Any]:
        """``GET /readyz``: database and broker reachability (raises on 503)."""
        return self._request("GET", "/readyz")

    def presets(self) -> dict[str, Any]:
        """``GET /presets``: the presets with their resolved defaults per kind."""
        return self._request("GET", "/presets")

    # jobs ----------------------------------------------------------------------------------

    def submit(self, spec: Mapping[str, Any]) -> Job:
        """Submits one job spec (``{"kind": "finetune", "preset": ..., ...}``)."""
        return Job.from_json(self._request("POST", "/jobs", json=dict(spec)))

    def submit_pipeline(
        self, stages: Sequence[Mapping[str, Any]], name: str | None = None
    ) -> Pipeline:
        """Submits stages that run one after another, each from the previous one's artifact."""
        body: dict[str, Any] = {"stages": [dict(s) for s in stages]}
        if name is not None:
            body["name"] = name
        return _pipeline(self._request("POST", "/pipelines", json=body))

    def pipeline(self, pipeline_id: str) -> Pipeline:
        return _pipeline(self._request("GET", f"/pipelines/{pipeline_id}"))

    def jobs(
        self,
        status: str | None = None,
        kind: str | None = None,
        *,
        tag: str | None = None,
        dataset: str | None = None,
        loss: str | None = None,
        model: str | None = None,
        q: str | None = None,
        sort: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of the caller's jobs, newest first unless ``sort`` says otherwise
        (``"-few"``: highest few-shot accuracy first; ``created_at``, ``overall``, ``many``,
        ``medium``, ``few``). The filters combine; ``q`` is a substring of the name."""
        params: dict[str, Any] = {"limit": limit}
        filters = {
            "status": status,
            "kind": kind,
            "tag": tag,
            "dataset": dataset,
            "loss": loss,
            "model": model,
            "q": q,
            "sort": sort,
            "cursor": cursor,
        }
        params.update({key: value for key, value in filters.items() if value is not None})
        data = self._request("GET", "/jobs", params=params)
        return JobPage(
            items=[Job.from_json(j) for j in data.get("items", [])],
            next_cursor=data.get("next_cursor"),
        )

    def iter_jobs(
        self,
        status: str | None = None,
        kind: str | None = None,
        *,
        page_size: int = 100,
        **filters: str | None,
    ) -> Iterator[Job]:
        """All matching jobs (the filters and ``sort`` of :meth:`jobs`), fetched page by page."""
        cursor: str | None = None
        while True:
            page = self.jobs(status, kind, limit=page_size, cursor=cursor, **filters)  # type: ignore[arg-type]
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def job(self, job_id: str) -> Job:
        return Job.from_json(self._request("GET", f"/jobs/{job_id}"))

    def cancel(self, job_id: str) -> Job:
        """Asks the job to stop: ``cancelled`` when it was queued, ``cancelling`` when running."""
        return Job.from_json(self._request("POST", f"/jobs/{job_id}/cancel"))

    def retry(self, job_id: str) -> Job:
        """Queues a failed or cancelled job again (``attempt + 1``, resumes from its checkpoint)."""
        return Job.from_json(self._request("POST", f"/jobs/{job_id}/retry"))

    def wait(
        self,
        job_id: str,
        *,
        poll: float = 2.0,
        timeout: float | None = None,
        callback: Callable[[Job], None] | None = None,
    ) -> Job:
        """Polls until the job is finished and returns it; ``callback`` sees every poll.

        Raises:
            TimeoutError: when ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if callback is not None:
                callback(job)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout:g} s")
            time.sleep(poll)

    def update_job(
        self,
        job_id: str,
        *,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        notes: str | None = None,
        clear_notes: bool = False,
    ) -> Job:
        """``PATCH /jobs/{id}``: renames the job, replaces its tags or its notes (only what is
        given changes; ``clear_notes`` removes the notes)."""
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if tags is not None:
            body["tags"] = list(tags)
        if notes is not None or clear_notes:
            body["notes"] = notes
        return Job.from_json(self._request("PATCH", f"/jobs/{job_id}", json=body))

    def tag(self, job_id: str, *tags: str) -> Job:
        """Adds ``tags`` to the job's tags (each kept once, in order)."""
        current = self.job(job_id).tags
        return self.update_job(job_id, tags=list(dict.fromkeys([*current, *tags])))

    def delete(self, job_id: str) -> None:
        """Deletes a finished job and its artifacts (409 while it runs or others start from
        it)."""
        self._request("DELETE", f"/jobs/{job_id}")

    def metrics(self, job_id: str) -> Metrics:
        data = self._request("GET", f"/jobs/{job_id}/metrics")
        return Metrics(
            job_id=data.get("job_id", job_id),
            items=[
                MetricPoint(epoch=int(p["epoch"]), metrics=dict(p.get("metrics") or {}))
                for p in data.get("items", [])
            ],
        )

    def logs(self, job_id: str, offset: int = 0, *, limit: int = 500) -> LogChunk:
        """Log lines from ``offset``; continue with ``chunk.next_offset``."""
        data = self._request(
            "GET", f"/jobs/{job_id}/logs", params={"offset": offset, "limit": limit}
        )
        return LogChunk(
            job_id=data.get("job_id", job_id),
            lines=[LogLine.from_json(x) for x in data.get("lines", [])],
            next_offset=int(data.get("next_offset", offset)),
            finished=bool(data.get("finished", False)),
        )

    def follow_logs(self, job_id: str, offset: int = 0) -> Iterator[LogLine]:
        """Streams log lines (Server-Sent Events) until the job is finished."""
        path = f"/jobs/{job_id}/logs/stream"
        headers = {"Accept": "text/event-stream"}
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        seq = offset
        try:
            with self._http.stream(
                "GET", path, params={"offset": offset}, headers=headers, timeout=timeout
            ) as response:
                if response.is_error:
                    response.read()
                    _raise_for_status(response)
                for data in _sse_data(response.iter_lines()):
                    line = _log_line(data, seq)
                    seq = line.seq + 1
                    yield line
        except httpx.TransportError as exc:
            raise LivtConnectionError(self.url, exc) from exc

    def artifacts(self, job_id: str) -> list[Artifact]:
        data = self._request("GET", f"/jobs/{job_id}/artifacts")
        return [
            Artifact(
                name=a["name"],
                kind=a.get("kind", ""),
                size_bytes=int(a.get("size_bytes") or 0),
                url=a.get("url", f"/jobs/{job_id}/artifacts/{a['name']}"),
                created_at=_time(a.get("created_at")),
            )
            for a in data.get("items", [])
        ]

    def download_artifact(self, job_id: str, name: str, dest: str | Path) -> Path:
        """Saves one artifact; ``dest`` is a file path or an existing folder. Returns the file."""
        target = Path(dest)
        if target.is_dir():
            target = target / name
        return self._save(f"/jobs/{job_id}/artifacts/{name}", target)

    def download_export(self, job_id: str, dest: str | Path, format: str = "safetensors") -> Path:
        """Saves the job's weights export (``GET /jobs/{id}/export``) to the file ``dest``:
        ``model.safetensors`` (format ``safetensors``) or a zip of it and timm's
        ``config.json`` (format ``timm``). Returns the file."""
        return self._save(f"/jobs/{job_id}/export", Path(dest), params={"format": format})

    def _save(self, path: str, target: Path, params: Mapping[str, Any] | None = None) -> Path:
        """Streams a GET response into ``target`` (via ``target.part``, renamed at the end)."""
        partial = target.with_name(target.name + ".part")
        try:
            with self._http.stream("GET", path, params=params) as response:
                if response.is_error:
                    response.read()
                    _raise_for_status(response)
                with partial.open("wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise LivtConnectionError(self.url, exc) from exc
        partial.replace(target)
        return target

    # datasets ------------------------------------------------------------------------------

    def datasets(self) -> list[Dataset]:
        data = self._request("GET", "/datasets")
        return [Dataset.from_json(d) for d in data.get("items", [])]

    def register_dataset(
        self,
        name: str,
        kind: str,
        root: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Dataset:
        """Registers a dataset root (it must lie inside the server's data roots)."""
        body: dict[str, Any] = {"name": name, "kind": kind, "params": dict(params or {})}
        if root is not None:
            body["root"] = root
        return Dataset.from_json(self._request("POST", "/datasets", json=body))

    # webhooks ------------------------------------------------------------------------------

    def create_webhook(self, url: str, job_id: str | None = None) -> dict[str, Any]:
        """Calls ``url`` when your jobs (or the one ``job_id``) end; the answer holds the
        signing ``secret``, shown only this once."""
        body: dict[str, Any] = {"url": url}
        if job_id is not None:
            body["job_id"] = job_id
        return self._request("POST", "/webhooks", json=body)

    def webhooks(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/webhooks").get("items", []))

    def webhook_deliveries(self, webhook_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """The delivery log of a webhook, newest first."""
        data = self._request("GET", f"/webhooks/{webhook_id}/deliveries", params={"limit": limit})
        return list(data.get("items", []))

    def delete_webhook(self, webhook_id: str) -> None:
        self._request("DELETE", f"/webhooks/{webhook_id}")

    # tokens --------------------------------------------------------------------------------

    def tokens(self, *, user: str | None = None, status: str | None = None) -> list[Token]:
        """Your API tokens (every user's for an admin; ``user`` narrows to one), oldest first;
        ``status``: ``active``, ``expired`` or ``revoked``."""
        params = {k: v for k, v in (("user", user), ("status", status)) if v is not None}
        data = self._request("GET", "/tokens", params=params)
        return [Token.from_json(t) for t in data.get("items", [])]

    def revoke_token(self, token: int | str) -> Token:
        """Revokes a token of yours (any token for an admin) named by its id or its prefix;
        requests with it are refused (401) from then on."""
        return Token.from_json(self._request("POST", f"/tokens/{token}/revoke"))

    # sweeps --------------------------------------------------------------------------------

    def submit_sweep(
        self,
        base: Mapping[str, Any],
        grid: Mapping[str, Sequence[Any]] | None = None,
        seeds: Sequence[int] | None = None,
        name: str | None = None,
        search: Mapping[str, Any] | None = None,
    ) -> Sweep:
        """One job per grid point × seed, each ``base`` (a job spec or ``{"stages": [...]}``)
        with the grid's fields and the seed set. Every child is checked before any is created:
        a bad value raises :class:`LivtApiError` (422) naming ``grid.<field>.<index>``.
        ``search`` (``{"space": {"blr": {"low", "high", "log"}}, "objective", "trials",
        "parallel"}``) asks for an adaptive search instead of a grid: the service tells it each
        finished trial and asks the next ones by itself (within seconds, and at once on a read
        such as :meth:`sweep` or :meth:`wait_sweep`)."""
        body: dict[str, Any] = {"base": dict(base)}
        if grid is not None:
            body["grid"] = {k: list(v) for k, v in grid.items()}
        if seeds is not None:
            body["seeds"] = list(seeds)
        if name is not None:
            body["name"] = name
        if search is not None:
            body["search"] = dict(search)
        return Sweep.from_json(self._request("POST", "/sweeps", json=body))

    def sweep(self, sweep_id: str) -> Sweep:
        return Sweep.from_json(self._request("GET", f"/sweeps/{sweep_id}"))

    def sweeps(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """Your sweeps, newest first: ``{"id", "name", "status", "grid", "seeds", "num_jobs"}``."""
        return list(self._request("GET", "/sweeps", params={"limit": limit}).get("items", []))

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        """Cancels every unfinished job of the sweep."""
        return Sweep.from_json(self._request("POST", f"/sweeps/{sweep_id}/cancel"))

    def sweep_table(self, sweep_id: str, format: str = "md") -> str:
        """The sweep's table as Markdown (``md``), ``csv`` or ``latex``."""
        try:
            response = self._http.get(f"/sweeps/{sweep_id}/table", params={"format": format})
        except httpx.TransportError as exc:
            raise LivtConnectionError(self.url, exc) from exc
        _raise_for_status(response)
        return response.text

    def wait_sweep(
        self,
        sweep_id: str,
        *,
        poll: float = 2.0,
        timeout: float | None = None,
        callback: Callable[[Sweep], None] | None = None,
    ) -> Sweep:
        """Polls until every job of the sweep is finished (an adaptive sweep: every trial asked
        and told); raises TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            sweep = self.sweep(sweep_id)
            if callback is not None:
                callback(sweep)
            if sweep.finished:
                return sweep
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"sweep {sweep_id} still {sweep.status} after {timeout:g} s")
            time.sleep(poll)


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail = response.json().get("detail", response.text)
    except (json.JSONDecodeError, AttributeError):
        detail = response.text or response.reason_phrase
    raise LivtApiError(response.status_code, detail)


def _pipeline(data: Mapping[str, Any]) -> Pipeline:
    return Pipeline(
        id=data["id"],
        name=data.get("name"),
        jobs=[Job.from_json(j) for j in data.get("jobs", [])],
    )


def _sse_data(lines: Iterator[str]) -> Iterator[str]:
    """Yields the data of each Server-Sent Event (multi-line data joined by newlines)."""
    buffer: list[str] = []
    for line in lines:
        if not line:
            if buffer:
                yield "\n".join(buffer)
                buffer = []
        elif line.startswith("data:"):
            buffer.append(line[5:].removeprefix(" "))
    if buffer:
        yield "\n".join(buffer)


def _log_line(data: str, seq: int) -> LogLine:
    try:
        parsed = json.loads(data)
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, Mapping):
        return LogLine.from_json({"seq": seq, **parsed})
    return LogLine(seq=seq, message=data)
