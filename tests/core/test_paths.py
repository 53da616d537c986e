"""``livt_core.paths``: one confinement function for every user path, and the path marker."""

from __future__ import annotations

from pathlib import Path

import pytest

from livt_core.config import DataConfig, FinetuneConfig
from livt_core.errors import ConfigError
from livt_core.paths import (
    PathOutsideRootsError,
    PathPolicy,
    confine_config_paths,
    confine_path,
    path_fields,
    unsafe_json_values,
)


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "ds").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("s3cr3t")
    return root, outside


def test_confine_path_accepts_paths_inside_and_resolves_links(roots) -> None:
    root, _ = roots
    (root / "alias").symlink_to(root / "ds", target_is_directory=True)
    assert confine_path(root / "ds", [root], field="data.root") == (root / "ds").resolve()
    assert confine_path("ds", [root], field="data.root") == (root / "ds").resolve()
    assert confine_path(str(root / "alias"), [root], field="x") == (root / "ds").resolve()
    assert confine_path("x.txt", [root], field="x", base=root / "ds") == root / "ds" / "x.txt"


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "link", "link-in-base"])
def test_confine_path_refuses_escapes_without_saying_where(roots, kind) -> None:
    root, outside = roots
    (root / "ds" / "link").symlink_to(outside / "secret")
    value, base = {
        "absolute": (str(outside / "secret"), None),
        "dotdot": ("../outside/secret", None),
        "link": (str(root / "ds" / "link"), None),
        "link-in-base": ("link", root / "ds"),
    }[kind]
    with pytest.raises(PathOutsideRootsError) as info:
        confine_path(value, [root], field="data.train_split", base=base)
    assert info.value.field == "data.train_split"
    assert "path is outside the data roots" in str(info.value)
    assert str(outside) not in str(info.value) and "secret" not in str(info.value)


@pytest.mark.parametrize("value", ["", "a\x00b", "x" * 5000])
def test_confine_path_refuses_unusable_text(roots, value) -> None:
    with pytest.raises(ConfigError) as info:
        confine_path(value, [roots[0]], field="root")
    assert info.value.field == "root"


def test_confine_path_without_roots_refuses_everything(roots) -> None:
    with pytest.raises(PathOutsideRootsError):
        confine_path(roots[0] / "ds", [], field="root")


def test_path_fields_follow_the_marker() -> None:
    assert path_fields(DataConfig) == ["root", "train_split", "val_split", "test_split"]
    assert set(path_fields(FinetuneConfig)) == {
        "data.root",
        "data.train_split",
        "data.val_split",
        "data.test_split",
        "init",
    }


def test_confine_config_paths_takes_split_files_from_the_root(roots) -> None:
    root, outside = roots
    values = {"data": {"root": str(root / "ds"), "train_split": "train.txt"}, "init": None}
    policy = PathPolicy((root,))
    resolved = confine_config_paths(FinetuneConfig, values, policy)
    assert resolved["data.train_split"] == (root / "ds" / "train.txt").resolve()
    values["data"]["val_split"] = "../../outside/secret"
    with pytest.raises(PathOutsideRootsError) as info:
        confine_config_paths(FinetuneConfig, values, policy)
    assert info.value.field == "data.val_split"


def test_checkpoints_may_also_come_from_the_checkpoint_roots(roots, tmp_path) -> None:
    root, _ = roots
    artifacts = tmp_path / "artifacts" / "j_1"
    values = {"init": str(artifacts / "checkpoint-last.pth")}
    with pytest.raises(PathOutsideRootsError, match="data or checkpoint roots"):
        confine_config_paths(FinetuneConfig, values, PathPolicy((root,)))
    policy = PathPolicy((root,), (artifacts,))
    assert confine_config_paths(FinetuneConfig, values, policy)["init"].name.endswith(".pth")
    # data never comes from the checkpoint roots
    with pytest.raises(PathOutsideRootsError):
        confine_config_paths(FinetuneConfig, {"data": {"root": str(artifacts)}}, policy)


def test_unsafe_json_values_names_every_location() -> None:
    found = dict(unsafe_json_values({"a": [1.0, float("nan")], "b\x00": 1, "c": {"d": "x\x00"}}))
    assert set(found) == {("a", 1), ("b\x00",), ("c", "d")}
    assert not list(unsafe_json_values({"a": [1, 2.5, "ok", None, True]}))
