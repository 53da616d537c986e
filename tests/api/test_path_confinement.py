"""Every user-supplied path is confined to the data roots, at submit and again by the run.

The path fields are found by introspection (the ``PathStr`` marker of ``livt_core.paths``), so
a path field added later is attacked here without anyone listing it. Each is submitted as a
system file, as a ``..`` escape and as a link inside a data root that leads outside; each must
give 422 naming the field, without the file's content or the place the path resolves to.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import BaseModel
from sqlalchemy import select

from api.schemas import DatasetCreate, EvaluateJobCreate, FinetuneJobCreate, PretrainJobCreate
from livt_core.config import CONFIG_CLASSES, DataConfig
from livt_core.paths import path_fields
from livt_service.models import Job, LogLine
from livt_service.settings import Settings

SECRET = f"TOPSECRET-{uuid.uuid4().hex}"
#: Which job kind carries each run-config path field, and the spec that reaches it.
CONFIG_KINDS = {"init": "finetune", "checkpoint": "evaluate"}
#: Names that say "this is a path": a field so named must carry the PathStr marker.
PATHLIKE_NAME = re.compile(r"(^|_)(root|split|path|file|dir|folder|checkpoint|init)s?$")


def _accepts_str(annotation: Any) -> bool:
    return annotation is str or any(_accepts_str(a) for a in getattr(annotation, "__args__", ()))


def _all_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of the string-typed fields of ``model`` and its nested models."""
    out = []
    for name, info in model.model_fields.items():
        if _accepts_str(info.annotation):
            out.append(f"{prefix}{name}")
        annotation = info.annotation
        subs = [annotation, *getattr(annotation, "__args__", ())]
        for sub in subs:
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                out.extend(_all_fields(sub, f"{prefix}{name}."))
    return out


SCHEMAS: list[type[BaseModel]] = [
    *CONFIG_CLASSES.values(),
    PretrainJobCreate,
    FinetuneJobCreate,
    EvaluateJobCreate,
    DatasetCreate,
]


def job_path_fields() -> list[tuple[str, str]]:
    """``(kind, dotted field)`` of every path field of a job: the run configs' and the spec's."""
    found: set[tuple[str, str]] = set()
    for kind, model in CONFIG_CLASSES.items():
        for name in path_fields(model):
            found.add((CONFIG_KINDS.get(name, kind), name))
    for model in (PretrainJobCreate, FinetuneJobCreate, EvaluateJobCreate):
        kind = model.model_fields["kind"].annotation.__args__[0]
        for name in path_fields(model):
            found.add((kind, name))
    return sorted(found)


def dataset_path_fields() -> list[str]:
    """Dotted fields of ``POST /datasets``: its own and the ``data.*`` params."""
    return sorted(
        {*path_fields(DatasetCreate), *(f"params.{n}" for n in path_fields(DataConfig))}
        - {"params.root"}
    )


def test_path_fields_are_found_by_their_marker() -> None:
    fields = {name for _, name in job_path_fields()}
    assert {
        "data.root",
        "data.train_split",
        "data.val_split",
        "data.test_split",
        "init",
        "checkpoint",
        "init.checkpoint",
    } <= fields
    assert {"root", "params.train_split", "params.val_split", "params.test_split"} <= set(
        dataset_path_fields()
    )


@pytest.mark.parametrize("model", SCHEMAS, ids=lambda m: m.__name__)
def test_every_field_named_like_a_path_carries_the_path_marker(model) -> None:
    # a new path field typed as a plain str would escape the walk below: its name gives it away
    marked = set(path_fields(model))
    unmarked = [
        name
        for name in _all_fields(model)
        if PATHLIKE_NAME.search(name.rsplit(".", 1)[-1])
        and name not in marked
        and not any(m.startswith(f"{name}.") for m in marked)
        and name != "init"  # the spec's init is an object holding init.checkpoint
    ]
    assert not unmarked, f"type these fields livt_core.paths.PathStr: {unmarked}"


# --------------------------------------------------------------------------------------------
# hostile values


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the data roots holding a secret file (and a valid dataset layout)."""
    folder = tmp_path / "outside"
    (folder / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "img" / "0.png")
    (folder / "secret.txt").write_text(f"{SECRET} 0\n")
    (folder / "train.txt").write_text("img/0.png 0\n")
    return folder


@pytest.fixture
def split_root(data_root: Path) -> Path:
    """A valid ``splitfile`` dataset inside the data root."""
    root = data_root / "sf"
    (root / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "img" / "0.png")
    (root / "train.txt").write_text("img/0.png 0\n")
    return root


def _hostile_values(field: str, data_root: Path, split_root: Path, outside: Path) -> list[str]:
    """A system file, a ``..`` escape, and a link inside the roots that leads outside."""
    leaf = field.rsplit(".", 1)[-1]
    is_folder = leaf == "root"
    link = (split_root if leaf.endswith("split") else data_root) / f"link-{uuid.uuid4().hex[:6]}"
    link.symlink_to(outside if is_folder else outside / "secret.txt")
    depth = "../" * (len(data_root.parts) + 2)
    return [
        "/proc/self" if is_folder else "/proc/self/environ",
        f"{depth}etc" if is_folder else f"{depth}etc/passwd",
        str(link) if not leaf.endswith("split") else link.name,
    ]


def _set(spec: dict[str, Any], dotted: str, value: Any) -> None:
    node = spec
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _job_spec(
    kind: str, field: str, value: str, split_root: Path, checkpoint: Path
) -> tuple[dict, list[str]]:
    """A spec valid but for ``value`` in ``field``, and the ``loc`` the 422 must name."""
    spec: dict[str, Any] = {"kind": kind, "preset": "fashion-mnist-lt"}
    if kind != "evaluate":
        spec["epochs"] = 1
    if kind != "pretrain":
        spec["init"] = {"checkpoint": str(checkpoint)}
    if field in ("init", "checkpoint", "init.checkpoint"):
        # the run config's init / checkpoint come from the spec's init.checkpoint
        spec["init"] = {"checkpoint": value}
        return spec, ["body", "init", "checkpoint"]
    if field.startswith("data.") and field != "data.root":
        spec["data"] = {"dataset": "splitfile", "root": str(split_root)}
    _set(spec, field, value)
    return spec, ["body", *field.split(".")]


def _assert_reveals_nothing(text: str, outside: Path) -> None:
    assert SECRET not in text
    assert str(outside) not in text
    assert "LIVT_DATABASE_URL" not in text and "root:x:" not in text
    assert "/etc/passwd" not in text
    assert "resolves to" not in text


@pytest.mark.parametrize(("kind", "field"), job_path_fields())
def test_job_path_field_outside_the_roots_is_422(
    client, user, data_root, split_root, outside, make_checkpoint, kind, field
) -> None:
    checkpoint = make_checkpoint()
    for value in _hostile_values(field, data_root, split_root, outside):
        spec, loc = _job_spec(kind, field, value, split_root, checkpoint)
        response = client.post("/jobs", json=spec, headers=user.headers)
        assert response.status_code == 422, (value, response.text)
        errors = response.json()["detail"]
        named = [e for e in errors if e["loc"] == loc]
        assert named, (value, errors)
        assert "outside the data" in named[0]["msg"], (value, named)
        assert "inside a data root" in named[0]["msg"]
        _assert_reveals_nothing(response.text, outside)


@pytest.mark.parametrize("field", dataset_path_fields())
def test_dataset_path_field_outside_the_roots_is_422(
    client, user, data_root, split_root, outside, field
) -> None:
    for value in _hostile_values(field, data_root, split_root, outside):
        body: dict[str, Any] = {"name": f"d-{uuid.uuid4().hex[:6]}", "kind": "splitfile"}
        if field == "root":
            body["root"] = value
        else:
            body["root"] = str(split_root)
            _set(body, field, value)
        response = client.post("/datasets", json=body, headers=user.headers)
        assert response.status_code == 422, (value, response.text)
        loc = ["body", *field.split(".")]
        named = [e for e in response.json()["detail"] if e["loc"] == loc]
        assert named, (value, response.json())
        assert "outside the data roots" in named[0]["msg"]
        _assert_reveals_nothing(response.text, outside)


def test_register_dataset_with_proc_environ_split_file_reveals_nothing(
    client, user, split_root
) -> None:
    # the reported attack: the API's environment came back in the 422
    body = {
        "name": "x",
        "kind": "splitfile",
        "root": str(split_root),
        "params": {"train_split": "/proc/self/environ"},
    }
    response = client.post("/datasets", json=body, headers=user.headers)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "params", "train_split"]
    assert "LIVT_" not in error["msg"].replace("LIVT_DATA_ROOTS", "")


def test_imagefolder_class_folder_linked_outside_is_refused_at_registration(
    client, user, data_root, outside
) -> None:
    root = data_root / "folder-ds"
    for split in ("train", "val"):
        (root / split / "ant").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / split / "ant" / "0.png")
    (root / "train" / "zebra").symlink_to(outside / "img", target_is_directory=True)
    body = {"name": "folder-ds", "kind": "imagefolder", "root": str(root)}
    response = client.post("/datasets", json=body, headers=user.headers)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "root"]
    assert "train/zebra is a link that leads outside the allowed data roots" in error["msg"]
    _assert_reveals_nothing(response.text, outside)


def test_paths_inside_the_roots_are_accepted(client, user, split_root) -> None:
    spec = {
        "kind": "pretrain",
        "preset": "fashion-mnist-lt",
        "epochs": 1,
        "data": {"dataset": "splitfile", "root": str(split_root), "train_split": "train.txt"},
    }
    response = client.post("/jobs", json=spec, headers=user.headers)
    assert response.status_code == 201, response.text
    assert response.json()["config"]["data"]["root"] == str(split_root.resolve())


# --------------------------------------------------------------------------------------------
# the run checks again, right before opening


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_worker_refuses_a_split_file_that_became_a_link_outside(
    settings: Settings, db, make_job, split_root, outside
) -> None:
    from livt_service import state
    from worker.runner import JobRunner

    job = make_job(
        kind="pretrain",
        config={
            "model_kwargs": {"depth": 1, "decoder_depth": 1},
            "data": {
                "dataset": "splitfile",
                "root": str(split_root),
                "train_split": "train.txt",
                "in_chans": 3,
                "img_size": 8,
                "num_workers": 0,
                "mean": None,
                "std": None,
            },
        },
    )
    # after submission the split file is swapped for a link to a secret outside the roots
    (split_root / "train.txt").unlink()
    (split_root / "train.txt").symlink_to(outside / "secret.txt")
    claim = state.claim_job(job.id, "w@host")
    assert claim is not None

    assert JobRunner(claim, heartbeat_seconds=1).run() == "failed"

    with db() as session:
        row = session.get(Job, job.id)
        logs = "\n".join(session.scalars(select(LogLine.message).where(LogLine.job_id == job.id)))
    assert row.failure_reason == "invalid_data"
    assert "data.train_split: path is outside the data roots" in row.failure_message
    for text in (row.failure_message, logs):
        _assert_reveals_nothing(text, outside)
    assert not (Path(row.artifact_dir) / "checkpoint-last.pth").exists()


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_worker_refuses_a_data_root_that_became_a_link_outside(
    settings: Settings, db, make_job, data_root, tmp_path
) -> None:
    from livt_core.data.fashion import BUNDLED_ROOT
    from livt_service import state
    from worker.runner import JobRunner

    # a complete dataset outside the roots: reading it would let the run succeed
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(BUNDLED_ROOT, elsewhere)
    root = data_root / "fm"
    shutil.copytree(BUNDLED_ROOT, root)
    job = make_job(
        kind="pretrain",
        config={
            "max_steps_per_epoch": 1,
            "model_kwargs": {"depth": 1, "decoder_depth": 1},
            "data": {"root": str(root), "num_workers": 0, "img_size": 16},
        },
    )
    shutil.rmtree(root)
    root.symlink_to(elsewhere, target_is_directory=True)
    claim = state.claim_job(job.id, "w@host")
    assert claim is not None

    assert JobRunner(claim, heartbeat_seconds=1).run() == "failed"

    with db() as session:
        row = session.get(Job, job.id)
    assert row.failure_reason == "invalid_data"
    assert "data.root: path is outside the data roots" in row.failure_message
    assert str(elsewhere) not in row.failure_message
