"""Tests of livt_core.losses: every registered loss, and each formula against an independent
hand computation (numpy / explicit loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from livt_core.errors import ConfigError
from livt_core.losses import SOFT_TARGET_LOSSES, build_loss, list_losses

COUNTS = [400, 120, 60, 20, 7, 2]
C = len(COUNTS)
ALL_LOSSES = [
    "ce",
    "ls_ce",
    "bal_ce",
    "bce",
    "bal_bce",
    "cb_ce",
    "cb_bce",
    "ldam",
    "mislas",
    "lade",
]


def _build(name: str, counts: list[int] = COUNTS, **kw: float) -> torch.nn.Module:
    kw.setdefault("smoothing", 0.1 if name == "ls_ce" else 0.0)
    return build_loss(name, counts, **kw)


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, C, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, C, (n,), generator=gen)
    return logits, labels


def _mixed_targets(labels: torch.Tensor, lam: float = 0.7) -> torch.Tensor:
    """Mixup-style soft targets: lam · one_hot(y) + (1 − lam) · one_hot(flip(y))."""
    one_hot = F.one_hot(labels, C).double()
    return lam * one_hot + (1 - lam) * one_hot.flip(0)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _bce(z: float, y: float) -> float:
    """Binary cross-entropy of one logit, written out."""
    p = 1.0 / (1.0 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_registry_lists_all_ten_losses():
    assert list_losses() == sorted(ALL_LOSSES)


def test_soft_target_losses_match_the_method():
    assert SOFT_TARGET_LOSSES == {"ce", "bal_ce", "bce", "bal_bce", "cb_bce", "ldam", "mislas"}


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_hard_labels_give_finite_loss_and_gradient(name):
    loss = _build(name)
    assert loss.accepts_soft_targets == (name in SOFT_TARGET_LOSSES)
    logits, labels = _batch()
    logits.requires_grad_(True)
    value = loss(logits, labels)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    for param in loss.parameters():
        assert param.grad is not None


@pytest.mark.parametrize("name", sorted(SOFT_TARGET_LOSSES))
def test_soft_targets_give_finite_loss_and_gradient(name):
    loss = _build(name)
    logits, labels = _batch()
    logits.requires_grad_(True)
    value = loss(logits, _mixed_targets(labels))
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(set(ALL_LOSSES) - SOFT_TARGET_LOSSES))
def test_soft_targets_to_hard_only_loss_raise(name):
    logits, labels = _batch()
    with pytest.raises(ConfigError, match="set mixup=0 and cutmix=0") as info:
        _build(name)(logits, _mixed_targets(labels))
    assert info.value.field == "loss"
    assert "bal_bce" in str(info.value)


@pytest.mark.parametrize("name", sorted(SOFT_TARGET_LOSSES))
def test_one_hot_soft_targets_equal_hard_labels(name):
    loss = _build(name)
    logits, labels = _batch()
    hard = loss(logits, labels)
    soft = loss(logits, F.one_hot(labels, C).double())
    torch.testing.assert_close(hard, soft)


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        build_loss("focal", COUNTS)
    assert info.value.field == "loss"
    for name in ALL_LOSSES:
        assert name in str(info.value)


def test_unknown_option_is_rejected():
    with pytest.raises(ConfigError, match="no option 'gamma'.*options are: beta"):
        build_loss("cb_ce", COUNTS, gamma=2.0)
    with pytest.raises(ConfigError, match="takes no options"):
        build_loss("ce", COUNTS, beta=0.99)


def test_bal_bce_matches_hand_computation():
    counts = [30, 8, 2]
    tau, smoothing = 1.3, 0.2
    z = np.array([[1.0, -0.5, 0.2], [-1.2, 0.7, 2.0]])
    labels = [2, 0]
    total = sum(counts)
    expected = 0.0
    for i in range(2):
        for c in range(3):
            pi = counts[c] / total
            z_adj = z[i, c] + tau * (math.log(pi) - math.log(1 - pi))
            y = 1 - smoothing + smoothing / 3 if c == labels[i] else smoothing / 3
            expected += _bce(z_adj, y)
    expected /= 2  # sum over classes, mean over the batch
    loss = build_loss("bal_bce", counts, tau=tau, smoothing=smoothing)
    got = loss(torch.tensor(z), torch.tensor(labels))
    assert got.item() == pytest.approx(expected, rel=1e-6)

    soft = np.array([[0.6, 0.0, 0.4], [0.0, 1.0, 0.0]])
    expected_soft = 0.0
    for i in range(2):
        for c in range(3):
            pi = counts[c] / total
            expected_soft += _bce(z[i, c] + tau * math.log(pi / (1 - pi)), soft[i, c])
    got_soft = loss(torch.tensor(z), torch.tensor(soft))
    assert got_soft.item() == pytest.approx(expected_soft / 2, rel=1e-6)


def test_bal_bce_bias_is_a_buffer_and_ignores_module_mode():
    loss = build_loss("bal_bce", COUNTS, tau=1.05)
    assert "logit_bias" in dict(loss.named_buffers())
    logits, labels = _batch()
    train_value = loss.train()(logits, labels)
    eval_value = loss.eval()(logits, labels)
    assert train_value.item() == eval_value.item()


def test_bce_is_num_classes_times_mean_bce():
    logits, labels = _batch()
    expected = C * torch.nn.BCEWithLogitsLoss()(logits, F.one_hot(labels, C).double())
    torch.testing.assert_close(build_loss("bce", COUNTS)(logits, labels), expected)


def test_bal_ce_is_cross_entropy_on_adjusted_logits():
    logits, labels = _batch()
    tau = 0.8
    prior = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    expected = F.cross_entropy(logits + tau * prior.log(), labels, label_smoothing=0.1)
    got = build_loss("bal_ce", COUNTS, tau=tau, smoothing=0.1)(logits, labels)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


def test_ce_soft_form_matches_numpy():
    logits, labels = _batch()
    target = _mixed_targets(labels, lam=0.65)
    expected = -(target.numpy() * _log_softmax(logits.numpy())).sum(axis=1).mean()
    got = build_loss("ce", COUNTS)(logits, target)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_ce_and_ls_ce_smooth_hard_labels():
    logits, labels = _batch()
    s = 0.1
    target = np.full((len(labels), C), s / C)
    target[np.arange(len(labels)), labels.numpy()] = 1 - s + s / C
    expected = -(target * _log_softmax(logits.numpy())).sum(axis=1).mean()
    for name in ("ce", "ls_ce"):
        got = build_loss(name, COUNTS, smoothing=s)(logits, labels)
        assert got.item() == pytest.approx(expected, rel=1e-9)


def test_class_balanced_weights_and_losses_match_hand_computation():
    counts = [100, 10, 1]
    beta = 0.9
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    weights = [w * 3 / sum(raw) for w in raw]
    ce_loss = build_loss("cb_ce", counts, beta=beta)
    bce_loss = build_loss("cb_bce", counts, beta=beta)
    for loss in (ce_loss, bce_loss):
        np.testing.assert_allclose(loss.class_weight.numpy(), weights, rtol=1e-6)
    assert sum(weights) == pytest.approx(3.0)

    z = np.array([[0.3, -0.2, 1.1], [2.0, 0.1, -0.4]])
    labels = [1, 2]
    log_p = _log_softmax(z)
    expected_ce = np.mean([-weights[labels[i]] * log_p[i, labels[i]] for i in range(2)])
    got_ce = ce_loss(torch.tensor(z), torch.tensor(labels))
    assert got_ce.item() == pytest.approx(expected_ce, rel=1e-6)

    expected_bce = 0.0
    for i in range(2):
        for c in range(3):
            expected_bce += weights[c] * _bce(z[i, c], 1.0 if c == labels[i] else 0.0)
    got_bce = bce_loss(torch.tensor(z), torch.tensor(labels))
    assert got_bce.item() == pytest.approx(expected_bce / 2, rel=1e-6)


def test_cb_default_beta_is_0_9999():
    loss = build_loss("cb_ce", COUNTS)
    raw = np.array([(1 - 0.9999) / (1 - 0.9999**n) for n in COUNTS])
    np.testing.assert_allclose(loss.class_weight.numpy(), raw * C / raw.sum(), rtol=1e-6)


def test_ldam_margins_and_value():
    counts = [16, 1]  # n^(-1/4) = 0.5, 1 → margins 0.25, 0.5
    loss = build_loss("ldam", counts)
    np.testing.assert_allclose(loss.margins.numpy(), [0.25, 0.5])
    z = np.array([[0.4, 0.1], [0.2, 0.3]])
    labels = [0, 1]
    expected = 0.0
    for i, y in enumerate(labels):
        shifted = z[i].copy()
        shifted[y] -= loss.margins[y].item()
        expected += -_log_softmax(30.0 * shifted[None])[0, y]
    got = loss(torch.tensor(z), torch.tensor(labels))
    assert got.item() == pytest.approx(expected / 2, rel=1e-6)


def test_ldam_max_margin_option():
    loss = build_loss("ldam", COUNTS, max_m=0.3)
    assert loss.margins.max().item() == pytest.approx(0.3)
    assert loss.margins.argmax().item() == C - 1  # the rarest class has the largest margin


@pytest.mark.parametrize("name", ["ldam", "mislas"])
def test_top_two_soft_targets_weight_each_label_by_its_mass(name):
    loss = _build(name)
    logits, labels = _batch()
    other = labels.flip(0)
    target = 0.7 * F.one_hot(labels, C).double() + 0.3 * F.one_hot(other, C).double()
    same = labels == other
    per_sample = torch.stack(
        [
            loss(logits[i : i + 1], labels[i : i + 1])
            if same[i]
            else 0.7 * loss(logits[i : i + 1], labels[i : i + 1])
            + 0.3 * loss(logits[i : i + 1], other[i : i + 1])
            for i in range(len(labels))
        ]
    )
    torch.testing.assert_close(loss(logits, target), per_sample.mean())


def test_mislas_smoothing_profile_head_to_tail():
    counts = [100, 55, 10]
    loss = build_loss("mislas", counts)
    middle = 0.3 * math.sin((55 - 10) * math.pi / (2 * (100 - 10)))  # = 0.3 · sin(π/4)
    np.testing.assert_allclose(loss.eps.numpy(), [0.3, middle, 0.0], rtol=1e-6)

    z = np.array([[0.5, -0.3, 1.2], [0.0, 0.4, -0.9]])
    labels = [0, 2]
    log_p = _log_softmax(z)
    eps = [0.3, 0.0]
    expected = np.mean(
        [(1 - eps[i]) * -log_p[i, labels[i]] + eps[i] * -log_p[i].mean() for i in range(2)]
    )
    got = loss(torch.tensor(z), torch.tensor(labels))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_mislas_custom_head_and_tail():
    loss = build_loss("mislas", COUNTS, head_eps=0.4, tail_eps=0.1)
    assert loss.eps[0].item() == pytest.approx(0.4)
    assert loss.eps[-1].item() == pytest.approx(0.1)


def test_lade_matches_hand_computation():
    counts = [50, 30, 20]
    lam, alpha = 0.1, 0.1
    z = np.array([[1.0, 0.2, -0.5], [0.3, 0.9, 0.1], [-0.4, 0.8, 0.6], [0.7, -0.1, 0.2]])
    labels = [0, 1, 1, 0]  # class 2 is absent from the batch
    n = len(labels)
    prior = np.array(counts) / sum(counts)
    ce = np.mean([-_log_softmax(z + np.log(prior))[i, labels[i]] for i in range(n)])
    reg = 0.0
    for c in {0, 1}:
        members = [i for i in range(n) if labels[i] == c]
        first = sum(z[i, c] for i in members) / len(members)
        second = math.log(
            sum(math.exp(z[i, c] + math.log(1 / 3) - math.log(prior[c])) for i in range(n)) / n
        )
        reg -= prior[c] * (first - second - lam * second**2)
    expected = ce + alpha * reg
    got = build_loss("lade", counts)(torch.tensor(z), torch.tensor(labels))
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("name", "kw", "field"),
    [
        ("ce", {"tau": 1.05}, "tau"),
        ("lade", {"tau": 2.0}, "tau"),
        ("bal_bce", {"tau": -1.0}, "tau"),
        ("ldam", {"smoothing": 0.1}, "smoothing"),
        ("mislas", {"smoothing": 0.1}, "smoothing"),
        ("lade", {"smoothing": 0.1}, "smoothing"),
        ("ls_ce", {"smoothing": 0.0}, "smoothing"),
        ("ce", {"smoothing": 1.5}, "smoothing"),
        ("cb_ce", {"beta": 1.0}, "loss_kwargs.beta"),
        ("ldam", {"max_m": 0.0}, "loss_kwargs.max_m"),
        ("lade", {"remine_lambda": -0.1}, "loss_kwargs.remine_lambda"),
    ],
)
def test_invalid_settings_name_the_field(name, kw, field):
    with pytest.raises(ConfigError) as info:
        build_loss(name, COUNTS, **kw)
    assert info.value.field == field
    assert info.value.fix


@pytest.mark.parametrize("name", ["bal_bce", "bal_ce", "cb_ce", "cb_bce", "ldam", "lade"])
def test_zero_count_rejected_where_a_log_or_power_is_taken(name):
    with pytest.raises(ConfigError, match=r"classes \[1\] have none"):
        _build(name, counts=[10, 0, 5])


@pytest.mark.parametrize("name", ["ce", "bce", "ls_ce", "mislas"])
def test_zero_count_allowed_where_harmless(name):
    loss = _build(name, counts=[10, 0, 5])
    assert torch.isfinite(loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0])))


@pytest.mark.parametrize("counts", [[5], [3, -1], [2.5, 3], [0, 0]])
def test_invalid_class_counts(counts):
    with pytest.raises(ConfigError) as info:
        build_loss("ce", counts)
    assert info.value.field == "class_counts"


def test_mislas_rejects_balanced_counts():
    with pytest.raises(ConfigError, match="ls_ce"):
        build_loss("mislas", [50, 50, 50])


def test_class_count_length_must_match_logits():
    loss = build_loss("bal_bce", COUNTS)
    with pytest.raises(ConfigError) as info:
        loss(torch.randn(4, C + 1), torch.zeros(4, dtype=torch.long))
    assert info.value.field == "num_classes"


@pytest.mark.parametrize(
    ("logits", "target", "message"),
    [
        (torch.randn(4, C, 1), torch.zeros(4, dtype=torch.long), "shape"),
        (torch.randn(4, C), torch.zeros(3, dtype=torch.long), "3 labels for 4"),
        (torch.randn(4, C), torch.zeros(4), "integer"),
        (torch.randn(4, C), torch.full((4,), C), r"\[0, 6\)"),
        (torch.randn(4, C), torch.full((4, C), 0.5), "sum to 1"),
        (torch.randn(4, C), torch.full((4, C - 1), 1 / (C - 1)), "logits' shape"),
        (torch.randn(0, C), torch.zeros(0, dtype=torch.long), "empty"),
    ],
)
def test_malformed_inputs_raise(logits, target, message):
    with pytest.raises(ValueError, match=message):
        build_loss("bal_bce", COUNTS)(logits, target)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_int32_labels_are_accepted(name):
    loss = _build(name)
    logits, labels = _batch()
    torch.testing.assert_close(loss(logits, labels.int()), loss(logits, labels))


def test_half_precision_logits_are_computed_in_float32():
    loss = build_loss("bal_bce", COUNTS)
    logits, labels = _batch()
    value = loss(logits.bfloat16(), labels)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(loss(logits.bfloat16().double(), labels).item(), rel=1e-5)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_buffers_move_with_the_module(name):
    loss = _build(name).to("meta")
    assert all(buf.device.type == "meta" for buf in loss.buffers())
    assert "class_counts" in dict(loss.named_buffers())
