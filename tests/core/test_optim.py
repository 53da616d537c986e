"""Batch arithmetic, parameter groups, the lr schedule, precision and RNG state."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
import torch

from livt_core.errors import ConfigError
from livt_core.models import create_model
from livt_core.optim import (
    GradientStep,
    Precision,
    WarmupCosineSchedule,
    absolute_lr,
    create_optimizer,
    layer_scales,
    lr_at,
    param_groups,
    plan_batch,
    resolve_precision,
    rng_state,
    set_rng_state,
)


def _formula(t: float, lr: float, min_lr: float, warmup: float, epochs: float) -> float:
    if t < warmup:
        return lr * t / warmup
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (epochs - warmup)))


def test_plan_batch_multiplies_batch_accumulation_and_world_size():
    plan = plan_batch(batch_size=64, accum_iter=8, world_size=4)
    assert plan.effective_batch_size == 2048


def test_plan_batch_derives_accum_iter_from_effective_batch_size():
    plan = plan_batch(batch_size=128, world_size=2, effective_batch_size=1024)
    assert plan.accum_iter == 4
    assert plan.effective_batch_size == 1024


def test_plan_batch_names_the_field_when_effective_batch_does_not_divide():
    with pytest.raises(ConfigError) as info:
        plan_batch(batch_size=96, world_size=2, effective_batch_size=1000)
    assert info.value.field == "effective_batch_size"
    assert "192" in info.value.message and info.value.fix


def test_plan_batch_rejects_a_contradicting_accum_iter():
    with pytest.raises(ConfigError) as info:
        plan_batch(batch_size=64, accum_iter=2, effective_batch_size=256)
    assert info.value.field == "accum_iter"


def test_absolute_lr_scales_blr_by_effective_batch_over_256():
    assert absolute_lr(blr=1.5e-4, effective_batch_size=4096) == pytest.approx(2.4e-3)
    assert absolute_lr(blr=1e-3, effective_batch_size=4096, lr=5e-4) == 5e-4


@pytest.mark.parametrize("t", [0.0, 0.25, 4.99, 5.0, 5.5, 17.3, 42.0, 99.99, 100.0])
def test_lr_at_matches_warmup_then_half_cycle_cosine(t):
    kw = {"lr": 2e-3, "min_lr": 1e-6, "warmup_epochs": 5.0, "epochs": 100.0}
    assert lr_at(t, **kw) == pytest.approx(_formula(t, 2e-3, 1e-6, 5.0, 100.0), rel=1e-12)


def test_lr_at_known_points():
    kw = {"lr": 1.0, "min_lr": 0.0, "warmup_epochs": 10.0, "epochs": 110.0}
    assert lr_at(5.0, **kw) == pytest.approx(0.5)
    assert lr_at(10.0, **kw) == pytest.approx(1.0)
    assert lr_at(60.0, **kw) == pytest.approx(0.5)  # half-way through the cosine
    assert lr_at(110.0, **kw) == pytest.approx(0.0, abs=1e-12)


def _vit(depth: int = 3) -> torch.nn.Module:
    return create_model("vit_nano_patch4", depth=depth, img_size=16, in_chans=1, num_classes=5)


def _group_of(groups: list[dict], model: torch.nn.Module) -> dict[str, dict]:
    by_id = {id(p): g for g in groups for p in g["params"]}
    return {name: by_id[id(p)] for name, p in model.named_parameters() if p.requires_grad}


def test_param_groups_exempt_1d_params_and_tokens_from_weight_decay():
    model = _vit()
    groups = _group_of(param_groups(model, weight_decay=0.05), model)
    for name, param in model.named_parameters():
        exempt = param.ndim == 1 or name in ("cls_token", "pos_embed")
        assert groups[name]["weight_decay"] == (0.0 if exempt else 0.05), name
    assert groups["blocks.0.attn.qkv.weight"]["weight_decay"] == 0.05
    assert groups["blocks.0.norm1.weight"]["weight_decay"] == 0.0
    assert groups["head.bias"]["weight_decay"] == 0.0


def test_param_groups_skip_frozen_parameters_of_mae():
    model = create_model("mae_vit_nano_patch4", img_size=16, in_chans=1, depth=1, decoder_depth=1)
    groups = param_groups(model, weight_decay=0.05)
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert id(model.pos_embed) not in in_groups
    assert id(model.decoder_pos_embed) not in in_groups
    mask_group = _group_of(groups, model)["mask_token"]
    assert mask_group["weight_decay"] == 0.0


def test_layer_decay_scales_per_parameter():
    depth, decay = 3, 0.75
    model = _vit(depth)
    groups = _group_of(param_groups(model, weight_decay=0.05, layer_decay=decay), model)
    top = depth + 1
    assert groups["cls_token"]["lr_scale"] == pytest.approx(decay**top)
    assert groups["patch_embed.proj.weight"]["lr_scale"] == pytest.approx(decay**top)
    for i in range(depth):
        assert groups[f"blocks.{i}.mlp.fc1.weight"]["lr_scale"] == pytest.approx(
            decay ** (top - i - 1)
        )
    assert groups["head.weight"]["lr_scale"] == 1.0
    assert groups["fc_norm.weight"]["lr_scale"] == 1.0
    assert layer_scales(2, 0.5) == [0.25, 0.5, 1.0]


def test_layer_decay_needs_layer_ids():
    model = create_model("mae_vit_nano_patch4", img_size=16, in_chans=1, depth=1, decoder_depth=1)
    with pytest.raises(ConfigError) as info:
        param_groups(model, weight_decay=0.05, layer_decay=0.75)
    assert info.value.field == "layer_decay"


def test_schedule_applies_lr_scale_per_group():
    model = _vit(2)
    optimizer = create_optimizer(
        param_groups(model, weight_decay=0.05, layer_decay=0.5), lr=1e-3, betas=(0.9, 0.999)
    )
    assert optimizer.defaults["betas"] == (0.9, 0.999)
    schedule = WarmupCosineSchedule(optimizer, lr=1e-3, min_lr=0.0, warmup_epochs=2, epochs=10)
    value = schedule.step(1.0)
    assert value == pytest.approx(5e-4)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(5e-4 * group["lr_scale"])
    assert {round(g["lr_scale"], 6) for g in optimizer.param_groups} == {0.125, 0.25, 0.5, 1.0}


def test_precision_auto_is_off_on_cpu_and_fp16_needs_cuda():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).dtype is None
    assert resolve_precision("bf16", cpu).dtype == torch.bfloat16
    with pytest.raises(ConfigError) as info:
        resolve_precision("fp16", cpu)
    assert info.value.field == "amp"


def test_bf16_autocast_on_cpu_runs_matmuls_in_bf16():
    precision = Precision("cpu", torch.bfloat16)
    with precision.autocast():
        out = torch.ones(2, 3) @ torch.ones(3, 2)
    assert out.dtype == torch.bfloat16
    assert (
        GradientStep(torch.optim.SGD([torch.zeros(1, requires_grad=True)]), precision).scaler
        is None
    )


def test_gradient_step_clips_and_clears_gradients():
    weight = torch.nn.Parameter(torch.zeros(4))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    step = GradientStep(optimizer, Precision("cpu", None), clip_grad=1.0)
    step.backward((weight * torch.tensor([30.0, 40.0, 0.0, 0.0])).sum())
    norm = step.update([weight])
    assert norm == pytest.approx(50.0)
    assert torch.allclose(weight.detach(), torch.tensor([-0.6, -0.8, 0.0, 0.0]))
    assert weight.grad is None


def test_rng_state_round_trips_through_a_weights_only_file():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    buffer = io.BytesIO()
    torch.save({"rng": rng_state()}, buffer)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=True)["rng"]
    set_rng_state(restored)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
