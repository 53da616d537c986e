"""A user's own long-tailed image folders through a real ``livt serve`` (API + embedded Celery
worker): register, profiled *by the worker* (``LIVT_PROFILE_INLINE_IMAGES=0``) to ``ready``,
then a pipeline whose stages name only the dataset, to a finished result, or a 422 at submit
naming the field.

The folders are generated from Fashion-MNIST (``tests.folders``) over the matrix: grey and
colourised RGB; 28, 32 and 64 px; PNG and JPEG; train/val only and train/val/test; class
names with spaces and non-ASCII letters; one corrupt image; one class missing from val. They
are tiny (at most 60 training images) and, to keep CI time sane, each training stage of the
matrix pipelines adds one setting to the zero-config spec: ``epochs: 1``. One variant runs
the pipeline fully zero-config (only ``dataset`` in each stage) to success (marked slow).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.folders import ODD_CLASS_NAMES, make_imagefolder
from tests.live_server import LiveServer
from tests.worker.test_support import wait_status, wait_until

pytestmark = pytest.mark.slow

TERMINAL = {"succeeded", "failed", "cancelled"}
TINY = {"n_max": 12, "imbalance": 6, "per_class": 2}
PRETRAIN, FINETUNE, EVALUATE = "pretrain", "finetune", "evaluate"


@dataclass(frozen=True)
class Variant:
    folder: dict[str, Any]
    #: the pipeline's stages (kinds); each names only the dataset (+ epochs: 1 to train)
    stages: tuple[str, ...] = (FINETUNE, EVALUATE)
    #: settings the evaluate stage adds (none: zero-config)
    evaluate: dict[str, Any] = field(default_factory=dict)
    #: None: the pipeline runs to a result; else (stage, field) of the 422 at submit
    refused: tuple[int, str] | None = None


VARIANTS = {
    "grey-28-png-val-lacks-a-class": Variant(
        {"size": 28, "colour": False, "missing_in_val": ("bag",)}
    ),
    "rgb-32-jpeg-test-odd-names": Variant(
        {
            "size": 32,
            "ext": "jpg",
            "splits": ("train", "val", "test"),
            "class_names": ODD_CLASS_NAMES,
        }
    ),
    "rgb-64-png-test-mgp": Variant(
        {"size": 64, "splits": ("train", "val", "test")}, (PRETRAIN, FINETUNE, EVALUATE)
    ),
    "grey-32-jpeg-one-corrupt": Variant(
        {"size": 32, "colour": False, "ext": "jpg", "corrupt": 1}, refused=(0, "dataset")
    ),
    "rgb-32-png-no-test-asked-for": Variant(
        {"size": 32}, evaluate={"split": "test"}, refused=(1, "split")
    ),
}


def _stages(name: str, kinds: tuple[str, ...], budget: dict, evaluate: dict) -> list[dict]:
    return [
        {"kind": kind, "dataset": name, **(evaluate if kind == EVALUATE else budget)}
        for kind in kinds
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("own-folders")
    for name, variant in VARIANTS.items():
        make_imagefolder(data_dir / "datasets" / name, **{**TINY, **variant.folder})
    make_imagefolder(
        data_dir / "datasets" / "zero-config",
        n_max=8,
        imbalance=4,
        per_class=2,
        size=28,
        colour=False,
    )
    env = {"LIVT_PROFILE_INLINE_IMAGES": "0", "LIVT_REQUEUE_GRACE_SECONDS": "5"}
    with LiveServer.start(data_dir, env=env) as live:
        yield live


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.create_token('own-folders')}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60.0) as client:
        yield client


@pytest.fixture(scope="module")
def registered(http: httpx.Client) -> dict[str, dict]:
    """Every variant registered at once, then each profiled by the worker to ``ready``."""
    for name in [*VARIANTS, "zero-config"]:
        response = http.post("/datasets", json={"name": name, "kind": "imagefolder", "root": name})
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "profiling"

    def ready(name: str) -> dict | None:
        body = http.get(f"/datasets/{name}").json()
        assert body["status"] != "failed", body
        return body if body["status"] == "ready" else None

    return {
        name: wait_until(lambda n=name: ready(n), timeout=120, what=f"{name} profiled")
        for name in [*VARIANTS, "zero-config"]
    }


@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_folder_runs_zero_config_or_is_refused_at_submit(
    http: httpx.Client, registered: dict[str, dict], name: str
) -> None:
    variant = VARIANTS[name]
    dataset = registered[name]
    profile = dataset["profile"]
    total = sum(profile["images"].values())
    assert dataset["progress"] == {"done": total, "total": total}
    assert profile["channels"] == (3 if variant.folder.get("colour", True) else 1)
    assert profile["sizes"]["median_side"] == variant.folder["size"]
    stages = _stages(name, variant.stages, {"epochs": 1}, variant.evaluate)
    response = http.post("/pipelines", json={"stages": stages})
    if variant.refused is not None:
        assert response.status_code == 422, response.text
        stage, where = variant.refused
        locs = {tuple(e["loc"]) for e in response.json()["detail"]}
        assert ("body", "stages", stage, where) in locs
        return
    assert response.status_code == 201, response.text
    done = [wait_status(http, job["id"], TERMINAL, timeout=240) for job in response.json()["jobs"]]
    for job in done:
        assert job["status"] == "succeeded", (job["name"], job["failure"])
        assert job["config"].get("recipe_notes", [""])[0] == "auto recipe from the dataset profile:"
    finetune, evaluate = done[-2]["result"], done[-1]["result"]
    split = "test" if "test" in variant.folder.get("splits", ()) else "val"
    assert finetune["split"] == evaluate["split"] == split
    assert finetune["selection_split"] == "val" and finetune["split_rule"]
    assert len(evaluate["per_class"]) == 10


def test_a_pipeline_naming_only_the_dataset_runs_to_a_result(
    http: httpx.Client, registered: dict[str, dict]
) -> None:
    kinds = (PRETRAIN, FINETUNE, EVALUATE)
    response = http.post("/pipelines", json={"stages": _stages("zero-config", kinds, {}, {})})
    assert response.status_code == 201, response.text
    jobs = response.json()["jobs"]
    done = [wait_status(http, job["id"], TERMINAL, timeout=900) for job in jobs]
    for job in done:
        assert job["status"] == "succeeded", (job["name"], job["failure"])
    result = done[2]["result"]
    assert result["split"] == "val" and result["overall"] is not None
    assert done[1]["config"]["epochs"] > 1 and done[1]["config"]["recipe_notes"]
