"""Quality on a user's own ImageFolder: the zero-config pipeline against classical baselines.

For each data variant the benchmark writes a long-tailed ImageFolder (``train/``, ``val/``,
``test/``) from the Fashion-MNIST IDX files and, on that one split, runs

- **zero-config** (``auto``): the ``auto`` recipe derived from the folder's profile, as
  ``livt train --data DIR`` and a pipeline without a preset run it: MGP → BFT (Bal-BCE, from
  that MGP) → evaluate on ``test``; nothing is set but the folder, the seed, the MGP
  checkpoint the fine-tune starts from, one torch thread and one loader process;
- **CE**: the same auto fine-tune with ``loss=ce``, from the same MGP checkpoint;
- **LR** and **SVC**: class-weighted (``class_weight="balanced"``) logistic regression and
  RBF SVC from scikit-learn on the raw pixels (scaled to [0, 1]), ``C`` picked on ``val``
  (``C_GRID``) like the ViT's best epoch; they are deterministic on a fixed split,
  so their seeds coincide.

Every ViT run keeps its best epoch by balanced ``val`` accuracy and is reported on ``test``. The
table gives many / medium / few / overall top-1 (%) as mean ± sample std over the seeds, and the
wall time of each pipeline (MGP + BFT + evaluate). Variants (``--variants``):

- ``fmnist-lt``: 28 px grey PNG, ``n_max`` 1,000, γ = 100 (the README's Fashion-MNIST-LT),
  val 50 per class held out from the unused training images, test the balanced 10,000 images;
- ``rgb32``: 32 px colourised RGB PNG (a tint per image, independent of the class),
  ``n_max`` 300, γ = 50; val 50 per class, test the 10,000 test images;
- ``jpg64``: 64 px colourised RGB JPEG (quality 90), ``n_max`` 500, γ = 50; same val / test.

No preset was tuned on the last two. One command gives the table; it is resumable (a run with a
``results.json`` is skipped, the folders are written once) so it can be built a few runs at a
time::

    PYTHONPATH=. python bench/owndata_quality.py                      # every variant, 3 seeds
    PYTHONPATH=. python bench/owndata_quality.py --variants fmnist-lt --seeds 0
    PYTHONPATH=. python bench/owndata_quality.py --smoke              # seconds, runs/…-smoke

Writes ``owndata_quality.md`` / ``.json`` into ``--out-dir`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.runs import Job, run_all
from bench.stats import fmt_mean_std, mean_std
from livt_core.contract import shot_groups
from livt_core.data.fashion import read_idx
from livt_core.data.longtail import longtail_counts
from livt_core.data.profile import profile_imagefolder

logger = logging.getLogger("bench.owndata_quality")

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
WORK_DIR = REPO / "runs" / "bench-owndata"
SMOKE_DIR = REPO / "runs" / "bench-owndata-smoke"
METRICS = ("many", "medium", "few", "overall")
METHODS = ("auto", "ce", "lr", "svc")
METHOD_TEXT = {
    "auto": "zero-config (auto: MGP → BFT Bal-BCE)",
    "ce": "CE fine-tune from the same MGP",
    "lr": "logistic regression, class-weighted",
    "svc": "RBF SVC, class-weighted",
}
#: ``C`` values tried on val (LR: stronger regularisation; 500 lbfgs iterations).
C_GRID = {"lr": (0.01, 0.1, 1.0), "svc": (1.0, 10.0)}
CLASS_NAMES = (
    "tee",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
_TINTS = np.array(
    [
        (1.0, 0.3, 0.3), (0.3, 1.0, 0.3), (0.3, 0.3, 1.0), (1.0, 1.0, 0.3), (1.0, 0.3, 1.0),
        (0.3, 1.0, 1.0), (1.0, 0.6, 0.2), (0.6, 0.2, 1.0), (0.2, 0.6, 0.6), (0.8, 0.8, 0.8),
    ]
)  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """One generated ImageFolder."""

    name: str
    size: int
    colour: bool
    ext: str
    n_max: int
    imbalance: float
    val_per_class: int = 50
    test_per_class: int | None = None  # None: all 1,000 test images of each class

    def describe(self) -> str:
        test = (
            "the balanced 10,000 test images"
            if self.test_per_class is None
            else f"{self.test_per_class} test images a class"
        )
        return (
            f"{self.size} px {'colourised RGB' if self.colour else 'grey'} "
            f"{self.ext.upper()}, n_max {self.n_max}, γ = {self.imbalance:g}; val "
            f"{self.val_per_class} a class held out from the unused training images; test: {test}"
        )


VARIANTS = {
    v.name: v
    for v in (
        Variant("fmnist-lt", 28, False, "png", 1000, 100.0),
        Variant("rgb32", 32, True, "png", 300, 50.0),
        Variant("jpg64", 64, True, "jpg", 500, 50.0),
    )
}


def find_fashion(explicit: str | None) -> Path:
    """The Fashion-MNIST IDX folder (``--data-root``, ``$LIVT_FASHION_MNIST_DIR``, then the
    shared copy next to the repository)."""
    for candidate in (
        explicit,
        os.environ.get("LIVT_FASHION_MNIST_DIR"),
        str(REPO.parent / "shared" / "data" / "fashion-mnist"),
        "/work/shared/data/fashion-mnist",
    ):
        if candidate and (Path(candidate) / "train-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    raise SystemExit(
        "Fashion-MNIST IDX files not found; pass --data-root DIR or set LIVT_FASHION_MNIST_DIR"
    )


def _save(image: np.ndarray, variant: Variant, rng: np.random.Generator, path: Path) -> None:
    pil = Image.fromarray(image)
    if variant.size != pil.width:
        pil = pil.resize((variant.size, variant.size), Image.BICUBIC)
    if variant.colour:  # a tint drawn per image, independent of the class
        grey = np.asarray(pil, dtype=np.float64)[..., None]
        tint = _TINTS[rng.integers(len(_TINTS))]
        pil = Image.fromarray(np.clip(grey * tint + 20, 0, 255).astype(np.uint8))
    pil.save(path, **({"quality": 90} if variant.ext == "jpg" else {}))


def write_folder(
    root: Path, variant: Variant, source: Path, *, classes: int = 10, seed: int = 0
) -> Path:
    """Writes ``root/{train,val,test}/<class>/<n>.<ext>`` once (``root/.complete`` marks a
    finished folder) and returns ``root``. Train: the exp long-tail profile from ``n_max``;
    val: ``val_per_class`` images of each class from the training images the profile left
    unused; test: the Fashion-MNIST test images (the first ``test_per_class`` of each class
    when set)."""
    if (root / ".complete").is_file():
        return root
    rng = np.random.default_rng(seed)
    train_x = read_idx(source / "train-images-idx3-ubyte.gz", 3)
    train_y = read_idx(source / "train-labels-idx1-ubyte.gz", 1)
    test_x = read_idx(source / "t10k-images-idx3-ubyte.gz", 3)
    test_y = read_idx(source / "t10k-labels-idx1-ubyte.gz", 1)
    counts = longtail_counts(variant.n_max, classes, variant.imbalance, "exp")
    for c in range(classes):
        name = CLASS_NAMES[c]
        order = rng.permutation(np.flatnonzero(train_y == c))
        test_ids = np.flatnonzero(test_y == c)[: variant.test_per_class]
        picks = {
            "train": (train_x, order[: counts[c]]),
            "val": (train_x, order[variant.n_max : variant.n_max + variant.val_per_class]),
            "test": (test_x, test_ids),
        }
        for split, (images, ids) in picks.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, index in enumerate(ids):
                _save(images[index], variant, rng, folder / f"{i:04d}.{variant.ext}")
    (root / ".complete").write_text(json.dumps({"counts": counts}) + "\n")
    return root


def load_split(root: Path, split: str, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """A split's images as flat float32 rows in [0, 1] and their labels."""
    rows, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / split / name).iterdir()):
            with Image.open(path) as image:
                rows.append(np.asarray(image, dtype=np.float32).reshape(-1) / 255.0)
            labels.append(label)
    return np.stack(rows), np.asarray(labels)


def group_report(
    pred: np.ndarray, labels: np.ndarray, train_counts: Sequence[int]
) -> dict[str, float]:
    """Top-1 % per shot group (mean of the classes' accuracies) and overall, as the engine's
    ``long_tail_report`` computes them on a balanced split."""
    per_class = [float((pred[labels == c] == c).mean()) * 100 for c in range(len(train_counts))]
    out = {
        group: float(np.mean([per_class[c] for c in members])) if members else None
        for group, members in shot_groups(train_counts).items()
    }
    out["overall"] = float((pred == labels).mean()) * 100
    return out


Arrays = tuple[np.ndarray, np.ndarray]


def fit_classical(method: str, train: Arrays, val: Arrays, test: Arrays) -> dict[str, Any]:
    """LR or SVC on flat pixel rows in [0, 1]: ``C`` picked on ``val``, reported on ``test``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train, val, test
    train_counts = np.bincount(y_train, minlength=int(y_train.max()) + 1).tolist()

    def make(c: float) -> Any:
        if method == "lr":
            return LogisticRegression(C=c, class_weight="balanced", max_iter=500)
        return SVC(C=c, kernel="rbf", gamma="scale", class_weight="balanced")

    grid = C_GRID[method]
    val_acc = {}
    with threadpool_limits(1):  # one core, like each ViT run
        for c in grid:
            fitted = make(c).fit(x_train, y_train)
            val_acc[c] = float((fitted.predict(x_val) == y_val).mean()) * 100
        best_c = max(grid, key=lambda c: (val_acc[c], -c))
        pred = make(best_c).fit(x_train, y_train).predict(x_test)
    return {
        **group_report(pred, y_test, train_counts),
        "C": best_c,
        "val_overall_by_C": {str(c): v for c, v in val_acc.items()},
        "train_counts": train_counts,
        "wall_s": time.perf_counter() - started,
    }


def classical(root: Path, method: str, out: Path) -> dict[str, Any]:
    """:func:`fit_classical` on an ImageFolder's splits; cached in ``out/results.json``."""
    results_file = out / "results.json"
    if results_file.is_file():
        return json.loads(results_file.read_text())
    classes = sorted(p.name for p in (root / "train").iterdir())
    splits = [load_split(root, split, classes) for split in ("train", "val", "test")]
    result = fit_classical(method, *splits)
    out.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(result, indent=2) + "\n")
    return result


def demo_baselines(out_dir: Path, command: str) -> dict[str, Any]:
    """LR and SVC on the bundled Fashion-MNIST-LT subset with the splits ``make demo`` uses
    (the preset's data: ``n_max`` 1,000, γ = 100, val 50 a class, the 1,000-image test split);
    writes ``demo_baselines.{md,json}``."""
    from livt_core.data import build_dataset

    def arrays(split: str) -> Arrays:
        d = build_dataset("fashion-mnist-lt", split, root=None)
        rows = d.images.reshape(len(d.images), -1).astype(np.float32) / 255.0
        return rows, np.asarray(d.targets)

    splits = [arrays(split) for split in ("train", "val", "test")]
    results = {m: fit_classical(m, *splits) for m in ("lr", "svc")}
    report = {"command": command, "results": results}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "demo_baselines.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Classical baselines on the bundled Fashion-MNIST-LT subset (the demo's data)",
        "",
        f"- command: `{command}`",
        f"- train counts {results['lr']['train_counts']}; val 50 a class; test: the bundled "
        "1,000 balanced test images (the split `make demo` evaluates on)",
        "- raw pixels in [0, 1], class_weight=balanced, C picked on val",
        "",
        "| method | C | many | medium | few | overall |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in results.items():
        cells = " | ".join(f"{r[k]:.1f}" for k in METRICS)
        lines.append(f"| {METHOD_TEXT[m]} | {r['C']:g} | {cells} |")
    markdown = "\n".join(lines) + "\n"
    (out_dir / "demo_baselines.md").write_text(markdown)
    sys.stdout.write(markdown)
    return report


def vit_jobs(
    variant: str, root: Path, profile: dict[str, Any], seed: int, work: Path, smoke: bool
) -> dict[str, Job]:
    """The zero-config pipeline (MGP → BFT Bal-BCE → evaluate) and the CE fine-tune of one
    seed: the auto recipe with nothing set but the data, the seed, the MGP checkpoint, one
    thread and one loader process (fixed, so that the runs and their augmentation streams do
    not depend on the cores of the machine)."""
    base: dict[str, Any] = {
        "data": {"dataset": "imagefolder", "root": str(root), "num_workers": 1},
        "seed": seed,
        "threads": 1,
        "device": "cpu",
    }
    if smoke:
        base.update(epochs=1, warmup_epochs=0.0, max_steps_per_epoch=2)
    d = work / variant / f"seed{seed}"
    mgp = f"{variant}/mgp-seed{seed}"
    bft = f"{variant}/bft-bal_bce-seed{seed}"
    init = str(d / "mgp" / "checkpoint-last.pth")
    jobs = {
        mgp: Job("pretrain", base, d / "mgp", profile=profile),
        bft: Job("finetune", {**base, "init": init}, d / "bft-bal_bce", mgp, profile),
        f"{variant}/bft-ce-seed{seed}": Job(
            "finetune", {**base, "init": init, "loss": "ce"}, d / "bft-ce", mgp, profile
        ),
    }
    evaluate = {
        k: v for k, v in base.items() if k not in ("epochs", "warmup_epochs", "max_steps_per_epoch")
    }
    evaluate = {**evaluate, "checkpoint": str(d / "bft-bal_bce" / "checkpoint-best.pth")}
    jobs[f"{variant}/eval-seed{seed}"] = Job("evaluate", evaluate, d / "eval", bft, profile)
    return jobs


def summarise(
    variant: str, runs: dict[str, dict[str, Any]], classic: dict[str, Any], seeds: Sequence[int]
) -> dict[str, Any]:
    """Rows per method (mean ± std over the seeds whose runs finished), the pipeline times and
    the targets (None where a method has no finished run)."""

    def finished(stage: str) -> list[dict[str, Any]]:
        return [runs[k] for s in seeds if (k := f"{variant}/{stage}-seed{s}") in runs]

    per_method: dict[str, list[dict[str, Any]]] = {
        "auto": [r["result"] for r in finished("eval")],
        "ce": [r["result"] for r in finished("bft-ce")],
        "lr": [classic["lr"]] * len(seeds),
        "svc": [classic["svc"]] * len(seeds),
    }
    rows: dict[str, Any] = {
        m: {
            k: mean_std([r[k] for r in rs]) if rs and rs[0][k] is not None else None
            for k in METRICS
        }
        for m, rs in per_method.items()
    }
    pipeline_s: list[float | None] = []
    pipeline_cpu_s: list[float | None] = []
    pipeline_resumed: list[bool] = []  # a resumed stage's times cover its last part only
    for s in seeds:
        stages = [
            runs.get(f"{variant}/{stage}-seed{s}") for stage in ("mgp", "bft-bal_bce", "eval")
        ]
        if None in stages:
            continue
        walls = [r["wall_s"] for r in stages]
        cpus = [r.get("cpu_s") for r in stages]
        resumed = any(r.get("resumed") for r in stages)
        pipeline_s.append(None if None in walls else sum(walls))
        pipeline_cpu_s.append(None if None in cpus else sum(cpus))
        pipeline_resumed.append(resumed)
    best_classic = max(("lr", "svc"), key=lambda m: rows[m]["overall"]["mean"])
    auto, ce = rows["auto"], rows["ce"]
    margin = (
        None
        if auto["overall"] is None
        else auto["overall"]["mean"] - rows[best_classic]["overall"]["mean"]
    )
    few_gain = (
        None
        if auto["few"] is None or ce["few"] is None
        else auto["few"]["mean"] - ce["few"]["mean"]
    )
    targets = {
        "best_classical": best_classic,
        "overall_margin": margin,
        "few_gain_over_ce": few_gain,
        "pipeline_s": pipeline_s,
        "pipeline_cpu_s": pipeline_cpu_s,
        "pipeline_resumed": pipeline_resumed,
        "overall_met": margin is not None and margin >= 0,
        "few_met": few_gain is not None and few_gain >= 10,
        "time_met": bool(pipeline_s)
        and not any(pipeline_resumed)
        and all(t is not None and t <= 600 for t in pipeline_s),
    }
    first = finished("bft-bal_bce")
    mgp = finished("mgp")
    return {
        "rows": rows,
        "seeds_done": {m: len(rs) for m, rs in per_method.items()},
        "per_seed": {m: [{k: r[k] for k in METRICS} for r in rs] for m, rs in per_method.items()},
        "targets": targets,
        "ce_wall_s": [r["wall_s"] for r in finished("bft-ce")],
        "ce_cpu_s": [r.get("cpu_s") for r in finished("bft-ce")],
        "classical": {m: {k: classic[m][k] for k in ("C", "wall_s")} for m in ("lr", "svc")},
        "train_counts": classic["lr"]["train_counts"],
        "recipe": {
            "pretrain": mgp[0].get("config") if mgp else None,
            "finetune": first[0].get("config") if first else None,
        },
    }


def _recipe_line(config: dict[str, Any] | None, keys: Sequence[str]) -> str:
    if not config:
        return "–"
    data = config.get("data", {})
    parts = [f"{k}={config[k]}" for k in keys if k in config]
    return f"img_size={data.get('img_size')}, " + ", ".join(parts)


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Quality on generated ImageFolders: zero-config vs CE vs classical baselines",
        "",
        f"- command: `{report['command']}`",
        f"- seeds {report['seeds']}; {report['device']}; 5-min load average at the end of the "
        f"runs {report['load_average']}",
        "- top-1 % on the test split, mean ± sample std over seeds; ViT runs keep their best "
        "epoch by val top-1; groups by training count: many > 100, medium 20–100, few < 20",
        "- LR / SVC: scikit-learn, raw pixels in [0, 1], class_weight=balanced, C from "
        f"{C_GRID['lr']} (LR) / {C_GRID['svc']} (SVC) on val; deterministic (the same "
        "numbers for every seed)",
        "- pipeline time: MGP + BFT + evaluate wall seconds, each run one torch thread and one "
        "loader process, two runs at a time on the shared machine",
        "",
    ]
    for name, v in report["variants"].items():
        t = v["targets"]
        lines += [
            f"## {name}: {v['description']}",
            "",
            f"train counts {v['train_counts']}",
            "",
            "| method | many | medium | few | overall |",
            "|---|---|---|---|---|",
        ]
        for m in METHODS:
            cells = " | ".join(fmt_mean_std(v["rows"][m][k]) for k in METRICS)  # – : no run
            lines.append(f"| {METHOD_TEXT[m]} | {cells} |")

        def secs(values: Sequence[float | None], resumed: Sequence[bool] = ()) -> str:
            marks = [" (resumed: last part only)" if r else "" for r in resumed]
            marks += [""] * (len(values) - len(marks))
            text = (
                "–" if w is None else f"{w:.0f}" + m for w, m in zip(values, marks, strict=True)
            )
            return ", ".join(text) or "–"

        def verdict(met: bool, value: float | None) -> str:
            return "not run" if value is None else "met" if met else "NOT met"

        margin, few = t["overall_margin"], t["few_gain_over_ce"]
        lines += [
            "",
            f"seeds finished: zero-config {v['seeds_done']['auto']}, CE {v['seeds_done']['ce']}",
            "",
            f"- zero-config overall − best classical ({t['best_classical']}): "
            + ("–" if margin is None else f"{margin:+.1f}")
            + f" → {verdict(t['overall_met'], margin)}",
            "- zero-config few − CE few: "
            + ("–" if few is None else f"{few:+.1f}")
            + f" (target ≥ +10) → {verdict(t['few_met'], few)}",
            f"- pipeline (MGP + BFT + evaluate) wall s per seed: "
            f"{secs(t['pipeline_s'], t['pipeline_resumed'])}, CPU s (training process and its "
            f"loader): {secs(t['pipeline_cpu_s'], t['pipeline_resumed'])} (target ≤ 600 s "
            f"wall on 2 cores); CE fine-tune wall s: {secs(v['ce_wall_s'])}, CPU s: "
            f"{secs(v['ce_cpu_s'])}; LR / SVC wall s (C grid included): "
            f"{v['classical']['lr']['wall_s']:.0f} / {v['classical']['svc']['wall_s']:.0f}",
            "- auto recipe: MGP "
            + _recipe_line(
                v["recipe"]["pretrain"], ("model", "epochs", "warmup_epochs", "batch_size", "blr")
            )
            + "; BFT "
            + _recipe_line(
                v["recipe"]["finetune"],
                (
                    "model",
                    "epochs",
                    "warmup_epochs",
                    "batch_size",
                    "blr",
                    "crop_scale",
                    "smoothing",
                    "drop_path",
                    "layer_decay",
                ),
            ),
            "",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-root", default=None, help="Fashion-MNIST IDX folder")
    parser.add_argument("--work-dir", type=Path, default=None, help=f"default {WORK_DIR}")
    parser.add_argument("--out-dir", type=Path, default=None, help=f"default {RESULTS_DIR}")
    parser.add_argument("--jobs", type=int, default=2, help="ViT runs at a time (one thread each)")
    parser.add_argument("--smoke", action="store_true", help="seconds: tiny folders, 2 steps")
    parser.add_argument(
        "--demo", action="store_true", help="only LR / SVC on the bundled demo subset"
    )
    parser.add_argument(
        "--only",
        choices=("auto", "ce"),
        help="only the zero-config pipelines (MGP, BFT, evaluate) or only MGP and the CE "
        "fine-tunes, e.g. to run both in two shells; writes no table",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the table from the finished runs without training the missing ones",
    )
    parser.add_argument(
        "--classical-only", action="store_true", help="only the LR / SVC baselines (cached)"
    )
    args = parser.parse_args(argv)
    default_work, default_out = (
        (SMOKE_DIR / "runs", SMOKE_DIR) if args.smoke else (WORK_DIR, RESULTS_DIR)
    )
    args.work_dir = args.work_dir or default_work
    args.out_dir = args.out_dir or default_out
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("livt_core.engine.loop").setLevel(logging.WARNING)
    if args.demo:
        return demo_baselines(
            args.out_dir,
            shlex.join(
                ["python", "bench/owndata_quality.py", *(sys.argv[1:] if argv is None else argv)]
            ),
        )
    source = find_fashion(args.data_root)
    seeds = args.seeds[:1] if args.smoke else args.seeds
    variants = {}
    for name in args.variants:
        v = VARIANTS[name]
        if args.smoke:
            v = Variant(v.name, v.size, v.colour, v.ext, 40, 10.0, 5, 5)
        variants[name] = v
    roots, profiles, jobs = {}, {}, {}
    for name, v in variants.items():
        roots[name] = write_folder(args.work_dir / "data" / name, v, source)
        profiles[name] = profile_imagefolder(roots[name]).to_dict()
        for seed in seeds:
            jobs.update(
                vit_jobs(name, roots[name], profiles[name], seed, args.work_dir, args.smoke)
            )
    if args.report_only:  # the table from the runs that finished; nothing is trained
        jobs = {k: j for k, j in jobs.items() if (j.out / "results.json").is_file()}
    if args.only:  # a part of the runs (e.g. the CE fine-tunes in a second shell): no table
        keep = (
            ("/mgp-", "/bft-bal_bce-", "/eval-") if args.only == "auto" else ("/mgp-", "/bft-ce-")
        )
        jobs = {k: j for k, j in jobs.items() if any(part in k for part in keep)}

    def baselines() -> dict[str, dict[str, Any]]:
        return {
            name: {m: classical(roots[name], m, args.work_dir / name / m) for m in ("lr", "svc")}
            for name in variants
        }

    if args.classical_only:
        return baselines()
    runs = run_all(jobs, args.jobs, 1)
    if args.only:
        return runs
    classic = baselines()
    for name, run in runs.items():
        config_file = jobs[name].out / "config.json"
        run["config"] = json.loads(config_file.read_text()) if config_file.is_file() else None
    loads = [r["load_average"][1] for r in runs.values() if r.get("load_average")]
    report = {
        "command": shlex.join(
            ["python", "bench/owndata_quality.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "device": f"cpu, {os.cpu_count()} logical CPUs",
        "load_average": f"{min(loads):.1f}–{max(loads):.1f}" if loads else "not recorded",
        "seeds": list(seeds),
        "variants": {
            name: {
                "description": v.describe(),
                "root": str(roots[name]),
                **summarise(name, runs, classic[name], seeds),
            }
            for name, v in variants.items()
        },
        "runs": {
            name: {k: r[k] for k in ("result", "wall_s", "resumed", "load_average")}
            for name, r in runs.items()
        },
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "owndata_quality" if not args.smoke else "owndata_quality-smoke"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = to_markdown(report)
    (args.out_dir / f"{stem}.md").write_text(markdown)
    sys.stdout.write(markdown)
    return report


if __name__ == "__main__":
    main()
