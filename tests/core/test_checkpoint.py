"""Checkpoints: atomic saving, safe loading of released-format files, state-dict extraction."""

from __future__ import annotations

import argparse
import pickle
import types

import numpy as np
import pytest
import torch

from livt_core.checkpoint import extract_model_state, load_checkpoint, save_checkpoint
from livt_core.errors import CheckpointError
from livt_core.models import create_model

UNPICKLE_CALLS: list[str] = []


def _record(text: str) -> str:
    UNPICKLE_CALLS.append(text)
    return text


class Payload:
    """A custom class: unpickling it would call ``_record``."""

    def __reduce__(self):
        return (_record, ("unpickled",))


def released_payload(model: torch.nn.Module, epoch: int) -> dict:
    """A checkpoint shaped like the released LiVT / MAE files, with a real optimizer state."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    for group in optimizer.param_groups:
        group["lr_scale"] = 0.5
    out = model(torch.randn(2, 3, 32, 32))
    (out[0] if isinstance(out, tuple) else out.sum()).backward()
    optimizer.step()
    args = argparse.Namespace(
        model="mae_vit_nano_patch4", mask_ratio=0.75, blr=1.5e-4, resume="", cls_num=[5, 3, 1]
    )
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "scaler": None,
        "args": args,
    }


@pytest.mark.parametrize("name", ["mae_vit_nano_patch4", "vit_nano_patch4"])
def test_released_format_round_trip_loads_strictly(tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name)
    path = tmp_path / "checkpoint-799.pth"
    save_checkpoint(path, released_payload(model, 799))

    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 799 and loaded["scaler"] is None
    assert isinstance(loaded["args"], argparse.Namespace)
    assert loaded["args"].cls_num == [5, 3, 1]
    fresh = create_model(name)
    fresh.load_state_dict(extract_model_state(loaded), strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    optimizer = torch.optim.AdamW(fresh.parameters())
    optimizer.load_state_dict(loaded["optimizer"])
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)


def test_numpy_scalars_load(tmp_path):
    path = tmp_path / "timm-era.pth"
    torch.save(
        {"model": {"w": torch.ones(2)}, "best_acc": np.float64(60.34), "count": np.int64(5)}, path
    )
    loaded = load_checkpoint(path)
    assert loaded["best_acc"] == pytest.approx(60.34)
    assert loaded["count"] == 5


NUMPY_SCALAR = np.float64(0).__reduce__()[0]


class _Numpy1Pickler(pickle._Pickler):
    """Writes numpy scalars under the numpy 1.x name ``numpy.core.multiarray.scalar``."""

    def save_global(self, obj, name=None):
        if obj is NUMPY_SCALAR:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def test_numpy1_scalar_name_loads(tmp_path):
    path = tmp_path / "numpy1.pth"
    numpy1_pickle = types.ModuleType("numpy1_pickle")
    numpy1_pickle.Pickler = _Numpy1Pickler
    torch.save({"best_acc": np.float64(1.5)}, path, pickle_module=numpy1_pickle)
    assert b"numpy.core.multiarray" in path.read_bytes()
    assert load_checkpoint(path)["best_acc"] == 1.5


def test_disallowed_global_is_refused_without_unpickling_it(tmp_path):
    path = tmp_path / "custom.pth"
    torch.save({"model": {"w": torch.ones(1)}, "args": Payload()}, path)
    UNPICKLE_CALLS.clear()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "_record" in str(err.value) and "not allowed" in str(err.value)
    assert UNPICKLE_CALLS == []


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope" / "checkpoint-last.pth"
    with pytest.raises(CheckpointError, match="does not exist") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint\n", "truncated"])
def test_unreadable_files_raise_checkpoint_error(tmp_path, content):
    path = tmp_path / "bad.pth"
    if content == "truncated":
        torch.save({"model": {"w": torch.ones(1000)}}, path)
        content = path.read_bytes()[:500]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_checkpoint(path)


def test_non_dict_checkpoint_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.ones(1)], path)
    with pytest.raises(CheckpointError, match="not a dict"):
        load_checkpoint(path)


def test_save_creates_parents_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "run" / "nested" / "checkpoint-last.pth"
    save_checkpoint(path, {"epoch": 1})
    save_checkpoint(path, {"epoch": 2})
    assert load_checkpoint(path)["epoch"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint-last.pth"]


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "checkpoint-last.pth"
    save_checkpoint(path, {"epoch": 1, "model": {"w": torch.ones(3)}})
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint(path, {"epoch": 2, "model": {"w": torch.ones(3)}, "bad": lambda: None})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-last.pth"]


def test_extract_model_state_accepts_the_common_layouts():
    state = {"cls_token": torch.zeros(1, 1, 4), "head.weight": torch.ones(2, 4)}
    assert extract_model_state(state).keys() == state.keys()
    assert extract_model_state({"model": state, "epoch": 3}).keys() == state.keys()
    assert extract_model_state({"state_dict": state}).keys() == state.keys()
    ddp = {f"module.{k}": v for k, v in state.items()}
    extracted = extract_model_state({"model": ddp})
    assert list(extracted) == ["cls_token", "head.weight"]
    assert extracted["head.weight"] is state["head.weight"]


@pytest.mark.parametrize(
    "obj",
    [
        [torch.ones(1)],
        {},
        {"epoch": 3, "args": {"lr": 1.0}},
        {"model": {"w": torch.ones(1), "step": 3}},
        {"model": "vit_base_patch16"},
    ],
)
def test_extract_model_state_rejects_non_state_dicts(obj):
    with pytest.raises(CheckpointError, match="not a state dict"):
        extract_model_state(obj)
