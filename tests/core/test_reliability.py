"""The 15 reliability bins of the evaluate report: they add up to the report's ECE."""

from __future__ import annotations

import math

import torch

from livt_core.metrics import calibration_errors, long_tail_report, reliability_bins


def test_bins_hand_built():
    probs = torch.tensor([[0.95, 0.05], [0.9, 0.1], [0.3, 0.7], [0.55, 0.45]])
    labels = torch.tensor([0, 1, 1, 0])
    bins = reliability_bins(probs, labels, n_bins=2)
    assert [(b["lo"], b["hi"], b["count"]) for b in bins] == [(0.0, 0.5, 0), (0.5, 1.0, 4)]
    assert bins[0]["accuracy"] is None and bins[0]["confidence"] is None
    assert math.isclose(bins[1]["accuracy"], 0.75)
    assert math.isclose(bins[1]["confidence"], (0.95 + 0.9 + 0.7 + 0.55) / 4, rel_tol=1e-6)


def test_report_carries_15_bins_that_give_its_ece():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 6, generator=gen) * 2
    labels = torch.randint(0, 6, (300,), generator=gen)
    report = long_tail_report(logits, labels, [200, 120, 60, 30, 10, 5])
    bins = report["reliability"]
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 300
    assert math.isclose(bins[-1]["hi"], 1.0) and bins[0]["lo"] == 0.0
    ece = sum(b["count"] / 300 * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    assert math.isclose(100 * ece, report["ece"], rel_tol=1e-6)
    assert math.isclose(
        report["ece"], calibration_errors(logits.softmax(1), labels)[0], rel_tol=1e-6
    )
