"""The Celery application of the job service, configured from :func:`livt_service.settings.get_settings`.

Both run modes execute the same task code; only the broker differs:

- embedded: kombu's SQLAlchemy transport on a SQLite file (``sqla+sqlite:///<data_dir>/broker.sqlite``,
  the settings' default). It was preferred over the ``filesystem://`` transport because a consumer
  takes a message inside ``BEGIN IMMEDIATE`` (one process wins, no half-written file can be read,
  no cross-device move into a temporary folder), and a failed publish raises instead of being
  lost. No external service runs.
- production: Redis.

The job row in our own database stays the source of truth: a task message only says "look at job
X". The worker's atomic claim (``livt_service.state.claim_job``) makes duplicate messages harmless, so
``acks_late`` plus a redelivery after a lost worker can never run a job twice at once.

Nothing here connects at import time: the app is built on first use, and rebuilt when the settings
object changes (tests re-read the environment with ``get_settings.cache_clear()``).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from celery import Celery

from livt_service.settings import Settings, get_settings

logger = logging.getLogger(__name__)

#: The name every job task is sent under (the API never imports the task code).
RUN_JOB_TASK = "livt.run_job"
#: The task that reads a registered image folder and stores its profile
#: (``livt_service.datasets``); its arguments are the dataset id and the attempt number.
PROFILE_DATASET_TASK = "livt.profile_dataset"

#: Seconds Redis keeps a delivered, unacknowledged message before handing it to another worker.
#: Training jobs run for hours or days; a redelivery while the job still runs is harmless (the
#: claim refuses it), and a lost worker's job is requeued by the janitor long before this.
REDIS_VISIBILITY_TIMEOUT = 12 * 3600

_lock = threading.Lock()
_app: Celery | None = None
_app_settings: Settings | None = None


def is_embedded_broker(broker_url: str) -> bool:
    """True for the in-process transports of the embedded mode (no broker service)."""
    return broker_url.startswith(("sqla+", "filesystem://", "memory://"))


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings derived from the service settings (and from nothing else)."""
    embedded_broker = is_embedded_broker(settings.broker_url)
    transport_options: dict[str, Any] = {}
    if settings.broker_url.startswith("redis"):
        transport_options["visibility_timeout"] = REDIS_VISIBILITY_TIMEOUT
    elif settings.broker_url.startswith("sqla+sqlite"):
        # the API and the worker write the file at once: wait for its lock instead of failing
        transport_options["connect_args"] = {"timeout": 30}
    elif settings.broker_url.startswith("filesystem://"):
        folder = settings.data_dir / "broker"
        transport_options.update(
            data_folder_in=str(folder / "queue"),
            data_folder_out=str(folder / "queue"),
            control_folder=str(folder / "control"),
            store_processed=True,
            processed_folder=str(folder / "processed"),
        )
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "result_backend": settings.result_backend,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.default_queue,
        "task_create_missing_queues": True,
        # the queue given to ``enqueue`` wins over this route (explicit options beat routes)
        "task_routes": {RUN_JOB_TASK: {"queue": settings.default_queue}},
        "task_track_started": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        # embedded transports have no broadcast between processes: no remote control there
        "worker_enable_remote_control": not embedded_broker,
        # a broker hiccup must not kill a training run; the claim makes a redelivery harmless
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_hijack_root_logger": False,
        "include": ["worker.tasks"],
    }


def _prepare_embedded_broker(settings: Settings) -> None:
    """Creates the folders an embedded transport keeps its messages in (connects to nothing)."""
    url = settings.broker_url
    if url.startswith("sqla+sqlite:///"):
        path = Path(url.removeprefix("sqla+sqlite:///"))
        if str(path) not in ("", ":memory:"):
            path.parent.mkdir(parents=True, exist_ok=True)
    elif url.startswith("filesystem://"):
        options = celery_config(settings)["broker_transport_options"]
        for key in ("data_folder_in", "control_folder", "processed_folder"):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


def _tune_sqla_transport(settings: Settings) -> None:
    """How often a consumer of the SQLite broker looks for messages: kombu polls an empty queue
    once a second by default, which was most of the time from submit to running; one indexed
    ``SELECT`` on a local file costs far less than that. (Set on the transport class: kombu's
    SQLAlchemy transport hands every transport option to ``create_engine``, which refuses
    ``polling_interval``; a process has one broker.)"""
    if settings.broker_url.startswith("sqla+"):
        from kombu.transport import sqlalchemy as kombu_sqla

        kombu_sqla.Transport.polling_interval = settings.broker_poll_seconds


def create_celery_app(settings: Settings | None = None) -> Celery:
    """A new Celery app for ``settings`` (default: the process settings)."""
    settings = settings or get_settings()
    _prepare_embedded_broker(settings)
    _tune_sqla_transport(settings)
    app = Celery("livt", set_as_current=False)
    app.config_from_object(celery_config(settings))
    return app


def get_celery_app() -> Celery:
    """The process-wide Celery app for the current settings (built on first use)."""
    global _app, _app_settings
    settings = get_settings()
    with _lock:
        if _app is None or _app_settings is not settings:
            _app = create_celery_app(settings)
            _app_settings = settings
        return _app


def enqueue(job_id: str, queue: str) -> None:
    """Sends the task that runs job ``job_id`` to ``queue``. Call it after the job row is
    committed: the worker re-reads the row and ignores a message for a job it cannot claim."""
    get_celery_app().send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
    logger.debug("enqueued job %s on queue %s", job_id, queue)


def enqueue_profile(dataset_id: int, attempt: int, queue: str) -> None:
    """Sends the task that profiles dataset ``dataset_id`` (try ``attempt``) to ``queue``;
    call it after the dataset row is committed."""
    get_celery_app().send_task(PROFILE_DATASET_TASK, args=[dataset_id, attempt], queue=queue)
    logger.debug("enqueued the profiling of dataset %s on queue %s", dataset_id, queue)


def _job_id_of(payload: str | bytes | dict[str, Any], task: str = RUN_JOB_TASK) -> str | None:
    """The first argument (the job id of a ``livt.run_job`` message) of a ``task`` message,
    as a string; None for any other message."""
    try:
        message = payload if isinstance(payload, dict) else json.loads(payload)
        if message.get("headers", {}).get("task") != task:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def live_job_ids(queues: Iterable[str], task: str = RUN_JOB_TASK) -> set[str] | None:
    """The ids of the jobs that have a live message in ``queues``: waiting to be delivered, or
    (Redis) delivered to a worker and not acknowledged yet. None when the broker's transport
    cannot be inspected. Raises the transport's error when the broker is unreachable.
    ``task``: another task's messages instead (their first argument, as a string)."""
    settings = get_settings()
    queues = list(queues)
    app = get_celery_app()
    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1)
        channel = connection.default_channel
        if settings.broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
            client = channel.client
            payloads: list[Any] = []
            for queue in queues:
                for priority in channel.priority_steps:
                    payloads.extend(client.lrange(channel._q_for_pri(queue, priority), 0, -1))
            for value in client.hvals(channel.unacked_key):
                try:
                    payloads.append(json.loads(value)[0])
                except (ValueError, IndexError, TypeError):
                    continue
        elif settings.broker_url.startswith("sqla+"):
            message, queue_cls = channel.message_cls, channel.queue_cls
            rows = (
                channel.session.query(message.payload)
                .join(queue_cls, message.queue_id == queue_cls.id)
                .filter(queue_cls.name.in_(queues), message.visible.is_(True))
                .all()
            )
            channel.session.commit()
            payloads = [row[0] for row in rows]
        else:
            return None
    return {job_id for p in payloads if (job_id := _job_id_of(p, task)) is not None}


def declare_queues(queues: Sequence[str]) -> None:
    """Connects to the broker once and declares ``queues``. For the embedded SQLite transport
    this creates its tables before the API and the worker process race to do it."""
    app = get_celery_app()
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=3)
        channel = connection.default_channel
        for name in queues:
            channel.queue_declare(queue=name, durable=True, auto_delete=False)


def __getattr__(name: str) -> Any:
    """``livt_service.queue.app`` builds the app on first access, so that
    ``celery -A livt_service.queue worker`` works without an import-time side effect."""
    if name == "app":
        return get_celery_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
