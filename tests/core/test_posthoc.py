"""Post-hoc logit adjustment and temperature scaling (``livt_core.posthoc``)."""

from __future__ import annotations

import math

import pytest
import torch

from livt_core.checkpoint import save_checkpoint
from livt_core.config import ConfigErrors, resolve_config
from livt_core.engine import run
from livt_core.posthoc import (
    adjust_logits,
    best_tau,
    calibration_report,
    fit_temperature,
    tradeoff_curve,
)

#: Class 0 is a many-shot class (500 images), class 1 a few-shot one (10): the adjustment
#: raises class 1's logit relative to class 0's by τ · log(500 / 10) = 3.912 τ.
COUNTS = [500, 10]
LOGITS = torch.tensor([[0.0, -2.0], [0.0, -1.0], [0.0, -5.0]])
LABELS = torch.tensor([0, 1, 1])


def test_adjust_logits_subtracts_tau_times_the_log_prior():
    adjusted = adjust_logits(LOGITS, COUNTS, 1.0)
    margin = adjusted[:, 1] - adjusted[:, 0] - (LOGITS[:, 1] - LOGITS[:, 0]).double()
    assert torch.allclose(margin, torch.full((3,), math.log(50.0), dtype=torch.float64))
    assert torch.equal(adjust_logits(LOGITS, COUNTS, 0.0), LOGITS.double())


def test_tradeoff_curve_moves_predictions_from_head_to_tail():
    # sample 1 turns right above τ = 1/3.912, sample 0 wrong above 2/3.912, sample 2 right
    # above 5/3.912
    curve = tradeoff_curve(LOGITS, LABELS, COUNTS, [0.0, 0.4, 1.0, 2.0])
    assert [p["tau"] for p in curve] == [0.0, 0.4, 1.0, 2.0]
    assert [round(p["overall"], 6) for p in curve] == [33.333333, 66.666667, 33.333333, 66.666667]
    assert [p["many"] for p in curve] == [100.0, 100.0, 0.0, 0.0]
    assert [p["few"] for p in curve] == [0.0, 50.0, 50.0, 100.0]
    assert all(p["medium"] is None for p in curve)
    assert best_tau(curve) == 0.4
    assert best_tau([]) is None


def test_fit_temperature_matches_the_closed_form():
    # every sample has logits [0, 4] and 3 of 4 are class 1: the NLL is least where
    # sigmoid(4 / T) = 3/4, i.e. T = 4 / log 3; scaled, confidence equals accuracy (ECE 0)
    logits = torch.tensor([[0.0, 4.0]] * 4)
    labels = torch.tensor([1, 1, 1, 0])
    assert fit_temperature(logits, labels) == pytest.approx(4.0 / math.log(3.0), rel=1e-6)
    report = calibration_report(logits, labels, logits, labels, fit_split="val")
    assert report["ece"] == pytest.approx(100.0 * (torch.sigmoid(torch.tensor(4.0)).item() - 0.75))
    assert report["ece_scaled"] == pytest.approx(0.0, abs=1e-4)
    assert report["fit_split"] == "val"


DATA = {"img_size": 16, "in_chans": 1, "num_workers": 0, "n_max": 200, "val_per_class": 10}
TINY_VIT = {"depth": 1, "embed_dim": 32, "num_heads": 2}


@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluate_reports_the_posthoc_curve_from_one_pass(tmp_path, split):
    from livt_core.models import create_model

    model = create_model(
        "vit_nano_patch4", img_size=16, in_chans=1, num_classes=10, global_pool=True, **TINY_VIT
    )
    save_checkpoint(tmp_path / "clf.pth", {"model": model.state_dict()})
    config = resolve_config(
        "evaluate",
        None,
        {
            "data": DATA,
            "model": "vit_nano_patch4",
            "model_kwargs": TINY_VIT,
            "checkpoint": str(tmp_path / "clf.pth"),
            "split": split,
            "posthoc_tau": [0, 1, 2],
        },
    )
    result = run(config, tmp_path / "ev").result
    assert [p["tau"] for p in result["posthoc"]] == [0.0, 1.0, 2.0]
    # τ = 0 is the model as trained: the same numbers as the report itself
    for key in ("overall", "many", "medium", "few"):
        assert result["posthoc"][0][key] == pytest.approx(result[key])
    assert result["posthoc_best_tau"] in (0.0, 1.0, 2.0)
    calibration = result["calibration"]
    assert calibration["fit_split"] == "val"
    assert calibration["ece"] == pytest.approx(result["ece"])
    assert calibration["temperature"] > 0


@pytest.mark.parametrize("taus", [[-1.0], [0.5, 0.5], [11.0]])
def test_posthoc_tau_out_of_range_or_repeated_names_the_field(taus):
    with pytest.raises(ConfigErrors) as info:
        resolve_config("evaluate", None, {"posthoc_tau": taus})
    assert [e.field for e in info.value.errors] == ["posthoc_tau"]
