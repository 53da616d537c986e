"""MGP's reconstruction grid: a PNG of input / masked / reconstruction rows of fixed validation
images, redrawn every few epochs and announced like a checkpoint."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from livt_core.contract import ARTIFACT_KINDS, RECONSTRUCTION_FILE
from livt_core.engine import run
from livt_core.engine.reconstruction import PAD, reconstruction_rows
from livt_core.models import create_model
from tests.core.test_engine import TINY_MAE, Recorder, _pretrain


def test_pretrain_writes_the_grid_every_few_epochs(tmp_path):
    recorder = Recorder()
    run(_pretrain(epochs=3, warmup_epochs=1), tmp_path, callbacks=recorder)
    grids = [v for kind, v in recorder.events if kind == "checkpoint" and v[0] == "reconstruction"]
    assert grids == [("reconstruction", 0), ("reconstruction", 1), ("reconstruction", 2)]
    path = tmp_path / RECONSTRUCTION_FILE
    assert ARTIFACT_KINDS[RECONSTRUCTION_FILE] == "image"
    with Image.open(path) as image:
        assert image.format == "PNG"
        size = _pretrain().data.img_size
        # 3 rows (input / masked / reconstruction) x 8 images, PAD pixels around each tile
        assert image.size == (8 * (size + PAD) + PAD, 3 * (size + PAD) + PAD)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32))
    assert pixels.std() > 0  # not a blank picture
    assert not path.with_name(path.name + ".part").exists()


def test_rows_keep_visible_patches_and_a_fixed_mask():
    torch.manual_seed(0)
    model = create_model("mae_vit_nano_patch4", **TINY_MAE, img_size=16, in_chans=1)
    images = torch.randn(4, 1, 16, 16)
    state = torch.random.get_rng_state()
    inputs, masked, recon = reconstruction_rows(model, images, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # training RNG untouched
    _, masked_again, _ = reconstruction_rows(model, images, seed=3)
    assert torch.equal(masked, masked_again)  # same seed, same mask
    hidden = masked == 0
    assert 0.5 < hidden.float().mean() < 0.9  # mask_ratio 0.75 of the patches greyed out
    assert torch.equal(recon[~hidden], images[~hidden])  # visible patches pasted back
    assert torch.equal(inputs, images)
