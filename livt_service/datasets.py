"""Profiling registered image folders: the rows' ``profiling → ready | failed`` life, shared by
the API (which profiles small folders in the request) and the worker task that profiles large
ones (``livt.profile_dataset(dataset_id, attempt)``).

A task owns the profiling of try ``attempt`` once it has *claimed* it (``profile_worker`` set
by a conditional update); each progress report moves ``updated_at`` forward in an update that
re-checks the attempt and the worker, so a task whose try was handed to another worker notices
at its next report and stops. The janitor (``worker.janitor``) finds two kinds of stranded
profiling:

- *lost*: claimed, but no report for ``LIVT_WORKER_LOST_SECONDS`` (the worker died): the next
  try is sent, up to :data:`MAX_PROFILE_ATTEMPTS`; then the dataset is ``failed`` saying so;
- *unsent*: never claimed, older than ``LIVT_REQUEUE_GRACE_SECONDS`` and with no message in
  the broker (the enqueue failed, or the broker lost its data): the same try is sent again.

A profiling waiting in the queue behind a running job is neither, and keeps waiting.

PIL and NumPy only (``livt_core.data.profile``): the API stays torch-free.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select, update

from livt_core.data.profile import PROFILE_SPLITS, image_files, profile_imagefolder
from livt_core.errors import DataError
from livt_core.paths import check_file_inside
from livt_service.db import begin_write, session_scope
from livt_service.models import Dataset, utcnow
from livt_service.settings import get_settings

logger = logging.getLogger(__name__)

#: Tries a profiling gets before a dataset whose workers keep getting lost is ``failed``.
MAX_PROFILE_ATTEMPTS = 3
#: Seconds between two progress reports of a running profiling.
REPORT_SECONDS = 1.0

#: ``enqueue_profile(dataset_id, attempt, queue)`` (``livt_service.queue.enqueue_profile``).
EnqueueProfile = Callable[[int, int, str], None]


def _default_enqueue(dataset_id: int, attempt: int, queue: str) -> None:
    from livt_service.queue import enqueue_profile

    enqueue_profile(dataset_id, attempt, queue)


@dataclass(frozen=True)
class Listing:
    """What the folder names and file names of an image folder say, without opening a file."""

    classes: list[str]
    class_counts: list[int]
    images: int

    @property
    def num_train(self) -> int:
        return sum(self.class_counts)


def list_imagefolder(root: Path, allowed_roots: Sequence[Path] | None = None) -> Listing:
    """The training classes, their image counts and the images of every split, from the
    file names only (seconds for 100k images). ``FileNotFoundError`` without ``root/train``;
    with ``allowed_roots``, a folder or image that is a link leading outside them is a
    ``DataError`` (as when a run reads the folder)."""
    root = Path(root)
    train = root / "train"
    if not train.is_dir():
        raise FileNotFoundError(
            "has no train/ folder; an image folder holds root/train/<class>/<image> and "
            "root/val/<class>/<image> (root/test is optional)"
        )
    counts: dict[str, list[int]] = {}
    images = 0
    for split in PROFILE_SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        names = sorted(
            p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        for name in names:
            files = image_files(folder / name)
            if allowed_roots is not None:
                for path in [folder / name, *files]:
                    check_file_inside(path, allowed_roots, what=str(path.relative_to(root)))
            counts.setdefault(split, []).append(len(files))
            images += len(files)
        if split == "train":
            classes = names
    return Listing(classes, counts.get("train", []), images)


def apply_profile(dataset: Dataset, profile: Mapping[str, Any]) -> None:
    """Stores ``profile`` on the row and marks it ``ready``."""
    train = profile["splits"].get("train", {})
    dataset.profile = dict(profile)
    dataset.classes = list(profile["classes"])
    dataset.class_counts = [int(train.get(name, 0)) for name in dataset.classes]
    dataset.num_train = sum(dataset.class_counts)
    dataset.status = "ready"
    dataset.status_reason = None
    total = sum(profile.get("images", {}).values())
    dataset.progress_done = dataset.progress_total = total
    dataset.updated_at = utcnow()


def failure_reason(exc: BaseException) -> str:
    """What a failed profiling tells the user."""
    if isinstance(exc, FileNotFoundError | NotADirectoryError | PermissionError):
        return f"the folder could not be read: {exc}"
    if isinstance(exc, DataError):
        return str(exc)
    return f"the folder could not be profiled: {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- the task


class _Superseded(Exception):
    """This try of the profiling was handed to another worker (or the row is gone)."""


def _owned(dataset_id: int, attempt: int, worker_id: str) -> Any:
    return (
        Dataset.id == dataset_id,
        Dataset.status == "profiling",
        Dataset.profile_attempts == attempt,
        Dataset.profile_worker == worker_id,
    )


def claim_profiling(dataset_id: int, attempt: int, worker_id: str) -> str | None:
    """Takes try ``attempt`` of the profiling for ``worker_id``; returns the root, or None when
    the dataset is not profiling that try (done, failed, superseded) or another worker has it.
    A worker that restarted under the same id takes its own try back."""
    with session_scope() as session:
        begin_write(session)
        claimed = session.execute(
            update(Dataset)
            .where(
                Dataset.id == dataset_id,
                Dataset.status == "profiling",
                Dataset.profile_attempts == attempt,
                or_(Dataset.profile_worker.is_(None), Dataset.profile_worker == worker_id),
            )
            .values(profile_worker=worker_id, progress_done=0, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            return None
        return session.scalar(select(Dataset.root).where(Dataset.id == dataset_id))


def _report(dataset_id: int, attempt: int, worker_id: str, done: int, total: int) -> None:
    with session_scope() as session:
        begin_write(session)
        moved = session.execute(
            update(Dataset)
            .where(*_owned(dataset_id, attempt, worker_id))
            .values(progress_done=done, progress_total=total, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:
            raise _Superseded


def _finish(
    dataset_id: int,
    attempt: int,
    worker_id: str,
    profile: Mapping[str, Any] | None,
    reason: str | None = None,
) -> bool:
    with session_scope() as session:
        begin_write(session)
        dataset = session.scalar(
            select(Dataset).where(*_owned(dataset_id, attempt, worker_id)).with_for_update()
        )
        if dataset is None:
            return False
        if profile is not None:
            apply_profile(dataset, profile)
        else:
            dataset.status, dataset.status_reason = "failed", reason
            dataset.updated_at = utcnow()
        dataset.profile_worker = None
    return True


def profile_dataset(dataset_id: int, attempt: int, worker_id: str) -> str:
    """Profiles the dataset (try ``attempt``) as ``worker_id``, reporting progress about once a
    second; returns its status afterwards (``not claimed`` when another try owns it)."""
    root = claim_profiling(dataset_id, attempt, worker_id)
    if root is None:
        return "not claimed"
    last = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done == total or now - last >= REPORT_SECONDS:
            last = now
            _report(dataset_id, attempt, worker_id, done, total)

    started = time.monotonic()
    try:
        list_imagefolder(Path(root), get_settings().data_roots)
        profile = profile_imagefolder(root, progress=progress).to_dict()
    except _Superseded:
        logger.warning(
            "dataset %s: try %d was handed to another worker; stopped", dataset_id, attempt
        )
        return "superseded"
    except Exception as exc:
        logger.exception("dataset %s: profiling failed", dataset_id)
        _finish(dataset_id, attempt, worker_id, None, failure_reason(exc))
        return "failed"
    if not _finish(dataset_id, attempt, worker_id, profile):
        return "superseded"
    logger.info(
        "dataset %s profiled in %.1f s: %s images",
        dataset_id,
        time.monotonic() - started,
        sum(profile["images"].values()),
    )
    return "ready"


# --------------------------------------------------------------------------- the janitor


def _stale_profilings(seconds: float, *, claimed: bool) -> list[tuple[int, int]]:
    """``(id, attempt)`` of the profilings, claimed by a worker or not, whose row has not
    changed for ``seconds``."""
    cutoff = utcnow() - timedelta(seconds=seconds)
    worker = Dataset.profile_worker.is_not(None) if claimed else Dataset.profile_worker.is_(None)
    with session_scope() as session:
        rows = session.execute(
            select(Dataset.id, Dataset.profile_attempts).where(
                Dataset.status == "profiling", worker, Dataset.updated_at < cutoff
            )
        ).all()
    return [(r.id, r.profile_attempts) for r in rows]


def lost_profilings(lost_after_seconds: float) -> list[tuple[int, int]]:
    """``(id, attempt)`` of the claimed profilings with no report for ``lost_after_seconds``."""
    return _stale_profilings(lost_after_seconds, claimed=True)


def unclaimed_profilings(grace_seconds: float) -> list[tuple[int, int]]:
    """``(id, attempt)`` of the profilings no worker has claimed for ``grace_seconds``."""
    return _stale_profilings(grace_seconds, claimed=False)


def retry_lost(
    dataset_id: int,
    attempt: int,
    lost_after_seconds: float,
    queue: str,
    *,
    enqueue: EnqueueProfile | None = None,
) -> str | None:
    """Hands a lost profiling to its next try (``sent``) or, after
    :data:`MAX_PROFILE_ATTEMPTS` tries, fails the dataset (``failed``); None when another
    janitor or the worker itself got there first."""
    cutoff = utcnow() - timedelta(seconds=lost_after_seconds)
    with session_scope() as session:
        begin_write(session)
        dataset = session.scalar(
            select(Dataset)
            .where(
                Dataset.id == dataset_id,
                Dataset.status == "profiling",
                Dataset.profile_attempts == attempt,
                Dataset.profile_worker.is_not(None),
                Dataset.updated_at < cutoff,
            )
            .with_for_update()
        )
        if dataset is None:
            return None
        lost_worker = dataset.profile_worker
        dataset.profile_worker = None
        dataset.updated_at = utcnow()
        if attempt >= MAX_PROFILE_ATTEMPTS:
            dataset.status = "failed"
            dataset.status_reason = (
                f"the worker reading the files was lost {attempt} times (last: {lost_worker}); "
                "register the dataset again (the same name may be reused) once the workers "
                "are stable"
            )
            logger.error("dataset %s: %s", dataset.name, dataset.status_reason)
            return "failed"
        dataset.profile_attempts = attempt + 1
        dataset.status_reason = (
            f"try {attempt} stopped (worker {lost_worker} lost); try {attempt + 1} sent"
        )
    logger.warning(
        "dataset %s: profiling lost on %s; try %d sent", dataset_id, lost_worker, attempt + 1
    )
    (enqueue or _default_enqueue)(dataset_id, attempt + 1, queue)
    return "sent"


def resend_unclaimed(
    dataset_id: int,
    attempt: int,
    grace_seconds: float,
    queue: str,
    *,
    enqueue: EnqueueProfile | None = None,
) -> bool:
    """Sends an unclaimed profiling's message again (the caller found none in the broker);
    ``updated_at`` moves forward in the same conditional update, so one janitor sends."""
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    with session_scope() as session:
        begin_write(session)
        moved = session.execute(
            update(Dataset)
            .where(
                Dataset.id == dataset_id,
                Dataset.status == "profiling",
                Dataset.profile_attempts == attempt,
                Dataset.profile_worker.is_(None),
                Dataset.updated_at < cutoff,
            )
            .values(updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:
            return False
    logger.warning("dataset %s: profiling had no message in the broker; sent again", dataset_id)
    (enqueue or _default_enqueue)(dataset_id, attempt, queue)
    return True
