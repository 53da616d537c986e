"""Registered datasets: a root inside the data roots plus the ``data.*`` settings used with it.

Registering builds the training split with ``livt_core.data`` once, so the class names, the
per-class training counts and the many / medium / few groups are known before any job runs.
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
    UnavailableError,
    config_error_message,
)
from api.schemas import DatasetCreate
from livt_core import checks
from livt_core.config import DataConfig, errors_from_validation
from livt_core.errors import ConfigError, DataError
from livt_core.paths import confine_config_paths
from livt_service.db import begin_write
from livt_service.models import Dataset, User
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


def register_dataset(
    session: Session, settings: Settings, user: User, body: DatasetCreate
) -> Dataset:
    """Checks the root and params, builds the training split and stores its statistics."""
    session.commit()  # end the request's read transaction: building the split takes a while
    if session.scalar(select(Dataset.id).where(Dataset.name == body.name)) is not None:
        raise ConflictError(f"a dataset called {body.name!r} exists; choose another name")
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
