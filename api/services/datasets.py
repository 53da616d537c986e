"""Registered datasets: a root inside the data roots plus the ``data.*`` settings used with it.

Registering builds the training split with ``livt_core.data`` once, so the class names, the
per-class training counts and the many / medium / few groups are known before any job runs.

An ``imagefolder`` is also *profiled* (``livt_core.data.profile``: images per split and class,
sizes, grey or colour, mean / std, unreadable files, classes a split lacks). A folder of at
most ``LIVT_PROFILE_INLINE_IMAGES`` images (default 1000) is profiled in the request (201,
``ready``); a larger one is listed (class counts from the file names) and stored as
``profiling``, and a worker reads it (``livt.profile_dataset``, see ``livt_service.datasets``):
202, then ``GET /datasets/{name}`` shows the progress until it is ``ready`` or ``failed``.
Jobs on an image folder are resolved with its stored profile (the ``auto`` recipe and the
checks of ``livt_core.config.consistency``).
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import (
    ConflictError,
    FieldError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
    config_error_message,
)
from api.schemas import DatasetCreate
from livt_core import checks
from livt_core.config import DataConfig, errors_from_validation
from livt_core.data.profile import profile_imagefolder
from livt_core.errors import ConfigError, DataError
from livt_core.paths import confine_config_paths
from livt_service import datasets as profiling
from livt_service.datasets import EnqueueProfile
from livt_service.db import begin_write
from livt_service.models import Dataset, Job, User, utcnow
from livt_service.settings import Settings

logger = logging.getLogger(__name__)

#: ``data.*`` settings that cannot be registered as params (the registration sets them).
RESERVED_PARAMS = ("dataset", "root")


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.scalars(select(Dataset).order_by(Dataset.name)))


def _params_loc(field: str) -> tuple[str, ...]:
    parts = field.split(".")
    if parts[0] == "data":
        parts = parts[1:]
    if parts and parts[0] == "root":
        return ("body", "root")
    if parts and parts[0] == "dataset":
        return ("body", "kind")
    return ("body", "params", *parts)


def _validated_params(body: DatasetCreate) -> dict[str, Any]:
    errors = [
        FieldError(
            ("body", "params", key),
            f"is set by the registration; use the top-level {'kind' if key == 'dataset' else key}",
            "extra_forbidden",
        )
        for key in RESERVED_PARAMS
        if key in body.params
    ]
    if errors:
        raise InvalidInputError(errors)
    try:
        data = DataConfig.model_validate({**body.params, "dataset": body.kind})
    except ValidationError as exc:
        raise InvalidInputError(
            [
                FieldError(_params_loc(e.field), config_error_message(e), "invalid_config")
                for e in errors_from_validation(exc)
            ]
        ) from None
    return data.model_dump(mode="json", include=set(body.params))


def get_dataset(session: Session, name: str) -> Dataset:
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        raise NotFoundError(f"dataset {name!r} not found; GET /datasets lists them")
    return dataset


def _taken(session: Session, settings: Settings, body: DatasetCreate) -> None:
    """409 for a name in use. A registration no job names yet is replaced when it failed, or
    when the same image folder is registered again (it is read anew: the way to refresh a
    profile after fixing the files)."""
    name = body.name
    existing = session.scalar(select(Dataset).where(Dataset.name == name))
    if existing is None:
        return
    again = existing.kind == body.kind == "imagefolder" and _same_root(settings, existing, body)
    if (existing.status == "failed" or again) and not _used_by_jobs(session, name):
        begin_write(session)
        session.delete(existing)
        session.commit()
        logger.info("dataset %s: registered again, the folder is read anew", name)
        return
    if again:
        raise ConflictError(
            f"dataset {name!r} is used by jobs, so it is not read anew; register the folder "
            "under another name"
        )
    raise ConflictError(f"a dataset called {name!r} exists; choose another name")


def _same_root(settings: Settings, existing: Dataset, body: DatasetCreate) -> bool:
    if body.root is None or existing.root is None:
        return False
    try:
        return str(settings.resolve_user_path(body.root, field="root")) == existing.root
    except ConfigError:
        return False


def _used_by_jobs(session: Session, name: str) -> bool:
    return session.scalar(select(Job.id).where(Job.dataset == name).limit(1)) is not None


def register_dataset(
    session: Session,
    settings: Settings,
    user: User,
    body: DatasetCreate,
    enqueue: EnqueueProfile | None = None,
) -> Dataset:
    """Checks the root and params, reads the training split (an image folder: its profile) and
    stores what it found. A failed image folder's name can be registered again."""
    session.commit()  # end the request's read transaction: building the split takes a while
    _taken(session, settings, body)
    params = _validated_params(body)
    root = None
    if body.root is not None:
        try:
            root = settings.resolve_user_path(body.root, field="root")
        except ConfigError as exc:
            raise InvalidInputError.single(
                ("body", "root"), config_error_message(exc), "path_outside_roots"
            ) from None
        if not root.is_dir():
            raise InvalidInputError.single(
                ("body", "root"),
                "is not a folder; set root to the folder holding the dataset, inside a data root",
                "path_missing",
            )
    try:
        confine_config_paths(
            DataConfig,
            {**params, "root": None if root is None else str(root)},
            settings.path_policy(),
        )
    except ConfigError as exc:
        raise InvalidInputError.single(
            _params_loc(exc.field), config_error_message(exc), "path_outside_roots"
        ) from None

    if body.kind == "imagefolder":
        return _register_imagefolder(session, settings, user, body, params, root, enqueue)
    data = DataConfig.model_validate(
        {**params, "dataset": body.kind, "root": None if root is None else str(root)}
    )
    try:
        request = checks.dataset(data.model_dump(mode="json"), allowed_roots=settings.data_roots)
        [train] = checks.run_checks([request])
    except checks.CheckFailed as exc:
        raise UnavailableError(f"the dataset could not be read: {exc}") from exc
    except ConfigError as exc:
        raise InvalidInputError.single(
            _params_loc(exc.field), config_error_message(exc), "invalid_config"
        ) from None
    except DataError as exc:
        raise InvalidInputError.single(
            ("body", "root"),
            f"{exc}; check that root holds the {body.kind} files and that params fit them",
            "invalid_data",
        ) from None

    dataset = Dataset(
        owner_id=user.id,
        name=body.name,
        kind=body.kind,
        root=str(root) if root is not None else None,
        params=params,
        classes=train["classes"],
        class_counts=train["class_counts"],
        num_train=train["num_train"],
    )
    begin_write(session)
    session.add(dataset)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"a dataset called {body.name!r} exists; choose another name") from None
    logger.info(
        "dataset %s registered by %s: %s, %d classes, %d training images",
        body.name,
        user.name,
        body.kind,
        len(dataset.classes),
        dataset.num_train,
    )
    return dataset


def _save(session: Session, dataset: Dataset) -> Dataset:
    begin_write(session)
    session.add(dataset)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(
            f"a dataset called {dataset.name!r} exists; choose another name"
        ) from None
    return dataset


def _register_imagefolder(
    session: Session,
    settings: Settings,
    user: User,
    body: DatasetCreate,
    params: dict[str, Any],
    root: Any,
    enqueue: EnqueueProfile | None,
) -> Dataset:
    """Lists the folder; profiles it here when small, else stores it ``profiling`` and sends
    the profiling to the workers."""
    if root is None:
        raise InvalidInputError.single(
            ("body", "root"),
            "is required for an imagefolder; set root to the folder holding train/ and val/",
            "missing",
        )
    inline = None
    try:
        listing = profiling.list_imagefolder(root, settings.data_roots)
        if not listing.classes:
            raise DataError(
                "train/ has no class folders; put each class's images in train/<class>/"
            )
        if listing.images <= settings.profile_inline_images:
            inline = profile_imagefolder(root).to_dict()
    except (FileNotFoundError, NotADirectoryError, DataError) as exc:
        raise InvalidInputError.single(
            ("body", "root"),
            str(exc),
            "invalid_data",
        ) from None
    except OSError as exc:
        raise InvalidInputError.single(
            ("body", "root"),
            f"cannot be read ({exc.strerror or exc}); check its permissions",
            "invalid_data",
        ) from None
    now = utcnow()
    dataset = Dataset(
        owner_id=user.id,
        name=body.name,
        kind=body.kind,
        root=str(root),
        params=params,
        classes=listing.classes,
        class_counts=listing.class_counts,
        num_train=listing.num_train,
        status="profiling",
        progress_done=0,
        progress_total=listing.images,
        profile_attempts=1,
        updated_at=now,
    )
    if inline is not None:
        profiling.apply_profile(dataset, inline)
    _save(session, dataset)
    logger.info(
        "dataset %s registered by %s: imagefolder, %d classes, %d images, %s",
        body.name,
        user.name,
        len(listing.classes),
        listing.images,
        "profiled" if inline is not None else "profiling on a worker",
    )
    if inline is None:
        try:
            (enqueue or _send_profile)(dataset.id, 1, settings.default_queue)
        except Exception as exc:
            # the row stays profiling: the janitor sends it once the broker is back
            logger.warning("dataset %s: the profiling could not be sent yet: %s", body.name, exc)
    return dataset


def _send_profile(dataset_id: int, attempt: int, queue: str) -> None:
    from livt_service.queue import enqueue_profile

    enqueue_profile(dataset_id, attempt, queue)
