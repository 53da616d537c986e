"""``/presets``: the per-dataset presets with their fully resolved run configs."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter

from api.deps import CurrentUser
from api.schemas import PresetList, PresetPublic

router = APIRouter(prefix="/presets", tags=["presets"])


@lru_cache(maxsize=1)
def _catalogue() -> PresetList:
    from livt_core.catalog import is_mae_model, list_datasets, list_losses, list_models
    from livt_core.config import KINDS, list_presets, resolve_config

    def configs(preset: str | None) -> dict:
        return {kind: resolve_config(kind, preset).model_dump(mode="json") for kind in KINDS}

    mae = [name for name in list_models() if is_mae_model(name)]
    classifiers = [name for name in list_models() if not is_mae_model(name)]
    return PresetList(
        items=[PresetPublic(name=name, configs=configs(name)) for name in list_presets()],
        defaults=configs(None),
        models={"pretrain": mae, "finetune": classifiers, "evaluate": classifiers},
        losses=list_losses(),
        datasets=list_datasets(),
    )


@router.get("", response_model=PresetList)
def list_presets(*, user: CurrentUser) -> PresetList:
    """Each preset's resolved config per kind, the defaults, and the valid model, loss and
    dataset names (what the dashboard's job form offers)."""
    return _catalogue()
