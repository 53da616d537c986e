"""Post-hoc logit adjustment and temperature scaling: one trained classifier, the whole
head / tail trade-off, without retraining.

- :func:`adjust_logits`: ``z − τ · log π`` (Menon et al., *Long-tail learning via logit
  adjustment*, ICLR 2021), ``π`` the training class prior. ``τ = 0`` is the model as trained;
  larger ``τ`` moves predictions from head to tail classes.
- :func:`tradeoff_curve`: top-1 overall and many / medium / few accuracy for each ``τ``.
- :func:`fit_temperature`: the temperature ``T`` minimising the negative log-likelihood of
  ``softmax(z / T)`` on held-out logits (Guo et al. 2017); :func:`calibration_report` gives ECE
  before and after it.

Like :mod:`livt_core.metrics`, everything runs on CPU in float64 and returns percentages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from livt_core.contract import SHOT_GROUPS, shot_groups
from livt_core.metrics import _labels_cpu, _scores_cpu, calibration_errors

#: Most τ values one evaluate run may ask for.
MAX_TAUS = 64
#: Search interval of ``log T`` in :func:`fit_temperature`: ``T ∈ [e^-5, e^5]``.
LOG_T_BOUNDS = (-5.0, 5.0)


def log_prior(class_counts: Sequence[int]) -> Tensor:
    """``log π`` ``[C]`` of training counts; a class without training images counts as 1 so that
    the log stays finite (it then gets the largest boost)."""
    counts = torch.as_tensor([int(n) for n in class_counts], dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() == 0 or (counts < 0).any():
        raise ValueError("class_counts must be non-negative per-class training counts")
    counts = counts.clamp(min=1.0)
    return (counts / counts.sum()).log()


def adjust_logits(logits: Tensor, class_counts: Sequence[int], tau: float) -> Tensor:
    """``logits − τ · log π``: ``[N, C]`` float64 on CPU."""
    if not math.isfinite(tau):
        raise ValueError(f"tau must be finite, got {tau}")
    scores = logits.detach().to("cpu", torch.float64)
    prior = log_prior(class_counts)
    if scores.ndim != 2 or scores.shape[1] != prior.numel():
        raise ValueError(f"{prior.numel()} class counts for logits of shape {tuple(scores.shape)}")
    return scores - tau * prior


def group_accuracies(
    scores: Tensor, labels: Tensor, class_counts: Sequence[int]
) -> dict[str, float | None]:
    """Top-1 ``overall`` (micro) and the ``many`` / ``medium`` / ``few`` means of per-class
    accuracy, as :func:`livt_core.metrics.long_tail_report` computes them (a class without test
    samples is left out of its group; a group without evaluated classes is ``None``)."""
    scores = _scores_cpu(scores, labels)
    c = scores.shape[1]
    y = _labels_cpu(labels, c)
    pred = scores.argmax(dim=1)
    hit = pred.eq(y).double()
    support = torch.bincount(y, minlength=c).double()
    correct = torch.bincount(y, weights=hit, minlength=c)
    out: dict[str, float | None] = {"overall": 100.0 * hit.mean().item()}
    for name, members in shot_groups(list(class_counts)).items():
        values = [100.0 * correct[m].item() / support[m].item() for m in members if support[m] > 0]
        out[name] = math.fsum(values) / len(values) if values else None
    return out


def tradeoff_curve(
    logits: Tensor, labels: Tensor, class_counts: Sequence[int], taus: Sequence[float]
) -> list[dict[str, float | None]]:
    """One ``{"tau", "overall", "many", "medium", "few"}`` per ``τ``, in the order given."""
    return [
        {
            "tau": float(tau),
            **group_accuracies(adjust_logits(logits, class_counts, tau), labels, class_counts),
        }
        for tau in taus
    ]


def best_tau(curve: Sequence[dict[str, Any]]) -> float | None:
    """The ``τ`` of the best ``overall`` (the smallest such ``τ`` on a tie), None if empty."""
    scored = [p for p in curve if p.get("overall") is not None]
    if not scored:
        return None
    return min(scored, key=lambda p: (-p["overall"], p["tau"]))["tau"]


def _nll(scores: Tensor, y: Tensor, log_t: float) -> float:
    return torch.nn.functional.cross_entropy(scores / math.exp(log_t), y).item()


def fit_temperature(logits: Tensor, labels: Tensor, iterations: int = 80) -> float:
    """The temperature ``T > 0`` minimising ``NLL(softmax(logits / T), labels)``.

    The NLL is convex in ``1 / T``, hence unimodal in ``log T``: a golden-section search over
    ``log T ∈ [-5, 5]`` finds it deterministically (to about 1e-8 relative: the NLL is flat
    to float64 precision closer to its minimum).
    """
    scores = _scores_cpu(logits, labels)
    y = _labels_cpu(labels, scores.shape[1])
    lo, hi = LOG_T_BOUNDS
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll(scores, y, a), _nll(scores, y, b)
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll(scores, y, a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll(scores, y, b)
    return math.exp((lo + hi) / 2.0)


def calibration_report(
    logits: Tensor,
    labels: Tensor,
    fit_logits: Tensor,
    fit_labels: Tensor,
    *,
    fit_split: str,
) -> dict[str, Any]:
    """ECE of ``softmax(logits)`` before and after dividing by the temperature fitted on
    ``fit_logits`` / ``fit_labels`` (the validation split): ``{"ece", "ece_scaled",
    "temperature", "fit_split"}``, ECE in percent."""
    temperature = fit_temperature(fit_logits, fit_labels)
    scores = _scores_cpu(logits, labels)
    before, _ = calibration_errors(scores.softmax(dim=1), labels)
    after, _ = calibration_errors((scores / temperature).softmax(dim=1), labels)
    return {
        "ece": before,
        "ece_scaled": after,
        "temperature": temperature,
        "fit_split": fit_split,
    }


__all__ = [
    "MAX_TAUS",
    "SHOT_GROUPS",
    "adjust_logits",
    "best_tau",
    "calibration_report",
    "fit_temperature",
    "group_accuracies",
    "log_prior",
    "tradeoff_curve",
]
