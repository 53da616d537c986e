"""Training throughput on image folders against the bundled in-memory set, as ratios.

Every case is a real ``livt_core.engine.run`` (loader, transforms, model step, optimizer), so it
measures what a job sees. Three data sources feed the same model at the same input size:

* ``in-memory``: the bundled Fashion-MNIST-LT subset (uint8 arrays in memory), resized by the
  transforms to the case's size and replicated to RGB;
* ``png-32``: a generated long-tailed 32 px RGB PNG ImageFolder (10 classes, 463 images);
* ``jpeg-224``: a generated 224 px RGB JPEG ImageFolder (10 classes, 240 images; not in
  ``--smoke``).

For each source, MGP (``mae_vit_nano_patch4`` at 32 px, ``mae_vit_tiny_patch16`` at 224 px) and
BFT (``vit_nano_patch4`` / ``vit_tiny_patch16``, the auto recipe's augmentation for the size)
train a few epochs of the same number of steps; images/s is the images of an epoch over its
median training time, leaving out the first epoch (worker start, cache fill). The ratio is
in-memory images/s over folder images/s (1.0 = as fast as memory).

Usage (from the repository root, with the project importable)::

    PYTHONPATH=. python bench/folder_speed.py [--device cpu] [--epochs 4] [--threads 1]
    PYTHONPATH=. python bench/folder_speed.py --no-cache      # files decoded every epoch
    PYTHONPATH=. python bench/folder_speed.py --smoke         # seconds

Writes ``folder-speed-<device>[-<sizes>][-nocache].md`` / ``.json`` into ``--out-dir`` (default
``bench/results``).
The generated folders need the Fashion-MNIST IDX files (``$LIVT_FASHION_MNIST_DIR``, else the
bundled subset). Timings depend on the machine and its load; nothing asserts on them.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from livt_core.config import resolve_config
from livt_core.engine import run
from tests.folders import make_imagefolder

logger = logging.getLogger("bench.folder_speed")

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: size → (image size, MGP model, BFT model, batch, steps per epoch)
SIZES = {
    "32": (32, "mae_vit_nano_patch4", "vit_nano_patch4", 32, 14),
    "224": (224, "mae_vit_tiny_patch16", "vit_tiny_patch16", 8, 4),
}
BFT_AUGMENT = {
    "32": {"crop_scale": [0.35, 1.0], "auto_augment": None, "mixup": 0.0, "cutmix": 0.0},
    "224": {"crop_scale": [0.08, 1.0], "auto_augment": "rand-m9-mstd0.5-inc1", "mixup": 0.0},
}


def make_folders(work: Path, smoke: bool) -> dict[str, Path]:
    png = make_imagefolder(work / "png-32", n_max=40 if smoke else 120, size=32, ext="png")
    if smoke:
        return {"png-32": png}
    jpeg = make_imagefolder(
        work / "jpeg-224", n_max=24, imbalance=1.0, per_class=2, size=224, ext="jpg"
    )
    return {"png-32": png, "jpeg-224": jpeg}


def case_config(
    kind: str, size: str, source: str, folder: Path | None, args: argparse.Namespace
) -> Any:
    img_size, mae, vit, batch, steps = SIZES[size]
    if args.smoke:
        batch, steps = 8, 2
    data: dict[str, Any] = {
        "img_size": img_size,
        "in_chans": 3,
        "num_workers": args.num_workers,
        "cache_mb": 0 if args.no_cache else 2048,
        "mean": [0.5],
        "std": [0.25],
    }
    if folder is None:
        # a small validation split: BFT evaluates it after every epoch (not timed)
        data.update(dataset="fashion-mnist-lt", root=None, val_per_class=2)
    else:
        data.update(dataset="imagefolder", root=str(folder))
    values: dict[str, Any] = {
        "data": data,
        "model": mae if kind == "pretrain" else vit,
        "epochs": args.epochs,
        "warmup_epochs": 0,
        "batch_size": batch,
        "max_steps_per_epoch": steps,
        "threads": args.threads,
        "device": args.device,
        "amp": "off",
    }
    if kind == "finetune":
        values.update(BFT_AUGMENT[size], reprob=0.0)
    return resolve_config(kind, None, values)


def measure(config: Any, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    result = run(config, out, resume=None)
    total = time.perf_counter() - started
    times = [h["epoch_seconds"] for h in result.history]
    timed = times[1:] or times
    images = config.batch_size * config.max_steps_per_epoch
    return {
        "images_per_epoch": images,
        "epoch_seconds": times,
        "images_per_s": images / statistics.median(timed),
        "wall_s": total,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--no-cache", action="store_true", help="data.cache_mb=0")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--smoke", action="store_true", help="tiny sets, 2 epochs of 2 steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.sizes = 2, ["32"]
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="livt-folder-speed-") as tmp:
        work = Path(tmp)
        folders = make_folders(work, args.smoke)
        for size in args.sizes:
            folder_name = "png-32" if size == "32" else "jpeg-224"
            for kind, stage in (("pretrain", "mgp"), ("finetune", "bft")):
                speeds = {}
                for source, folder in (("in-memory", None), (folder_name, folders[folder_name])):
                    config = case_config(kind, size, source, folder, args)
                    speeds[source] = measure(config, work / f"run-{stage}-{source}-{size}")
                    logger.warning(
                        "%s %s %s: %.0f images/s",
                        stage,
                        size,
                        source,
                        speeds[source]["images_per_s"],
                    )
                memory, files = speeds["in-memory"], speeds[folder_name]
                rows.append(
                    {
                        "stage": stage,
                        "img_size": int(size),
                        "folder": folder_name,
                        "model": config.model,
                        "in_memory_images_per_s": round(memory["images_per_s"], 1),
                        "folder_images_per_s": round(files["images_per_s"], 1),
                        "ratio": round(memory["images_per_s"] / files["images_per_s"], 3),
                        "detail": {"in-memory": memory, folder_name: files},
                    }
                )
    command = "PYTHONPATH=. python bench/folder_speed.py " + shlex.join(argv or sys.argv[1:])
    report = {
        "command": command.strip(),
        "settings": {
            "device": args.device,
            "epochs": args.epochs,
            "threads": args.threads,
            "num_workers": args.num_workers,
            "cache": not args.no_cache,
        },
        "rows": rows,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    slug = f"folder-speed-{args.device.replace(':', '')}"
    if args.sizes != list(SIZES):
        slug += "-" + "-".join(args.sizes)
    if args.no_cache:
        slug += "-nocache"
    (args.out_dir / f"{slug}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"`{report['command']}`",
        "",
        "| stage | size | folder | model | in-memory images/s | folder images/s | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['img_size']} | {r['folder']} | {r['model']} | "
            f"{r['in_memory_images_per_s']:.0f} | {r['folder_images_per_s']:.0f} | "
            f"{r['ratio']:.2f}× |"
        )
    (args.out_dir / f"{slug}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
