"""Evaluation metrics for long-tailed classification, as small pure functions.

Nothing here is distributed: gather logits and labels from every rank first, then call
:func:`long_tail_report` once. Accuracies and calibration errors are percentages. Computation
runs on CPU in float64, whatever the input device and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from livt_core.contract import SHOT_GROUPS as GROUPS
from livt_core.contract import shot_groups

__all__ = ["GROUPS", "shot_groups"]  # re-exported: they belong to the run contract


def _labels_cpu(labels: Tensor, num_classes: int, what: str = "labels") -> Tensor:
    """Validate integer labels ``[N]`` in ``[0, C)`` and return them as CPU int64."""
    if labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"{what} must be an integer tensor [N], got {labels.dtype} {tuple(labels.shape)}"
        )
    labels = labels.detach().to("cpu", torch.int64)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{what} must lie in [0, {num_classes})")
    return labels


def _scores_cpu(scores: Tensor, labels: Tensor, what: str = "logits") -> Tensor:
    """Validate ``[N, C]`` finite scores matching ``labels: [N]``; return CPU float64."""
    if scores.ndim != 2 or not scores.is_floating_point():
        raise ValueError(
            f"{what} must be a floating-point tensor [N, C], got {scores.dtype} "
            f"{tuple(scores.shape)}"
        )
    if scores.shape[0] == 0:
        raise ValueError(f"{what} are empty: there is nothing to evaluate")
    if labels.ndim != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"{tuple(labels.shape)} labels for {scores.shape[0]} rows of {what}")
    scores = scores.detach().to("cpu", torch.float64)
    if not torch.isfinite(scores).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return scores


def accuracy(logits: Tensor, target: Tensor, topk: Sequence[int] = (1,)) -> list[float]:
    """Top-k accuracies in percent.

    Args:
        logits: ``[N, C]`` scores (logits or probabilities).
        target: ``[N]`` integer labels.
        topk: the ``k`` values; ``k > C`` counts as ``k = C`` (every label is in the top C).

    Returns:
        One percentage per ``k``, in the order of ``topk``.
    """
    if not topk or min(topk) < 1:
        raise ValueError(f"topk values must be ≥ 1, got {tuple(topk)}")
    scores = _scores_cpu(logits, target)
    labels = _labels_cpu(target, scores.shape[1])
    maxk = min(max(topk), scores.shape[1])
    ranked = scores.topk(maxk, dim=1).indices  # [N, maxk]
    hits = ranked.eq(labels.unsqueeze(1))  # [N, maxk]
    return [100.0 * hits[:, : min(k, maxk)].any(dim=1).double().mean().item() for k in topk]


def calibration_errors(probs: Tensor, labels: Tensor, n_bins: int = 15) -> tuple[float, float]:
    """Expected and maximum calibration error, in percent.

    The confidence of a sample is its largest probability; samples fall into ``n_bins``
    equal-width bins ``(b/B, (b+1)/B]`` (a confidence of exactly 0 goes to the first bin).
    ``ECE = Σ_b (n_b / N) · |acc_b − conf_b|`` and ``MCE = max_b |acc_b − conf_b|`` over
    non-empty bins.

    Args:
        probs: ``[N, C]`` probabilities, rows summing to 1 (e.g. ``logits.softmax(dim=1)``).
        labels: ``[N]`` integer labels.
        n_bins: number of bins (15 in the long-tail literature).

    Returns:
        ``(ece, mce)``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be ≥ 1, got {n_bins}")
    p = _scores_cpu(probs, labels, what="probs")
    y = _labels_cpu(labels, p.shape[1])
    if (p < 0).any() or (p.sum(dim=1) - 1.0).abs().max() > 1e-3:
        raise ValueError("probs must be probabilities (rows ≥ 0 summing to 1); apply softmax")
    confidence, predicted = p.max(dim=1)  # [N], [N]
    correct = predicted.eq(y).double()  # [N]
    inner_edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)[1:-1]
    bins = torch.bucketize(confidence, inner_edges, right=False)  # [N] in [0, B)
    count = torch.bincount(bins, minlength=n_bins).double()  # [B]
    conf_sum = torch.bincount(bins, weights=confidence, minlength=n_bins)  # [B]
    acc_sum = torch.bincount(bins, weights=correct, minlength=n_bins)  # [B]
    filled = count > 0
    gap = (acc_sum[filled] - conf_sum[filled]).abs() / count[filled]  # [B_filled]
    ece = (gap * count[filled]).sum().item() / y.numel()
    return 100.0 * ece, 100.0 * gap.max().item()


def reliability_bins(probs: Tensor, labels: Tensor, n_bins: int = 15) -> list[dict[str, Any]]:
    """The ``n_bins`` confidence bins behind :func:`calibration_errors`, for a reliability
    diagram: ``[{"lo", "hi", "count", "accuracy", "confidence"}]`` with the bin edges and the
    bin's mean accuracy / confidence as fractions in [0, 1] (``None`` for an empty bin).
    ``ECE = Σ count / N · |accuracy − confidence|`` over these bins."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be ≥ 1, got {n_bins}")
    p = _scores_cpu(probs, labels, what="probs")
    y = _labels_cpu(labels, p.shape[1])
    confidence, predicted = p.max(dim=1)
    correct = predicted.eq(y).double()
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    bins = torch.bucketize(confidence, edges[1:-1], right=False)
    count = torch.bincount(bins, minlength=n_bins)
    conf_sum = torch.bincount(bins, weights=confidence, minlength=n_bins)
    acc_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    out = []
    for b in range(n_bins):
        n = int(count[b])
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "count": n,
                "accuracy": float(acc_sum[b]) / n if n else None,
                "confidence": float(conf_sum[b]) / n if n else None,
            }
        )
    return out


def prediction_distribution_calibration(
    pred_labels: Tensor, labels: Tensor, train_counts: Sequence[int], eps: float = 1e-6
) -> float | None:
    """PDC: how far the predicted label distribution is from the test label distribution,
    relative to how far the training distribution is from it. Lower is better.

    ``PDC = KL(p_test ‖ q_pred) / KL(p_test ‖ p_train)`` with ``p_test`` the histogram of the
    true test labels, ``q_pred`` the histogram of the predicted labels and ``p_train`` the
    training prior, all normalised; ``KL(p ‖ q) = Σ_c p_c (log(p_c + ε) − log(q_c + ε))``.

    Args:
        pred_labels: ``[N]`` predicted labels.
        labels: ``[N]`` true test labels.
        train_counts: training images per class, ``[C]``.
        eps: the ``ε`` inside the logs.

    Returns:
        The ratio, or ``None`` when ``p_train`` equals ``p_test`` (e.g. a balanced training
        set evaluated on a balanced test set): the reference divergence is then 0 and PDC is
        undefined.
    """
    counts = torch.as_tensor(list(train_counts), dtype=torch.float64)
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("train_counts must be non-negative per-class counts, not all zero")
    c = counts.numel()
    y = _labels_cpu(labels, c)
    pred = _labels_cpu(pred_labels, c, what="pred_labels")
    if y.numel() == 0 or pred.shape != y.shape:
        raise ValueError(f"{tuple(pred.shape)} predictions for {tuple(y.shape)} labels")
    p_test = torch.bincount(y, minlength=c).double() / y.numel()
    q_pred = torch.bincount(pred, minlength=c).double() / pred.numel()
    p_train = counts / counts.sum()

    def kl(p: Tensor, q: Tensor) -> float:
        return (p * ((p + eps).log() - (q + eps).log())).sum().item()

    reference = kl(p_test, p_train)
    if reference <= 1e-12:
        return None
    return kl(p_test, q_pred) / reference


def long_tail_report(
    logits: Tensor,
    labels: Tensor,
    class_counts: Sequence[int],
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The full long-tail evaluation of one split, JSON-serialisable.

    Args:
        logits: ``[N, C]`` raw model outputs for the whole split (gathered from all ranks).
        labels: ``[N]`` true labels.
        class_counts: **training** images per class, ``[C]``: they define the shot groups and
            PDC's training prior, and are recorded in the report.
        class_names: optional ``[C]`` names for ``per_class``.

    Returns:
        A dict with

        - ``overall`` / ``top5``: micro top-1 / top-``min(5, C)`` accuracy (%);
        - ``many`` / ``medium`` / ``few``: mean of the per-class accuracies of the group (%)
          (groups from :func:`shot_groups`), ``None`` for a group without evaluated classes;
        - ``ece`` / ``mce`` (%) from :func:`calibration_errors` on ``softmax(logits)``, and
          ``reliability``: its 15 bins (:func:`reliability_bins`);
        - ``pdc`` from :func:`prediction_distribution_calibration` (``None`` when undefined);
        - ``per_class``: ``[{"class", "name", "accuracy", "train_count", "support", "group"}]``
          (``name`` is ``None`` without ``class_names``);
        - ``confusion_matrix``: ``C × C`` counts, rows = true class, columns = prediction;
        - ``class_counts``, ``group_sizes`` (classes per group), ``num_samples``.

        A class with no test sample has ``accuracy: None`` and is left out of its group mean
        (``group_sizes`` still counts it).
    """
    counts = [int(n) for n in class_counts]
    scores = _scores_cpu(logits, labels)
    n, c = scores.shape
    if len(counts) != c:
        raise ValueError(f"{len(counts)} class counts for logits with {c} classes")
    if class_names is not None and len(class_names) != c:
        raise ValueError(f"{len(class_names)} class names for {c} classes")
    y = _labels_cpu(labels, c)
    pred = scores.argmax(dim=1)  # [N]

    top1, top5 = accuracy(scores, y, topk=(1, min(5, c)))
    confusion = torch.bincount(y * c + pred, minlength=c * c).reshape(c, c)  # [C, C]
    support = confusion.sum(dim=1)  # [C]
    correct = confusion.diagonal()  # [C]
    groups = shot_groups(counts)
    group_of = {cls: name for name, members in groups.items() for cls in members}

    per_class: list[dict[str, Any]] = []
    for cls in range(c):
        n_test = int(support[cls])
        per_class.append(
            {
                "class": cls,
                "name": class_names[cls] if class_names is not None else None,
                "accuracy": 100.0 * int(correct[cls]) / n_test if n_test else None,
                "train_count": counts[cls],
                "support": n_test,
                "group": group_of[cls],
            }
        )

    def group_mean(members: list[int]) -> float | None:
        values = [per_class[m]["accuracy"] for m in members if per_class[m]["accuracy"] is not None]
        return math.fsum(values) / len(values) if values else None

    probs = scores.softmax(dim=1)
    ece, mce = calibration_errors(probs, y)
    return {
        "overall": top1,
        "top5": top5,
        **{name: group_mean(groups[name]) for name in GROUPS},
        "ece": ece,
        "mce": mce,
        "reliability": reliability_bins(probs, y),
        "pdc": prediction_distribution_calibration(pred, y, counts),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "class_counts": counts,
        "group_sizes": {name: len(groups[name]) for name in GROUPS},
        "num_samples": n,
    }
