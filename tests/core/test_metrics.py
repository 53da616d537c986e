"""Tests of livt_core.metrics against small hand-computed cases."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from livt_core.metrics import (
    accuracy,
    calibration_errors,
    long_tail_report,
    prediction_distribution_calibration,
    shot_groups,
)


def _logits_with_ranks(labels: list[int], ranks: list[int], num_classes: int) -> torch.Tensor:
    """Logits where the true label of sample i sits at position ranks[i] (0 = top)."""
    rows = []
    for label, rank in zip(labels, ranks, strict=True):
        others = [c for c in range(num_classes) if c != label]
        order = others[:rank] + [label] + others[rank:]
        row = torch.empty(num_classes)
        row[torch.tensor(order)] = torch.arange(num_classes, 0, -1, dtype=torch.float32)
        rows.append(row)
    return torch.stack(rows)


def test_accuracy_top1_and_topk():
    labels = [0, 1, 2, 3, 4]
    logits = _logits_with_ranks(labels, [0, 1, 4, 5, 2], num_classes=6)
    top1, top2, top5, top9 = accuracy(logits, torch.tensor(labels), topk=(1, 2, 5, 9))
    assert top1 == pytest.approx(20.0)
    assert top2 == pytest.approx(40.0)
    assert top5 == pytest.approx(80.0)
    assert top9 == pytest.approx(100.0)  # k > C counts as k = C


def test_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match="topk"):
        accuracy(torch.randn(2, 3), torch.tensor([0, 1]), topk=(0,))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        accuracy(torch.randn(2, 3), torch.tensor([0, 3]))


def test_shot_groups_boundaries():
    groups = shot_groups([101, 100, 20, 19, 0, 5000])
    assert groups == {"many": [0, 5], "medium": [1, 2], "few": [3, 4]}


def test_shot_groups_custom_thresholds():
    assert shot_groups([10, 5, 1], many_thr=6, few_thr=2) == {
        "many": [0],
        "medium": [1],
        "few": [2],
    }


def test_calibration_errors_hand_built():
    probs = torch.tensor([[0.9, 0.1], [0.92, 0.08], [0.3, 0.7], [0.45, 0.55]])
    labels = torch.tensor([0, 1, 1, 0])
    # 15 bins: 0.9 and 0.92 share bin (13/15, 14/15] (acc 0.5, conf 0.91, gap 0.41),
    # 0.7 is alone in (10/15, 11/15] (gap 0.3), 0.55 alone in (8/15, 9/15] (gap 0.55).
    ece, mce = calibration_errors(probs, labels)
    assert ece == pytest.approx(100 * (0.5 * 0.41 + 0.25 * 0.3 + 0.25 * 0.55))
    assert mce == pytest.approx(55.0)


def test_calibration_bin_upper_edge_is_inclusive():
    # Confidence 0.5 belongs to bin (0, 0.5]; were it put in (0.5, 1], MCE would be 25.
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    ece, mce = calibration_errors(probs, torch.tensor([1, 0]), n_bins=2)
    assert ece == pytest.approx(25.0)
    assert mce == pytest.approx(50.0)


def test_calibration_rejects_logits():
    with pytest.raises(ValueError, match="softmax"):
        calibration_errors(torch.tensor([[2.0, -1.0]]), torch.tensor([0]))


def test_pdc_hand_built():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 2])
    train = [6, 3, 1]
    eps = 1e-6
    p_test = [1 / 3, 1 / 3, 1 / 3]
    q_pred = [3 / 6, 2 / 6, 1 / 6]
    p_train = [0.6, 0.3, 0.1]

    def kl(p, q):
        return sum(a * (math.log(a + eps) - math.log(b + eps)) for a, b in zip(p, q, strict=True))

    expected = kl(p_test, q_pred) / kl(p_test, p_train)
    assert prediction_distribution_calibration(preds, labels, train) == pytest.approx(expected)


def test_pdc_perfect_predictions_is_zero():
    labels = torch.tensor([0, 1, 2, 2])
    assert prediction_distribution_calibration(labels, labels, [10, 5, 1]) == pytest.approx(0.0)


def test_pdc_undefined_when_train_matches_test():
    labels = torch.tensor([0, 1, 2])
    assert prediction_distribution_calibration(torch.tensor([0, 0, 0]), labels, [7, 7, 7]) is None


def _report_case() -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """4 classes: many = {0}, medium = {1, 2}, few = {3}; 10 test samples."""
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 3, 3])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 2, 2, 0, 2])
    logits = 3.0 * F.one_hot(preds, 4).float()
    return logits, labels, [200, 50, 30, 5]


def test_long_tail_report_hand_computed():
    logits, labels, counts = _report_case()
    report = long_tail_report(logits, labels, counts, class_names=["a", "b", "c", "d"])
    assert report["overall"] == pytest.approx(60.0)  # 6 of 10
    assert report["top5"] == pytest.approx(100.0)  # top-min(5, 4) of 4 classes
    assert report["many"] == pytest.approx(75.0)  # class 0: 3/4
    assert report["medium"] == pytest.approx(75.0)  # mean(1/2, 2/2)
    assert report["few"] == pytest.approx(0.0)  # class 3: 0/2
    assert report["confusion_matrix"] == [[3, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 0], [1, 0, 1, 0]]
    assert report["group_sizes"] == {"many": 1, "medium": 2, "few": 1}
    assert report["class_counts"] == counts
    assert report["num_samples"] == 10
    assert report["per_class"][1] == {
        "class": 1,
        "name": "b",
        "accuracy": 50.0,
        "train_count": 50,
        "support": 2,
        "group": "medium",
    }
    probs = logits.double().softmax(dim=1)
    assert (report["ece"], report["mce"]) == pytest.approx(calibration_errors(probs, labels))
    expected_pdc = prediction_distribution_calibration(logits.argmax(1), labels, counts)
    assert report["pdc"] == pytest.approx(expected_pdc)
    json.dumps(report)  # plain JSON types only


def test_long_tail_report_empty_groups_and_unseen_class():
    labels = [0, 1, 2, 3, 4]
    logits = _logits_with_ranks(labels, [0, 1, 4, 5, 0], num_classes=6)
    counts = [500, 300, 150, 120, 101, 400]  # every class is "many"; class 5 has no test sample
    report = long_tail_report(logits, torch.tensor(labels), counts)
    assert report["medium"] is None and report["few"] is None
    assert report["many"] == pytest.approx(40.0)  # mean of 100, 0, 0, 0, 100; class 5 excluded
    assert report["overall"] == pytest.approx(40.0)
    assert report["top5"] == pytest.approx(80.0)  # rank 5 is the sixth place
    assert report["per_class"][5]["accuracy"] is None
    assert report["per_class"][5]["support"] == 0
    assert report["per_class"][0]["name"] is None
    assert report["group_sizes"] == {"many": 6, "medium": 0, "few": 0}
    json.dumps(report)


def test_long_tail_report_rejects_mismatched_inputs():
    logits, labels, counts = _report_case()
    with pytest.raises(ValueError, match="3 class counts"):
        long_tail_report(logits, labels, counts[:3])
    with pytest.raises(ValueError, match="class names"):
        long_tail_report(logits, labels, counts, class_names=["a"])
    with pytest.raises(ValueError, match="NaN"):
        long_tail_report(torch.full_like(logits, float("nan")), labels, counts)
