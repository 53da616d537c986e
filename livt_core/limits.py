"""Upper bounds of the run settings that the method and today's hardware justify.

A site may lower some of them (the service's ``LIVT_MAX_*`` settings). Torch-free, so that the
service's settings can read them cheaply.
"""

from __future__ import annotations

MAX_EPOCHS = 10_000  # the paper's longest schedule is 800 epochs (MGP on ImageNet-LT)
MAX_BATCH_SIZE = 16_384  # per device; the paper uses 64-256 per GPU
MAX_ACCUM_ITER = 4_096  # the paper's 4096 effective batch from one image per step
MAX_EFFECTIVE_BATCH = 1_048_576  # 256x the paper's largest (4096)
MAX_IMG_SIZE = 2_048  # ViT-B/16 at 2048 px is 16k tokens: beyond one GPU's memory
MAX_NUM_WORKERS = 256  # loader processes per rank; more than any single machine's cores
MAX_THREADS = 1_024  # torch intra-op threads per process
MAX_SEED = 2**31 - 1  # the run adds 1000 x epoch + rank and numpy seeds must stay < 2^32
MAX_LT_SEED = 2**32 - 1  # numpy.random.RandomState accepts [0, 2^32)
MAX_IMAGES = 100_000_000  # per class; ImageNet-21k has 14 M images in all
MAX_IMBALANCE = 1_000_000.0  # γ; the literature uses 10-500
MAX_STEPS = 100_000_000  # steps per epoch
MAX_CACHE_MB = 1_048_576  # 1 TiB of decoded images per process
MAX_CHANNELS = 16  # image channels (grey 1, RGB 3, multispectral a few more)
#: Model geometry overrides in model_kwargs and their bounds: ViT-G has depth 48, width 1664,
#: 16 heads; beyond these a model no longer fits a GPU.
MODEL_KWARG_BOUNDS: dict[str, tuple[int, int]] = {
    "depth": (1, 64),
    "decoder_depth": (1, 64),
    "embed_dim": (1, 8_192),
    "decoder_embed_dim": (1, 8_192),
    "num_heads": (1, 128),
    "decoder_num_heads": (1, 128),
    "patch_size": (1, 256),
    "num_classes": (1, 1_000_000),
}
