"""``/datasets``: register dataset roots and see their class counts and shot groups."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from api.deps import CurrentUser, ProfileEnqueueDep, SessionDep, SettingsDep
from api.request_limits import BODY_TOO_LARGE
from api.schemas import (
    NAME_PATTERN,
    DatasetCreate,
    DatasetList,
    DatasetProgress,
    DatasetPublic,
    ShotGroups,
)
from api.services import datasets as service
from livt_core.contract import shot_groups
from livt_service.models import Dataset

router = APIRouter(prefix="/datasets", tags=["datasets"])


def _public(dataset: Dataset) -> DatasetPublic:
    return DatasetPublic(
        name=dataset.name,
        kind=dataset.kind,
        root=dataset.root,
        params=dataset.params,
        classes=dataset.classes,
        class_counts=dataset.class_counts,
        shot_groups=ShotGroups(**shot_groups(dataset.class_counts)),
        num_train=dataset.num_train,
        created_at=dataset.created_at,
        status=dataset.status,  # type: ignore[arg-type]
        status_reason=dataset.status_reason,
        progress=None
        if dataset.progress_total is None
        else DatasetProgress(done=dataset.progress_done, total=dataset.progress_total),
        profile=dataset.profile,
    )


@router.get("", response_model=DatasetList)
def list_datasets(*, session: SessionDep, user: CurrentUser) -> DatasetList:
    """Every registered dataset (names are shared by all users)."""
    return DatasetList(items=[_public(d) for d in service.list_datasets(session)])


@router.post(
    "",
    response_model=DatasetPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        202: {"model": DatasetPublic, "description": "a large image folder: a worker profiles it"},
        409: {"description": "the name is taken"},
        422: {"description": "bad kind, params or root (outside the data roots, unreadable)"},
        **BODY_TOO_LARGE,
    },
)
def register_dataset(
    *,
    body: DatasetCreate,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    enqueue: ProfileEnqueueDep,
) -> DatasetPublic:
    """Register a root inside the data roots; its training split is read once to count the
    images per class. Jobs then name it with ``"dataset": "<name>"``.

    An ``imagefolder`` is profiled: in the request when it holds at most
    ``LIVT_PROFILE_INLINE_IMAGES`` images (201, ``status: ready``), else by a worker (202,
    ``status: profiling``; poll ``GET /datasets/{name}``). A name whose registration
    ``failed`` may be registered again."""
    dataset = service.register_dataset(session, settings, user, body, enqueue)
    if dataset.status == "profiling":
        response.status_code = status.HTTP_202_ACCEPTED
    return _public(dataset)


@router.get("/{name}", response_model=DatasetPublic, responses={404: {}})
def get_dataset(
    *,
    name: Annotated[str, Path(description="a dataset name", pattern=NAME_PATTERN)],
    session: SessionDep,
    user: CurrentUser,
) -> DatasetPublic:
    """One dataset with its status, profiling progress and profile."""
    return _public(service.get_dataset(session, name))
