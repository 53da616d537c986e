"""``/datasets``: register dataset roots and see their class counts and shot groups."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import CurrentUser, SessionDep, SettingsDep
from api.request_limits import BODY_TOO_LARGE
from api.schemas import DatasetCreate, DatasetList, DatasetPublic, ShotGroups
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
        409: {"description": "the name is taken"},
        422: {"description": "bad kind, params or root (outside the data roots, unreadable)"},
        **BODY_TOO_LARGE,
    },
)
def register_dataset(
    *, body: DatasetCreate, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> DatasetPublic:
    """Register a root inside the data roots; its training split is read once to count the
    images per class. Jobs then name it with ``"dataset": "<name>"``."""
    return _public(service.register_dataset(session, settings, user, body))
