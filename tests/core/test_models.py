"""Models: registry, forward/backward of every variant, MAE masking and loss, MGP → BFT transfer."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from livt_core.errors import CheckpointError, ConfigError
from livt_core.models import (
    MaskedAutoencoderViT,
    VisionTransformer,
    create_model,
    get_2d_sincos_pos_embed,
    interpolate_pos_embed,
    is_mae_model,
    list_models,
    load_encoder_into_classifier,
)

CLASSIFIERS = [n for n in list_models() if not is_mae_model(n)]
MAE_MODELS = [n for n in list_models() if is_mae_model(n)]
BLOCK_PARTS = [
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
]


def small_overrides(name: str) -> dict:
    """Published sizes shrunk to one block at 28/32 px; the patch-4 variants stay native."""
    if name.endswith("patch4"):
        return {}
    overrides: dict = {"depth": 1, "img_size": 28 if name.endswith("patch14") else 32}
    if is_mae_model(name):
        overrides["decoder_depth"] = 1
    return overrides


def block_keys(prefix: str, depth: int) -> set[str]:
    return {f"{prefix}.{i}.{part}" for i in range(depth) for part in BLOCK_PARTS}


def assert_every_trainable_param_has_grad(model: torch.nn.Module) -> None:
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, name
            assert torch.isfinite(param.grad).all(), name
            assert param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


# --- registry ---------------------------------------------------------------------------------


def test_registry_lists_published_and_cpu_variants():
    for size in ("tiny", "small", "base", "large"):
        assert f"vit_{size}_patch16" in CLASSIFIERS
        assert f"mae_vit_{size}_patch16" in MAE_MODELS
    for name in ("vit_huge_patch14", "vit_nano_patch4", "vit_micro_patch4"):
        assert name in CLASSIFIERS
        assert f"mae_{name}" in MAE_MODELS


def test_unknown_model_names_the_field_and_choices():
    with pytest.raises(ConfigError) as err:
        create_model("vit_gigantic_patch8")
    assert err.value.field == "model"
    assert "vit_base_patch16" in str(err.value)


@pytest.mark.parametrize(
    ("name", "key"), [("mae_vit_nano_patch4", "drop_path_rate"), ("vit_nano_patch4", "mask_ratio")]
)
def test_unknown_override_names_the_field(name, key):
    with pytest.raises(ConfigError) as err:
        create_model(name, **{key: 0.5})
    assert err.value.field == key
    assert name in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"img_size": 30}, "img_size"),
        ({"num_heads": 5}, "num_heads"),
        ({"depth": 0}, "depth"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_invalid_classifier_geometry_raises_config_error(overrides, field):
    with pytest.raises(ConfigError) as err:
        create_model("vit_nano_patch4", **overrides)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"decoder_num_heads": 3}, "decoder_num_heads"),
        ({"decoder_embed_dim": 66, "decoder_num_heads": 2}, "decoder_embed_dim"),
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"mask_ratio": 0.0}, "mask_ratio"),
    ],
)
def test_invalid_mae_settings_raise_config_error(overrides, field):
    with pytest.raises(ConfigError) as err:
        create_model("mae_vit_nano_patch4", **overrides)
    assert err.value.field == field


def test_published_parameter_counts():
    vit_b = create_model("vit_base_patch16", num_classes=1000)
    assert sum(p.numel() for p in vit_b.parameters()) == 86_567_656
    mae_b = create_model("mae_vit_base_patch16")
    assert sum(p.numel() for p in mae_b.parameters()) == 111_907_840


# --- forward / backward of every registered model ----------------------------------------------


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, drop_path_rate=0.1, **small_overrides(name))
    assert isinstance(model, VisionTransformer)
    h, w = model.img_size
    x = torch.randn(2, model.in_chans, h, w)
    logits = model(x)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    assert_every_trainable_param_has_grad(model)


@pytest.mark.parametrize("name", MAE_MODELS)
def test_mae_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name, **small_overrides(name))
    assert isinstance(model, MaskedAutoencoderViT)
    h, w = model.img_size
    p = model.patch_size
    num_patches = (h // p) * (w // p)
    loss, pred, mask = model(torch.randn(2, 3, h, w))
    assert pred.shape == (2, num_patches, p * p * 3)
    assert mask.shape == (2, num_patches)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    assert_every_trainable_param_has_grad(model)


def test_cls_token_classifier_forward_backward():
    model = create_model("vit_nano_patch4", global_pool=False)
    assert isinstance(model.fc_norm, torch.nn.Identity)
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert_every_trainable_param_has_grad(model)


@pytest.mark.parametrize("name", ["vit_nano_patch4", "mae_vit_nano_patch4", "vit_micro_patch4"])
def test_cpu_variants_take_28px_grey_images(name):
    model = create_model(name, img_size=28, in_chans=1)
    assert model.patch_embed.grid_size == (7, 7)
    assert model.pos_embed.shape[1] == 1 + 49
    out = model(torch.randn(2, 1, 28, 28))
    if is_mae_model(name):
        assert out[1].shape == (2, 49, 16)
    else:
        assert out.shape == (2, 10)


def test_wrong_input_size_raises_config_error():
    model = create_model("vit_nano_patch4")
    with pytest.raises(ConfigError) as err:
        model(torch.randn(1, 3, 28, 28))
    assert err.value.field == "img_size"
    with pytest.raises(ConfigError) as err:
        model(torch.randn(1, 1, 32, 32))
    assert err.value.field == "in_chans"


# --- classifier structure --------------------------------------------------------------------


def test_classifier_state_dict_keys_are_timm_style():
    embed = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
    head = {"head.weight", "head.bias"}
    gap = create_model("vit_nano_patch4", depth=2)
    assert set(gap.state_dict()) == (
        embed | block_keys("blocks", 2) | {"fc_norm.weight", "fc_norm.bias"} | head
    )
    cls = create_model("vit_nano_patch4", depth=2, global_pool=False)
    assert set(cls.state_dict()) == (
        embed | block_keys("blocks", 2) | {"norm.weight", "norm.bias"} | head
    )


def test_mae_state_dict_keys_match_released_files():
    model = create_model("mae_vit_nano_patch4", depth=2, decoder_depth=1)
    assert set(model.state_dict()) == (
        {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
        | block_keys("blocks", 2)
        | {"norm.weight", "norm.bias", "mask_token", "decoder_pos_embed"}
        | {"decoder_embed.weight", "decoder_embed.bias"}
        | block_keys("decoder_blocks", 1)
        | {"decoder_norm.weight", "decoder_norm.bias"}
        | {"decoder_pred.weight", "decoder_pred.bias"}
    )


def test_layer_ids_for_layer_wise_decay():
    model = create_model("vit_nano_patch4")  # depth 4
    assert model.num_layers == 5
    assert model.layer_id("cls_token") == 0
    assert model.layer_id("pos_embed") == 0
    assert model.layer_id("patch_embed.proj.weight") == 0
    assert model.layer_id("blocks.0.norm1.weight") == 1
    assert model.layer_id("blocks.3.mlp.fc2.bias") == 4
    assert model.layer_id("fc_norm.weight") == 5
    assert model.layer_id("head.bias") == 5
    assert model.no_weight_decay() == {"cls_token", "pos_embed"}


def test_head_init_and_stochastic_depth():
    model = create_model("vit_micro_patch4", drop_path_rate=0.2)
    assert model.head.weight.std().item() < 1e-4
    assert model.head.weight.abs().max().item() <= 2 * 2e-5 + 1e-12  # truncated at 2 std
    assert torch.count_nonzero(model.head.bias) == 0
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in model.blocks]
    assert rates == pytest.approx([0.2 * i / 5 for i in range(6)])


# --- position embeddings ----------------------------------------------------------------------


def test_sincos_pos_embed_layout():
    dim, rows, cols = 16, 3, 5
    emb = get_2d_sincos_pos_embed(dim, (rows, cols))
    assert emb.shape == (1 + rows * cols, dim)
    assert np.all(emb[0] == 0)  # class-token position
    quarter = dim // 4
    for r in range(rows):
        for c in range(cols):
            row = emb[1 + r * cols + c]
            for k in range(quarter):
                w = 10000.0 ** (-k / quarter)
                assert row[k] == pytest.approx(math.sin(c * w), abs=1e-6)
                assert row[quarter + k] == pytest.approx(math.cos(c * w), abs=1e-6)
                assert row[2 * quarter + k] == pytest.approx(math.sin(r * w), abs=1e-6)
                assert row[3 * quarter + k] == pytest.approx(math.cos(r * w), abs=1e-6)
    assert get_2d_sincos_pos_embed(dim, 4, cls_token=False).shape == (16, dim)


def test_mae_pos_embed_is_the_fixed_sincos_table():
    model = create_model("mae_vit_nano_patch4", img_size=28)
    expected = torch.from_numpy(get_2d_sincos_pos_embed(64, 7))
    assert torch.equal(model.pos_embed[0], expected)
    assert torch.equal(model.decoder_pos_embed[0], expected)


def test_interpolate_pos_embed_keeps_cls_and_constant_fields():
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 64, 8)
    out = interpolate_pos_embed(pos, (5, 7))
    assert out.shape == (1, 1 + 35, 8)
    assert torch.equal(out[:, 0], pos[:, 0])
    constant = torch.cat([torch.zeros(1, 1, 8), torch.full((1, 64, 8), 0.25)], dim=1)
    assert torch.allclose(interpolate_pos_embed(constant, (5, 7))[:, 1:], torch.tensor(0.25))
    assert interpolate_pos_embed(pos, (8, 8)) is pos
    with pytest.raises(CheckpointError, match="not a square grid"):
        interpolate_pos_embed(torch.zeros(1, 1 + 10, 8), (3, 3))


# --- MAE masking and loss ---------------------------------------------------------------------


def test_random_masking_keeps_the_unmasked_patches():
    torch.manual_seed(0)
    model = create_model("mae_vit_nano_patch4")
    n, length, dim = 3, 64, 4
    x = torch.arange(length, dtype=torch.float32).repeat(n, 1).unsqueeze(-1).repeat(1, 1, dim)
    kept, mask, ids_restore = model.random_masking(x, 0.75)
    keep = int(length * (1 - 0.75))
    assert kept.shape == (n, keep, dim)
    assert mask.shape == (n, length)
    assert torch.equal(mask.sum(dim=1), torch.full((n,), float(length - keep)))
    for i in range(n):
        kept_ids = kept[i, :, 0].long().sort().values
        assert torch.equal(kept_ids, torch.nonzero(mask[i] == 0).flatten())
    # ids_restore undoes the shuffle: kept tokens followed by the rest come back in order
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    shuffled = torch.gather(x, 1, ids_shuffle.unsqueeze(-1).expand(-1, -1, dim))
    assert torch.equal(shuffled[:, :keep], kept)
    restored = torch.gather(shuffled, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))
    assert torch.equal(restored, x)


def test_forward_mask_ratio_override():
    model = create_model("mae_vit_nano_patch4", img_size=28, in_chans=1)
    _, _, mask = model(torch.randn(2, 1, 28, 28), mask_ratio=0.5)
    assert torch.equal(mask.sum(dim=1), torch.full((2,), float(49 - int(49 * 0.5))))
    with pytest.raises(ConfigError):
        model(torch.randn(2, 1, 28, 28), mask_ratio=0.999)


def reference_patches(imgs: np.ndarray, p: int) -> np.ndarray:
    """[N, C, H, W] → [N, L, p*p*C], pixel-major and channel-last inside each patch."""
    n, c, h, w = imgs.shape
    out = []
    for i in range(h // p):
        for j in range(w // p):
            patch = imgs[:, :, i * p : (i + 1) * p, j * p : (j + 1) * p]  # [N, C, p, p]
            out.append(patch.transpose(0, 2, 3, 1).reshape(n, -1))
    return np.stack(out, axis=1)


def test_patchify_layout_and_round_trip():
    torch.manual_seed(0)
    model = create_model("mae_vit_nano_patch4", img_size=(28, 32))
    imgs = torch.randn(2, 3, 28, 32)
    patches = model.patchify(imgs)
    assert np.allclose(patches.numpy(), reference_patches(imgs.numpy(), 4))
    assert torch.equal(model.unpatchify(patches), imgs)


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_loss_matches_reference_on_masked_patches_only(norm_pix_loss):
    torch.manual_seed(0)
    model = create_model("mae_vit_nano_patch4", img_size=28, norm_pix_loss=norm_pix_loss)
    imgs = torch.randn(2, 3, 28, 28)
    pred = torch.randn(2, 49, 48)
    mask = (torch.rand(2, 49) < 0.75).float()
    loss = model.forward_loss(imgs, pred, mask)

    target = reference_patches(imgs.numpy().astype(np.float64), 4)
    if norm_pix_loss:
        mean = target.mean(axis=-1, keepdims=True)
        var = target.var(axis=-1, ddof=1, keepdims=True)
        target = (target - mean) / np.sqrt(var + 1e-6)
    per_patch = ((pred.numpy() - target) ** 2).mean(axis=-1)
    expected = per_patch[mask.numpy() == 1].mean()
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    visible = mask.unsqueeze(-1) == 0
    assert model.forward_loss(imgs, torch.where(visible, pred + 100, pred), mask) == loss
    assert model.forward_loss(imgs, torch.where(visible, pred, pred + 1), mask) != loss


# --- MGP → BFT transfer -----------------------------------------------------------------------


def test_transfer_from_mae_at_same_resolution():
    torch.manual_seed(0)
    mae = create_model("mae_vit_nano_patch4")
    clf = create_model("vit_nano_patch4", num_classes=5)
    report = load_encoder_into_classifier(clf, {"model": mae.state_dict(), "epoch": 799})
    mae_state, clf_state = mae.state_dict(), clf.state_dict()
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.3.mlp.fc2.weight"):
        assert torch.equal(clf_state[key], mae_state[key]), key
    assert report["source"] == "mae"
    assert report["missing_keys"] == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert {"mask_token", "decoder_pos_embed", "norm.weight", "decoder_pred.weight"} <= set(
        report["unexpected_keys"]
    )
    assert report["pos_embed_resized"] is None
    assert report["head_reinitialized"]
    assert clf.head.weight.std().item() < 1e-4
    assert torch.count_nonzero(clf.head.bias) == 0
    assert torch.equal(clf.fc_norm.weight, torch.ones(64))


def test_transfer_into_cls_token_classifier_keeps_final_norm():
    mae = create_model("mae_vit_nano_patch4")
    with torch.no_grad():
        mae.norm.weight.uniform_()
    clf = create_model("vit_nano_patch4", global_pool=False)
    report = load_encoder_into_classifier(clf, mae.state_dict())
    assert torch.equal(clf.norm.weight, mae.norm.weight)
    assert report["missing_keys"] == ["head.bias", "head.weight"]


def test_transfer_to_another_resolution_and_channel_count():
    torch.manual_seed(0)
    mae = create_model("mae_vit_nano_patch4")  # 32 px RGB: 8×8 patches
    clf = create_model("vit_nano_patch4", img_size=28, in_chans=1)  # 7×7 patches, grey
    report = load_encoder_into_classifier(clf, {"model": mae.state_dict()})
    assert report["pos_embed_resized"] == {"from": [8, 8], "to": [7, 7]}
    assert report["in_chans_adapted"] == [3, 1]
    assert clf.pos_embed.shape == (1, 50, 64)
    assert torch.equal(clf.pos_embed[:, :1], mae.pos_embed[:, :1])
    assert torch.allclose(clf.pos_embed, interpolate_pos_embed(mae.pos_embed, (7, 7)))
    expected_proj = mae.patch_embed.proj.weight.sum(dim=1, keepdim=True)
    assert torch.allclose(clf.patch_embed.proj.weight, expected_proj)
    assert clf(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_transfer_from_classifier_with_other_classes_reinitialises_head(caplog):
    torch.manual_seed(0)
    source = create_model("vit_nano_patch4", num_classes=10)
    with torch.no_grad():
        source.fc_norm.weight.uniform_()
        source.head.weight.uniform_()
    ddp_state = {f"module.{k}": v for k, v in source.state_dict().items()}
    clf = create_model("vit_nano_patch4", num_classes=4)
    with caplog.at_level(logging.WARNING, logger="livt_core.models.transfer"):
        report = load_encoder_into_classifier(clf, {"model": ddp_state})
    assert "re-initialised" in caplog.text
    assert report["source"] == "classifier"
    assert report["missing_keys"] == ["head.bias", "head.weight"]
    assert report["head_reinitialized"]
    assert torch.equal(clf.fc_norm.weight, source.fc_norm.weight)
    assert clf.head.weight.abs().max().item() < 1e-4


def test_transfer_from_classifier_with_same_classes_keeps_head():
    source = create_model("vit_nano_patch4")
    with torch.no_grad():
        source.head.weight.uniform_()
    clf = create_model("vit_nano_patch4")
    report = load_encoder_into_classifier(clf, source.state_dict())
    assert not report["head_reinitialized"] and report["missing_keys"] == []
    assert torch.equal(clf.head.weight, source.head.weight)


def test_transfer_rejects_other_embed_dim_with_key_and_shapes():
    mae = create_model("mae_vit_micro_patch4", depth=4)  # 128 dims
    clf = create_model("vit_nano_patch4")  # 64 dims
    with pytest.raises(CheckpointError) as err:
        load_encoder_into_classifier(clf, {"model": mae.state_dict()})
    message = str(err.value)
    assert "cls_token" in message and "[1, 1, 128]" in message and "[1, 1, 64]" in message


@pytest.mark.parametrize(("mae_depth", "clf_depth", "text"), [(4, 2, "blocks.2"), (2, 4, "lacks")])
def test_transfer_rejects_other_depth(mae_depth, clf_depth, text):
    mae = create_model("mae_vit_nano_patch4", depth=mae_depth)
    clf = create_model("vit_nano_patch4", depth=clf_depth)
    with pytest.raises(CheckpointError, match=text):
        load_encoder_into_classifier(clf, mae.state_dict())


def test_transfer_rejects_non_state_dict():
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_encoder_into_classifier(create_model("vit_nano_patch4"), {"epoch": 3})


def test_forward_features_returns_tokens_as_in_timm():
    model = create_model("vit_nano_patch4", num_classes=3, img_size=28, in_chans=1).eval()
    x = torch.randn(2, 1, 28, 28)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 1 + (28 // 4) ** 2, model.cls_token.shape[-1])
    assert model.forward_head(tokens, pre_logits=True).shape == (2, model.cls_token.shape[-1])
    torch.testing.assert_close(model.forward_head(tokens), model(x))


def test_shared_layers_live_in_their_own_module():
    from livt_core.models import layers, mae, vit

    assert vit.make_blocks is layers.make_blocks and mae.make_blocks is layers.make_blocks
