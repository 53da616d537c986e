"""Training throughput and achieved FLOP/s of MGP and BFT steps.

For each case (a model, an input size and a batch size) the benchmark times full training steps
on synthetic images already on the device, so that it measures the model step and not the input
pipeline:

* MGP step: MAE forward (random masking, encoder, decoder, masked-patch loss) + backward + AdamW
  step;
* BFT step: classifier forward + the training loss (default ``bal_bce`` on smoothed hard labels) +
  backward + AdamW step.

The FLOPs of one forward+backward are counted with ``torch.utils.flop_counter.FlopCounterMode``
(attention runs on the math kernel while counting, because the fused CPU attention kernel is not
known to the counter; the timed steps use the default kernels). The achieved FLOP/s is compared
with the matrix-multiply peak measured in the same run: a large fp32 GEMM on CPU, a bf16 GEMM on
CUDA (where the steps run under bf16 autocast).

Usage::

    python bench/speed.py                 # all cases on the default device
    python bench/speed.py --device cuda   # the same script on a GPU
    python bench/speed.py --smoke         # seconds; tiny models, a few steps

Writes ``speed-<device>.md`` and ``speed-<device>.json`` into ``--out-dir`` (default
``bench/results``; ``runs/bench-speed-smoke`` with ``--smoke``). Timings depend on the machine
and its load; nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from livt_core.data.longtail import longtail_counts
from livt_core.distributed import resolve_device
from livt_core.errors import ConfigError
from livt_core.losses import build_loss
from livt_core.models import create_model

logger = logging.getLogger("bench.speed")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SMOKE_DIR = Path(__file__).resolve().parent.parent / "runs" / "bench-speed-smoke"


@dataclass(frozen=True)
class Case:
    """One benchmark row: ``stage`` is ``"mgp"`` or ``"bft"``."""

    stage: str
    model: str
    img_size: int
    in_chans: int
    num_classes: int
    batch_size: int
    warmup_steps: int
    steps: int


@dataclass
class Row:
    """The measurements of one :class:`Case`."""

    stage: str
    model: str
    img_size: int
    batch_size: int
    params_m: float
    steps: int
    step_time_s: float
    step_time_min_s: float
    images_per_s: float
    gflop_per_step: float
    achieved_gflop_s: float
    fraction_of_peak: float


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_info(device: torch.device) -> dict[str, Any]:
    """What the benchmark ran on: CPU model, threads, and the GPU name on CUDA."""
    info: dict[str, Any] = {
        "type": device.type,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def device_slug(device: torch.device) -> str:
    """``cpu`` or ``cuda-<gpu name>`` in lower case, for the result file names."""
    if device.type != "cuda":
        return device.type
    name = torch.cuda.get_device_name(device).lower()
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA; full fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def gemm_peak(device: torch.device, n: int, min_seconds: float) -> dict[str, Any]:
    """Best FLOP/s of an ``n × n`` matrix multiply (fp32 on CPU, bf16 on CUDA).

    Repeats the product until ``min_seconds`` have passed and keeps the fastest repetition.
    """
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b)
    synchronize(device)
    best = float("inf")
    spent = 0.0
    reps = 0
    while spent < min_seconds or reps < 3:
        start = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        spent += elapsed
        reps += 1
    flops = 2.0 * n**3
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "n": n,
        "reps": reps,
        "gflop_s": flops / best / 1e9,
    }


def make_step(
    case: Case, device: torch.device
) -> tuple[nn.Module, Callable[[], torch.Tensor], Callable[[], None]]:
    """The model, a forward+loss closure and an optimiser-step closure for ``case``."""
    images = torch.randn(
        case.batch_size, case.in_chans, case.img_size, case.img_size, device=device
    )
    if case.stage == "mgp":
        model = create_model(
            case.model, img_size=case.img_size, in_chans=case.in_chans, norm_pix_loss=True
        ).to(device)
        betas = (0.9, 0.95)

        def forward() -> torch.Tensor:
            with autocast(device):
                loss, _, _ = model(images)
            return loss

    else:
        model = create_model(
            case.model,
            img_size=case.img_size,
            in_chans=case.in_chans,
            num_classes=case.num_classes,
            drop_path_rate=0.1,
        ).to(device)
        betas = (0.9, 0.999)
        counts = longtail_counts(1000, case.num_classes, 100.0, "exp")
        criterion = build_loss("bal_bce", counts, tau=1.0, smoothing=0.1).to(device)
        labels = torch.randint(0, case.num_classes, (case.batch_size,), device=device)

        def forward() -> torch.Tensor:
            with autocast(device):
                logits = model(images)
            return criterion(logits, labels)

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=betas, weight_decay=0.05)

    def update() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, forward, update


def count_flops(forward: Callable[[], torch.Tensor], model: nn.Module) -> int:
    """FLOPs of one forward + backward, with attention on the math kernel so it is counted."""
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        forward().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def run_case(case: Case, device: torch.device, peak_gflop_s: float) -> Row:
    """Times ``case.steps`` training steps after ``case.warmup_steps`` untimed ones."""
    torch.manual_seed(0)
    model, forward, update = make_step(case, device)
    flops = count_flops(forward, model)
    for _ in range(case.warmup_steps):
        forward().backward()
        update()
    synchronize(device)
    times = []
    for _ in range(case.steps):
        start = time.perf_counter()
        forward().backward()
        update()
        synchronize(device)
        times.append(time.perf_counter() - start)
    step_time = statistics.median(times)
    achieved = flops / step_time / 1e9
    params = sum(p.numel() for p in model.parameters())
    row = Row(
        stage=case.stage,
        model=case.model,
        img_size=case.img_size,
        batch_size=case.batch_size,
        params_m=params / 1e6,
        steps=case.steps,
        step_time_s=step_time,
        step_time_min_s=min(times),
        images_per_s=case.batch_size / step_time,
        gflop_per_step=flops / 1e9,
        achieved_gflop_s=achieved,
        fraction_of_peak=achieved / peak_gflop_s,
    )
    logger.info(
        "%s %s @%d px, batch %d: %.1f img/s, %.1f GFLOP/s (%.1f%% of peak)",
        case.stage,
        case.model,
        case.img_size,
        case.batch_size,
        row.images_per_s,
        achieved,
        100 * row.fraction_of_peak,
    )
    return row


def build_cases(args: argparse.Namespace, device: torch.device) -> list[Case]:
    """Small models at 28 px (one channel, as Fashion-MNIST) and, unless ``--smoke``, ViT-B/16."""
    on_gpu = device.type == "cuda"
    small_batch = args.small_batch or (256 if on_gpu else 128)
    base_batch = args.base_batch or (64 if on_gpu else 8)
    if args.smoke:
        return [
            Case("mgp", "mae_vit_nano_patch4", 28, 1, 10, 8, 1, 2),
            Case("bft", "vit_nano_patch4", 28, 1, 10, 8, 1, 2),
        ]
    small_steps = args.steps or (50 if on_gpu else 20)
    base_steps = args.steps or (20 if on_gpu else 3)
    cases = []
    for size in ("nano", "micro"):
        for stage, prefix in (("mgp", "mae_vit"), ("bft", "vit")):
            cases.append(
                Case(stage, f"{prefix}_{size}_patch4", 28, 1, 10, small_batch, 3, small_steps)
            )
    for stage, name in (("mgp", "mae_vit_base_patch16"), ("bft", "vit_base_patch16")):
        cases.append(Case(stage, name, 224, 3, 1000, base_batch, 1, base_steps))
    return cases


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown header and table."""
    dev = report["device"]
    where = dev.get("gpu") or dev["cpu"]
    peak = report["gemm_peak"]
    lines = [
        f"# Training-step throughput on {where}",
        "",
        f"- command: `{report['command']}`",
        f"- device: {dev['type']} ({where}); CPU {dev['cpu']}, {dev['cpu_count']} logical CPUs, "
        f"torch threads {dev['torch_threads']}; torch {dev['torch']}",
        f"- load average (1/5/15 min) before: {_load(report['load_before'])}, "
        f"after: {_load(report['load_after'])}",
        f"- matmul peak: {peak['gflop_s']:.1f} GFLOP/s ({peak['dtype']} {peak['n']}×{peak['n']} "
        "GEMM, best repetition)",
        f"- precision: {report['precision']}; synthetic input already on the device "
        "(input pipeline not included); median step time over the timed steps",
        f"- wall time: {report['wall_s']:.0f} s",
        "",
        "| stage | model | px | batch | params (M) | steps | step (s) | images/s | GFLOP/step "
        "| GFLOP/s | % of peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['stage'].upper()} | {r['model']} | {r['img_size']} | {r['batch_size']} "
            f"| {r['params_m']:.2f} | {r['steps']} | {r['step_time_s']:.3f} "
            f"| {r['images_per_s']:.1f} | {r['gflop_per_step']:.2f} "
            f"| {r['achieved_gflop_s']:.1f} | {100 * r['fraction_of_peak']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _load(load: list[float] | None) -> str:
    return "n/a" if load is None else " / ".join(f"{x:.2f}" for x in load)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help=f"result files (default {RESULTS_DIR}; with --smoke {SMOKE_DIR})",
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case")
    parser.add_argument("--small-batch", type=int, default=None, help="batch of the 28 px cases")
    parser.add_argument("--base-batch", type=int, default=None, help="batch of the ViT-B cases")
    parser.add_argument("--gemm-n", type=int, default=None, help="size of the peak GEMM")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--smoke", action="store_true", help="seconds: tiny models, 2 steps")
    args = parser.parse_args(argv)
    # a smoke run must never overwrite the committed results
    args.out_dir = args.out_dir or (SMOKE_DIR if args.smoke else RESULTS_DIR)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ConfigError as exc:
        raise SystemExit(f"--device: {exc.message}; run with --device cpu") from None
    started = time.perf_counter()
    load_before = _loadavg()
    logger.info("device %s", device_info(device))
    gemm_n = args.gemm_n or (256 if args.smoke else 8192 if device.type == "cuda" else 2048)
    peak = gemm_peak(device, gemm_n, 0.1 if args.smoke else 2.0)
    logger.info("matmul peak %.1f GFLOP/s (%s, n=%d)", peak["gflop_s"], peak["dtype"], gemm_n)
    rows = [asdict(run_case(c, device, peak["gflop_s"])) for c in build_cases(args, device)]
    report = {
        "command": shlex.join(
            ["python", "bench/speed.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "device": device_info(device),
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "load_before": load_before,
        "load_after": _loadavg(),
        "gemm_peak": peak,
        "rows": rows,
        "wall_s": time.perf_counter() - started,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"speed-{device_slug(device)}"
    (args.out_dir / f"{stem}.json").write_text(
        json.dumps(report, indent=2) + "\n", encoding="utf-8"
    )
    markdown = to_markdown(report)
    (args.out_dir / f"{stem}.md").write_text(markdown, encoding="utf-8")
    logger.info("wrote %s/%s.{md,json}", args.out_dir, stem)
    sys.stdout.write(markdown)
    return report


if __name__ == "__main__":
    main()
