"""Quality benchmark: CE vs Bal-CE vs Bal-BCE, with and without MGP, on Fashion-MNIST-LT.

The long-tailed training set is built from the full Fashion-MNIST files with the CIFAR-LT rule
(``n_max`` 1,000, γ = 100, exp profile: 1000 … 10 images per class, so the many / medium / few
groups all exist). For every seed the benchmark

1. pretrains one MAE (MGP) on that training set, and
2. fine-tunes (BFT) the same small ViT with each loss (``ce``, ``bal_ce``, ``bal_bce``) twice:
   from random weights and from that seed's MGP encoder,

all with one BFT recipe and one budget. Each fine-tune keeps its best epoch by balanced
validation accuracy (50 held-out images per class) and is reported on the balanced 10,000-image
test set. The table gives many / medium / few / overall top-1 as mean ± sample std over seeds.

It is one command, parallel (``--jobs``: runs trained at the same time, two by default) and
resumable: a run whose ``results.json`` exists is skipped, an interrupted run continues from its
``checkpoint-last.pth``::

    python bench/quality.py           # 3 + 18 runs; about 30 minutes on 2 idle cores
    python bench/quality.py --smoke   # seconds: bundled subset, a few steps (runs/…-smoke)

Writes ``quality.md`` and ``quality.json`` into ``--out-dir`` (default ``bench/results``); runs
live under ``--work-dir`` (default ``runs/bench-quality``).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from livt_core.config import deep_merge, parse_overrides, resolve_config
from livt_core.data import dataset_info
from livt_core.engine import run

logger = logging.getLogger("bench.quality")

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
WORK_DIR = REPO / "runs" / "bench-quality"
SMOKE_DIR = REPO / "runs" / "bench-quality-smoke"
DATA_ENV = "LIVT_FASHION_MNIST_DIR"
DATA_CANDIDATES = (
    REPO.parent / "shared" / "data" / "fashion-mnist",
    Path("/usr/share/datasets/fashion-mnist"),
)
IDX_STEM = "train-images-idx3-ubyte"

LOSSES = ("ce", "bal_ce", "bal_bce")
INITS = ("scratch", "mgp")
METRICS = ("many", "medium", "few", "overall")

#: The long-tailed training set (shared by MGP and BFT). Every setting the runs depend on is
#: spelled out here and in the recipes below (no preset), so the benchmark does not drift when
#: the library's presets are retuned.
DATA = {
    "dataset": "fashion-mnist-lt",
    "n_max": 1000,
    "imbalance_factor": 100.0,
    "profile": "exp",
    "img_size": 28,
    "in_chans": 1,
}

#: One BFT recipe for every loss. The paper's RandAugment (m9), Mixup 0.8 / CutMix 1.0 and random
#: erasing are off: on 2,478 grey 28 px images and a 0.2 M-parameter ViT trained for tens of
#: epochs they mostly slow fitting down. Crop + flip and label smoothing 0.1 stay; τ = 1. The
#: crop keeps 35–100 % of the image area: the paper's 8–100 % leaves a few pixels of a 28 px
#: item, and CE as well as Bal-BCE lose 3–8 points overall with it (seed 0, from scratch).
#: Batch 32 gives 78 optimizer steps per epoch on this small set.
BFT_RECIPE: dict[str, Any] = {
    "auto_augment": None,
    "mixup": 0.0,
    "cutmix": 0.0,
    "reprob": 0.0,
    "crop_scale": [0.35, 1.0],
    "smoothing": 0.1,
    "tau": 1.0,
    "drop_path": 0.1,
    "batch_size": 32,
    "blr": 8e-3,
}
#: What depends on the initialisation. Layer-wise lr decay protects pretrained lower blocks; on
#: random weights it would only slow the lower blocks down, so training from scratch uses none.
INIT_RECIPE: dict[str, dict[str, Any]] = {
    "scratch": {"layer_decay": 1.0},
    "mgp": {"layer_decay": 0.75},
}
MGP_RECIPE: dict[str, Any] = {"batch_size": 128, "blr": 1.5e-3, "mask_ratio": 0.75}


def find_data_root(explicit: str | None) -> Path:
    """The Fashion-MNIST folder: ``--data-root``, ``$LIVT_FASHION_MNIST_DIR``, then the usual
    places. Exits with the list of places tried when none holds the IDX files."""
    tried: list[str] = []
    candidates: list[tuple[str, Path]] = []
    if explicit:
        candidates.append(("--data-root", Path(explicit)))
    elif os.environ.get(DATA_ENV):
        candidates.append((f"${DATA_ENV}", Path(os.environ[DATA_ENV])))
    else:
        candidates.extend(("default", p) for p in DATA_CANDIDATES)
    for origin, path in candidates:
        if any((path / f"{IDX_STEM}{ext}").is_file() for ext in ("", ".gz")):
            return path.resolve()
        tried.append(f"{path} ({origin})")
    raise SystemExit(
        "Fashion-MNIST not found: no train-images-idx3-ubyte[.gz] in "
        + ", ".join(tried)
        + f". Download the four IDX files and pass --data-root DIR or set {DATA_ENV}; "
        "--smoke runs on the subset bundled with livt_core instead."
    )


def same_config(config: BaseModel, on_disk: dict[str, Any]) -> bool:
    """Whether a run directory's ``config.json`` describes ``config``. Both are compared with
    every default filled in, so a setting added to the library later (with a default) does not
    orphan finished runs; ``recipe_notes`` only explain the settings and are not compared."""
    try:
        stored = type(config).model_validate(on_disk)
    except ValueError:  # pydantic's ValidationError included
        return False
    ignore = {"recipe_notes"}
    return stored.model_dump(mode="json", exclude=ignore) == config.model_dump(
        mode="json", exclude=ignore
    )


def _cpu_seconds() -> float:
    """CPU time of this process and its ended children (the run's loader workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_once(
    kind: str, overrides: dict[str, Any], out: Path, profile: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Runs one stage into ``out`` unless its ``results.json`` exists; returns the result and
    the wall time (``bench_wall.json``, written by this script next to the engine's files; for a
    resumed run only the time of the invocation that finished it). With a dataset ``profile``
    and no preset, the config is the ``auto`` recipe's with ``overrides`` on top."""
    results_file = out / "results.json"
    wall_file = out / "bench_wall.json"
    config = resolve_config(kind, None, overrides, profile=profile)
    config_file = out / "config.json"
    if config_file.is_file():
        if not same_config(config, json.loads(config_file.read_text(encoding="utf-8"))):
            raise SystemExit(
                f"{out} holds a run with another configuration (budget or recipe changed); "
                "pass a new --work-dir or delete that directory"
            )
    if results_file.is_file():
        logger.info("skip %s: %s exists", out.name, results_file)
    else:
        resumed = (out / "checkpoint-last.pth").is_file()
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        outcome = run(config, out, resume="auto")
        if outcome.status != "succeeded":
            raise SystemExit(f"run {out} ended with status {outcome.status}")
        wall = {
            "seconds": time.perf_counter() - started,
            "cpu_seconds": _cpu_seconds() - cpu_started,
            "resumed": resumed,
            "load_average": list(os.getloadavg()),
        }
        wall_file.write_text(json.dumps(wall) + "\n")
    result = json.loads(results_file.read_text(encoding="utf-8"))
    wall = json.loads(wall_file.read_text()) if wall_file.is_file() else {"seconds": None}
    return {
        "result": result,
        "wall_s": wall["seconds"],
        "cpu_s": wall.get("cpu_seconds"),
        "resumed": wall.get("resumed", False),
        "load_average": wall.get("load_average"),
    }


def _run_in_child(
    kind: str,
    overrides: dict[str, Any],
    out: Path,
    threads: int,
    profile: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``run_once`` in a pool process, with the benchmark's thread and logging settings."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("livt_core.engine.loop").setLevel(logging.WARNING)
    return run_once(kind, overrides, out, profile)


@dataclass(frozen=True)
class Job:
    """One training run of the benchmark; ``after`` names the run it starts from (MGP);
    ``profile``: the dataset profile the ``auto`` recipe derives the config from (None: the
    schema's defaults under ``overrides``)."""

    kind: str
    overrides: dict[str, Any]
    out: Path
    after: str | None = None
    profile: dict[str, Any] | None = None


def run_all(jobs: dict[str, Job], parallel: int, threads: int) -> dict[str, dict[str, Any]]:
    """Runs every job, each after the job it depends on: one after another in this process
    when ``parallel`` is 1, else in a pool of that many fresh (spawned) processes, starting a
    job as soon as its MGP run has finished so that no process waits for a stage to end.
    Stops at the first failure; finished runs keep their ``results.json`` for the next
    invocation."""
    for name, job in jobs.items():
        if job.after is not None and job.after not in jobs:
            raise ValueError(f"{name} depends on {job.after}, which is not a job")
    results: dict[str, dict[str, Any]] = {}
    pending = dict(jobs)

    def ready() -> list[str]:
        return [n for n, j in pending.items() if j.after is None or j.after in results]

    if parallel <= 1:
        while pending:
            name = ready()[0]
            job = pending.pop(name)
            results[name] = run_once(job.kind, job.overrides, job.out, job.profile)
        return results
    pool = ProcessPoolExecutor(
        max_workers=parallel, mp_context=multiprocessing.get_context("spawn")
    )
    running: dict[Future[dict[str, Any]], str] = {}
    try:
        while pending or running:
            for name in ready():
                job = pending.pop(name)
                future = pool.submit(
                    _run_in_child, job.kind, job.overrides, job.out, threads, job.profile
                )
                running[future] = name
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                results[running.pop(future)] = future.result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (0 for one value) of ``values``."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "values": list(values)}


def summarise(runs: dict[str, dict[str, Any]], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One row per (loss, init): each metric as mean ± std over the seeds that finished."""
    rows = []
    for init in INITS:
        for loss in LOSSES:
            done = [runs[k]["result"] for s in seeds if (k := run_name(loss, init, s)) in runs]
            if not done:
                continue
            row: dict[str, Any] = {"loss": loss, "init": init, "seeds": len(done)}
            for metric in METRICS:
                row[metric] = mean_std([r[metric] for r in done if r[metric] is not None])
            row["best_epoch"] = [r.get("best_epoch") for r in done]
            rows.append(row)
    return rows


def bar_check(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bal-BCE minus CE on few-shot and overall accuracy, per init: the benchmark's bar is
    few-shot +20 points or more and no loss on overall."""
    by_key = {(r["loss"], r["init"]): r for r in rows}
    out = []
    for init in INITS:
        ce, bbce = by_key.get(("ce", init)), by_key.get(("bal_bce", init))
        if ce is None or bbce is None:
            continue
        few = bbce["few"]["mean"] - ce["few"]["mean"]
        overall = bbce["overall"]["mean"] - ce["overall"]["mean"]
        per_seed = [
            (b_few - c_few, b_all - c_all)
            for b_few, c_few, b_all, c_all in zip(
                bbce["few"]["values"],
                ce["few"]["values"],
                bbce["overall"]["values"],
                ce["overall"]["values"],
                strict=False,
            )
        ]
        out.append(
            {
                "init": init,
                "few_gain": few,
                "overall_gain": overall,
                "few_gain_per_seed": [f for f, _ in per_seed],
                "overall_gain_per_seed": [o for _, o in per_seed],
                "holds": few >= 20.0 and overall >= 0.0,
                "holds_every_seed": all(f >= 20.0 and o >= 0.0 for f, o in per_seed),
            }
        )
    return out


def run_name(loss: str, init: str, seed: int) -> str:
    return f"bft-{loss}-{init}-seed{seed}"


def _fmt(stat: dict[str, Any]) -> str:
    return f"{stat['mean']:.1f} ± {stat['std']:.1f}"


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown header, the main table, the bar check and per-run wall times."""
    b = report["budget"]
    lines = [
        "# Quality: Fashion-MNIST-LT (γ = 100), CE vs Bal-CE vs Bal-BCE, ± MGP",
        "",
        f"- command: `{report['command']}`",
        f"- data: {report['data']['train_source']}; train counts {report['data']['train_counts']}"
        f"; test: {report['data']['test_images']} balanced images; model selection on "
        f"{report['data']['val_images']} balanced val images held out from the unused pool",
        f"- budget: BFT `{b['model']}` at {b['img_size']} px, {b['epochs']} epochs "
        f"({b['warmup_epochs']} warmup), batch {b['batch_size']}; MGP `{b['pretrain_model']}`, "
        f"{b['pretrain_epochs']} epochs ({b['pretrain_warmup_epochs']} warmup), mask ratio "
        f"{MGP_RECIPE['mask_ratio']}; seeds {report['seeds']}"
        + (
            f"; at most {b['max_steps_per_epoch']} steps per epoch"
            if b["max_steps_per_epoch"]
            else ""
        ),
        f"- BFT recipe (all losses): {_recipe_text(report['recipe'])}; from scratch: "
        f"{_recipe_text(report['init_recipe']['scratch'])}; from MGP: "
        f"{_recipe_text(report['init_recipe']['mgp'])}",
        "- groups by training count: many > 100, medium 20–100, few < 20 images; top-1 %, "
        "mean ± sample std over seeds; best epoch by val top-1, reported on test",
        f"- wall time: {report['wall_s']:.0f} s of runs ({report['device']}; torch threads "
        f"{b['threads']}, {b['num_workers']} loader worker(s); 5-min load average at the end of "
        f"the runs: {report['load_average']})",
        "",
        "| loss | init | many | medium | few | overall |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        cells = " | ".join(_fmt(r[m]) for m in METRICS)
        init = "MGP" if r["init"] == "mgp" else "scratch"
        lines.append(f"| {r['loss']} | {init} | {cells} |")
    lines += ["", "Bal-BCE − CE (bar: few ≥ +20 points, overall ≥ 0):", ""]
    for c in report["bar"]:
        init = "MGP" if c["init"] == "mgp" else "scratch"
        verdict = "holds" if c["holds"] else "does not hold"
        if c["holds"]:
            verdict += " on the mean and " + (
                "for every seed" if c["holds_every_seed"] else "not for every seed"
            )
        seeds_few = " / ".join(f"{g:+.1f}" for g in c["few_gain_per_seed"])
        seeds_all = " / ".join(f"{g:+.1f}" for g in c["overall_gain_per_seed"])
        lines.append(
            f"- {init}: few {c['few_gain']:+.1f}, overall {c['overall_gain']:+.1f} → {verdict} "
            f"(per seed: few {seeds_few}; overall {seeds_all})"
        )
    lines += ["", "| run | wall (s) | best epoch | overall | few |", "|---|---|---|---|---|"]
    for name, r in report["runs"].items():
        res = r["result"]
        wall = "–" if r["wall_s"] is None else f"{r['wall_s']:.0f}"
        if r["resumed"]:
            wall += " (resumed: last part only)"
        if name.startswith("mgp-"):
            lines.append(f"| {name} | {wall} | – | – | – |")
        else:
            lines.append(
                f"| {name} | {wall} | {res.get('best_epoch')} | {res['overall']:.1f} "
                f"| {res['few']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def _load_range(runs: dict[str, dict[str, Any]]) -> str:
    loads = [r["load_average"][1] for r in runs.values() if r["load_average"]]
    if not loads:
        return "not recorded"
    return f"{min(loads):.1f}–{max(loads):.1f}"


def _recipe_text(recipe: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in recipe.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None, help=f"Fashion-MNIST IDX folder (${DATA_ENV})")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help=f"run directories (default {WORK_DIR})"
    )
    parser.add_argument(
        "--out-dir", type=Path, default=None, help=f"result files (default {RESULTS_DIR})"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default="vit_nano_patch4", help="BFT model (vit_*_patch4)")
    parser.add_argument("--epochs", type=int, default=30, help="BFT epochs")
    parser.add_argument("--warmup-epochs", type=float, default=3.0)
    parser.add_argument("--pretrain-epochs", type=int, default=40, help="MGP epochs")
    parser.add_argument("--pretrain-warmup-epochs", type=float, default=4.0)
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="runs trained at the same time, each in its own process (default 2: one per core "
        "of a 2-core machine, each with --threads torch threads)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads of the training process"
    )
    parser.add_argument(
        "--bft-set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="change the BFT recipe of every loss (ablations; use a new --work-dir), "
        "e.g. mixup=0.8 cutmix=1.0",
    )
    parser.add_argument("--smoke", action="store_true", help="seconds: bundled data, 2 steps")
    args = parser.parse_args(argv)
    # a smoke run must never overwrite the real runs or the committed results
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
    # The model is tiny: one compute thread plus one loader process use two cores without
    # the spin-waiting that oversubscribed intra-op threads cause on a shared machine.
    torch.set_num_threads(args.threads)
    if args.smoke:
        root, seeds, epochs, pre_epochs, max_steps = None, args.seeds[:1], 1, 1, 2
        warmup = pre_warmup = 0.0
    else:
        root = str(find_data_root(args.data_root))
        seeds, epochs, pre_epochs, max_steps = args.seeds, args.epochs, args.pretrain_epochs, None
        warmup, pre_warmup = args.warmup_epochs, args.pretrain_warmup_epochs
    changes = parse_overrides(args.bft_set)
    recipe = deep_merge(BFT_RECIPE, changes)
    init_recipes = {
        init: deep_merge({**BFT_RECIPE, **INIT_RECIPE[init]}, changes) for init in INITS
    }
    pretrain_model = f"mae_{args.model}"
    data = {**DATA, "root": root, "num_workers": args.num_workers}
    common = {"data": data, "device": "cpu", "max_steps_per_epoch": max_steps}
    # Per seed one MGP run and six fine-tunes; those from MGP start when their MGP run ends.
    mgp_jobs: dict[str, Job] = {}
    bft_jobs: dict[str, Job] = {}
    for seed in seeds:
        mgp_dir = args.work_dir / f"mgp-seed{seed}"
        mgp = deep_merge(
            common,
            {
                **MGP_RECIPE,
                "model": pretrain_model,
                "epochs": pre_epochs,
                "warmup_epochs": pre_warmup,
                "seed": seed,
            },
        )
        mgp_jobs[f"mgp-seed{seed}"] = Job("pretrain", mgp, mgp_dir)
        for init in INITS:
            for loss in LOSSES:
                bft = deep_merge(
                    common,
                    {
                        **init_recipes[init],
                        "model": args.model,
                        "loss": loss,
                        "epochs": epochs,
                        "warmup_epochs": warmup,
                        "seed": seed,
                        "init": str(mgp_dir / "checkpoint-last.pth") if init == "mgp" else None,
                    },
                )
                name = run_name(loss, init, seed)
                after = f"mgp-seed{seed}" if init == "mgp" else None
                bft_jobs[name] = Job("finetune", bft, args.work_dir / name, after)
    # MGP runs first (the fine-tunes from MGP wait for them), then the fine-tunes in seed order
    runs = run_all({**mgp_jobs, **bft_jobs}, args.jobs, args.threads)
    # the table lists runs in a fixed order (per seed: MGP, then the fine-tunes)
    order = [
        n
        for s in seeds
        for n in (f"mgp-seed{s}", *(run_name(lo, i, s) for i in INITS for lo in LOSSES))
    ]
    runs = {name: runs[name] for name in order}

    first = next(r["result"] for n, r in runs.items() if n.startswith("bft-"))
    rows = summarise(runs, seeds)
    walls = [r["wall_s"] for r in runs.values() if r["wall_s"] is not None]
    report = {
        "command": shlex.join(
            ["python", "bench/quality.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "device": f"cpu, {os.cpu_count()} logical CPUs",
        "load_average": _load_range(runs),
        "seeds": list(seeds),
        "budget": {
            "model": args.model,
            "img_size": DATA["img_size"],
            "epochs": epochs,
            "warmup_epochs": warmup,
            "batch_size": recipe["batch_size"],
            "pretrain_model": pretrain_model,
            "pretrain_epochs": pre_epochs,
            "pretrain_warmup_epochs": pre_warmup,
            "max_steps_per_epoch": max_steps,
            "threads": args.threads,
            "num_workers": args.num_workers,
        },
        "recipe": recipe,
        "init_recipe": {
            init: {k: init_recipes[init][k] for k in INIT_RECIPE[init]} for init in INITS
        },
        "mgp_recipe": MGP_RECIPE,
        "data": {
            "root": root,
            "train_source": first["class_counts_source"],
            "train_counts": [c["train_count"] for c in first["per_class"]],
            "test_images": sum(c["support"] for c in first["per_class"]),
            "val_images": 10 * dataset_info(DATA["dataset"], root).default_val_per_class,
        },
        "rows": rows,
        "bar": bar_check(rows),
        "runs": runs,
        "wall_s": sum(walls),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "quality.json").write_text(
        json.dumps(report, indent=2) + "\n", encoding="utf-8"
    )
    markdown = to_markdown(report)
    (args.out_dir / "quality.md").write_text(markdown, encoding="utf-8")
    logger.info("wrote %s/quality.{md,json}", args.out_dir)
    sys.stdout.write(markdown)
    return report


if __name__ == "__main__":
    main()
