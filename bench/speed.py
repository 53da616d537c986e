"""Training throughput of the engine's real train step beside a plain timm loop, in one run.

For each case (a stage, a model, an input size and a batch size) the benchmark builds

* the **engine** step: the project's model, parameter groups and AdamW (fused where torch has
  the kernel), ``GradientStep``, the lr schedule, the run's precision and ``compile`` setting,
  driven by the engine's own ``train_one_epoch`` (one ``.item()`` and the progress callback per
  step, as in a job);
* the **timm** baseline: timm's ``VisionTransformer`` (BFT) or an MAE assembled from timm's
  ``PatchEmbed`` and ``Block`` as in the released MAE code (MGP), of the same geometry, plain
  ``torch.optim.AdamW(model.parameters())`` and a textbook ``loss.backward(); step();
  zero_grad()`` loop, with the same batch, threads and precision;

and times them **interleaved**: rounds of a few steps of each, alternating which goes first, so
that load from other processes hits both alike. Reported: the median step time (wall) and the
CPU time per step of each, images/s, the engine / timm ratio, FLOPs per step (counted with
``FlopCounterMode``, attention on the math kernel so it is counted) and the achieved share of the
fp32 GEMM peak measured in the same run at the same thread count (bf16 on CUDA). Synthetic
images already on the device: the input pipeline is measured separately, as loader images/s per
worker (one process, one thread: what one DataLoader worker does) of the preset's transforms,
the current ones beside the previous torchvision pipeline, also interleaved.

Defaults match the presets: the 28 px cases use ``fashion-mnist-lt``'s batch sizes (64 MGP,
32 BFT) and threads (1); the ViT-B/16 224 px cases use the engine's default threads (the job's
cores) and, on CPU, batch 8 (the ImageNet-LT presets' 128–256 take minutes per step here; on
CUDA batch 64).

Usage::

    python bench/speed.py                    # all cases on the default device
    python bench/speed.py --compile off,on   # engine eager and compiled beside timm
    python bench/speed.py --device cuda      # bf16 autocast, flash SDPA, fused AdamW
    python bench/speed.py --smoke            # seconds; tiny models, a few steps

Writes ``speed-<device>.md`` and ``speed-<device>.json`` into ``--out-dir`` (default
``bench/results``; ``runs/bench-speed-smoke`` with ``--smoke``). Timings depend on the machine
and its load (the report records the load average); nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.layers import PatchEmbed
from timm.loss import BinaryCrossEntropy
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from livt_core.config import resolve_config
from livt_core.data import build_dataset
from livt_core.data.longtail import longtail_counts
from livt_core.data.transforms import build_pretrain_transform, build_train_transform
from livt_core.distributed import DistContext, resolve_device
from livt_core.engine.loop import EpochPlan, train_one_epoch
from livt_core.errors import ConfigError
from livt_core.events import Callback
from livt_core.losses import build_loss
from livt_core.models import create_model
from livt_core.optim import (
    GradientStep,
    WarmupCosineSchedule,
    create_optimizer,
    param_groups,
    resolve_precision,
)
from livt_core.perf import default_threads, maybe_compile

logger = logging.getLogger("bench.speed")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SMOKE_DIR = Path(__file__).resolve().parent.parent / "runs" / "bench-speed-smoke"
PRESET = "fashion-mnist-lt"


@dataclass(frozen=True)
class Case:
    """One benchmark row: ``stage`` is ``"mgp"`` or ``"bft"``."""

    stage: str
    model: str
    img_size: int
    in_chans: int
    num_classes: int
    batch_size: int
    threads: int
    warmup_steps: int
    rounds: int
    steps_per_round: int


@dataclass
class Timing:
    """Per-step wall times and CPU time per step of one variant, over all rounds."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.wall)

    def cpu_per_step(self) -> float:
        return statistics.median(self.cpu)


# -- machine ---------------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_isa() -> dict[str, Any]:
    """torch's CPU kernel level and the vector / matrix ISA flags of ``/proc/cpuinfo``."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "flags": [f for f in ISA_FLAGS if f in flags],
    }


def device_info(device: torch.device) -> dict[str, Any]:
    """What the benchmark ran on: CPU model and ISA, cores, and the GPU name on CUDA."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    info: dict[str, Any] = {
        "type": device.type,
        "cpu": cpu_name(),
        "isa": cpu_isa(),
        "cpu_count": os.cpu_count(),
        "cpus_allowed": affinity,
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


def gemm_peak(device: torch.device, n: int, min_seconds: float) -> float:
    """Best GFLOP/s of an ``n × n`` matrix multiply (fp32 on CPU, bf16 on CUDA), at the current
    thread count; repeats until ``min_seconds`` have passed and keeps the fastest repetition."""
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
    return 2.0 * n**3 / best / 1e9


# -- the timm baseline -----------------------------------------------------------------------


class TimmMAE(nn.Module):
    """The released MAE (``models_mae.py``) from timm's ``PatchEmbed`` and ``Block``."""

    def __init__(self, *, img_size: int, patch_size: int, in_chans: int, embed_dim: int,
                 depth: int, num_heads: int, decoder_embed_dim: int, decoder_depth: int,
                 decoder_num_heads: int, mlp_ratio: float, mask_ratio: float) -> None:  # fmt: skip
        super().__init__()
        norm = nn.LayerNorm
        self.patch_size, self.mask_ratio = patch_size, mask_ratio
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm)
            for _ in range(depth)
        )
        self.norm = norm(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, n + 1, decoder_embed_dim), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm)
            for _ in range(decoder_depth)
        )
        self.decoder_norm = norm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        n, c, h, w = imgs.shape
        x = imgs.reshape(n, c, h // p, p, w // p, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        n, length, d = x.shape
        keep = int(length * (1 - self.mask_ratio))
        ids_shuffle = torch.argsort(torch.rand(n, length, device=x.device), dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep].unsqueeze(-1).repeat(1, 1, d))
        mask = torch.ones(n, length, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(n, -1, -1)
        x = torch.cat((cls, x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        tokens = self.mask_token.repeat(n, length + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:, :]
        target = self.patchify(imgs)
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()


def geometry(model: nn.Module) -> dict[str, Any]:
    """The transformer dimensions of a project model, read from its modules."""
    embed_dim = model.patch_embed.proj.out_channels
    blk = model.blocks[0]
    geo = {
        "patch_size": model.patch_embed.proj.kernel_size[0],
        "embed_dim": embed_dim,
        "depth": len(model.blocks),
        "num_heads": blk.attn.num_heads,
        "mlp_ratio": blk.mlp.fc1.out_features / embed_dim,
    }
    if hasattr(model, "decoder_blocks"):
        geo.update(
            decoder_embed_dim=model.decoder_embed.out_features,
            decoder_depth=len(model.decoder_blocks),
            decoder_num_heads=model.decoder_blocks[0].attn.num_heads,
        )
    return geo


# -- the two steps ---------------------------------------------------------------------------


def _amp(device: torch.device) -> Any:
    precision = resolve_precision("auto", device)
    return precision, precision.autocast


class _Clock(Callback):
    """Records the time of every step's progress event (the engine's own per-step hook)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_step(self, progress: Any) -> None:
        synchronize(self.device)
        self.marks.append(time.perf_counter())

    device = torch.device("cpu")


def engine_runner(case: Case, device: torch.device, compile_mode: str):
    """The engine's step: returns ``(model, run(n) -> per-step seconds, flop_forward)``."""
    images = torch.randn(
        case.batch_size, case.in_chans, case.img_size, case.img_size, device=device
    )
    labels = torch.randint(0, case.num_classes, (case.batch_size,), device=device)
    precision, _ = _amp(device)
    if case.stage == "mgp":
        model = create_model(
            case.model, img_size=case.img_size, in_chans=case.in_chans, norm_pix_loss=True
        ).to(device)
        groups = param_groups(model, weight_decay=0.05)
        betas = (0.9, 0.95)
    else:
        model = create_model(
            case.model,
            img_size=case.img_size,
            in_chans=case.in_chans,
            num_classes=case.num_classes,
            drop_path_rate=0.1,
        ).to(device)
        groups = param_groups(model, weight_decay=0.05, layer_decay=0.75)
        betas = (0.9, 0.999)
        counts = longtail_counts(1000, case.num_classes, 100.0, "exp")
        criterion = build_loss("bal_bce", counts, tau=1.0, smoothing=0.1).to(device)
    optimizer = create_optimizer(groups, lr=1e-4, betas=betas, device=device)
    grad = GradientStep(optimizer, precision)
    schedule = WarmupCosineSchedule(optimizer, lr=1e-4, min_lr=1e-6, warmup_epochs=1, epochs=10)
    forward, reason = maybe_compile(model, compile_mode, device)

    def compute_loss(batch: Any) -> torch.Tensor:
        if case.stage == "mgp":
            return forward(batch[0])[0]
        return criterion(forward(batch[0]), batch[1])

    ctx = DistContext(device=device)
    done = 0

    def run(n: int) -> list[float]:
        nonlocal done
        clock = _Clock()
        clock.device = device
        synchronize(device)
        start = time.perf_counter()
        train_one_epoch(
            model,
            ((images, labels) for _ in range(n)),
            compute_loss,
            plan=EpochPlan(0, 10, n, 1, done, case.batch_size),
            grad=grad,
            schedule=schedule,
            precision=precision,
            ctx=ctx,
            callbacks=clock,
        )
        done += n
        marks = [start, *clock.marks]
        return [b - a for a, b in zip(marks, marks[1:], strict=False)]

    def flop_forward() -> torch.Tensor:
        with precision.autocast():
            return compute_loss((images, labels))

    return model, run, flop_forward, reason


def timm_runner(case: Case, device: torch.device, geo: dict[str, Any]):
    """The plain timm loop of the same geometry: returns ``(model, run(n))``."""
    images = torch.randn(
        case.batch_size, case.in_chans, case.img_size, case.img_size, device=device
    )
    labels = torch.randint(0, case.num_classes, (case.batch_size,), device=device)
    _, autocast = _amp(device)
    if case.stage == "mgp":
        model = TimmMAE(img_size=case.img_size, in_chans=case.in_chans, mask_ratio=0.75, **geo)
        betas = (0.9, 0.95)
        criterion = None
    else:
        model = VisionTransformer(
            img_size=case.img_size,
            patch_size=geo["patch_size"],
            in_chans=case.in_chans,
            num_classes=case.num_classes,
            embed_dim=geo["embed_dim"],
            depth=geo["depth"],
            num_heads=geo["num_heads"],
            mlp_ratio=geo["mlp_ratio"],
            qkv_bias=True,
            global_pool="avg",
            drop_path_rate=0.1,
        )
        betas = (0.9, 0.999)
        criterion = BinaryCrossEntropy(smoothing=0.1)
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=betas, weight_decay=0.05)

    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            with autocast():
                out = model(images)
                loss = out if criterion is None else criterion(out, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            float(loss.item())
            synchronize(device)
            times.append(time.perf_counter() - start)
        return times

    return model, run


def count_flops(forward: Callable[[], torch.Tensor], model: nn.Module) -> int:
    """FLOPs of one forward + backward, with attention on the math kernel so it is counted."""
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        forward().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def run_case(
    case: Case, device: torch.device, compile_modes: list[str], peaks: dict[int, float]
) -> dict[str, Any]:
    """Builds the engine variants and the timm loop and times them interleaved."""
    torch.set_num_threads(case.threads)
    torch.manual_seed(0)
    variants: dict[str, Callable[[int], list[float]]] = {}
    reasons: dict[str, str] = {}
    flops = 0
    geo: dict[str, Any] = {}
    for mode in compile_modes:
        model, run, flop_forward, reason = engine_runner(case, device, mode)
        if not flops:
            flops = count_flops(flop_forward, model)
            geo = geometry(model)
            params = sum(p.numel() for p in model.parameters())
        variants[f"engine[compile={mode}]"] = run
        reasons[f"engine[compile={mode}]"] = reason
    timm_model, timm_run = timm_runner(case, device, geo)
    variants["timm"] = timm_run
    compile_s = {}
    for name, run in variants.items():  # warm-up; a compile happens here
        start = time.perf_counter()
        run(case.warmup_steps)
        compile_s[name] = time.perf_counter() - start
    timings = {name: Timing() for name in variants}
    names = list(variants)
    for r in range(case.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            cpu0 = time.process_time()
            steps = variants[name](case.steps_per_round)
            cpu = time.process_time() - cpu0
            timings[name].wall.extend(steps)
            timings[name].cpu.append(cpu / len(steps))
    peak = peaks[case.threads]
    base = timings["timm"].median()
    base_cpu = timings["timm"].cpu_per_step()
    out_variants = {}
    for name, t in timings.items():
        step = t.median()
        out_variants[name] = {
            "step_time_s": step,
            "step_time_min_s": min(t.wall),
            "cpu_time_per_step_s": t.cpu_per_step(),
            "images_per_s": case.batch_size / step,
            "achieved_gflop_s": flops / step / 1e9,
            "fraction_of_peak": flops / step / 1e9 / peak,
            "speedup_vs_timm": base / step,
            "cpu_speedup_vs_timm": base_cpu / t.cpu_per_step(),
            "warmup_s": compile_s[name],
            "steps": len(t.wall),
            "compile_decision": reasons.get(name, "eager (timm loop)"),
        }
    best = max(
        (n for n in out_variants if n != "timm"), key=lambda n: out_variants[n]["images_per_s"]
    )
    row = {
        **asdict(case),
        "params_m": params / 1e6,
        "gflop_per_step": flops / 1e9,
        "peak_gflop_s": peak,
        "variants": out_variants,
        "engine": best,
        "images_per_s": out_variants[best]["images_per_s"],
        "achieved_gflop_s": out_variants[best]["achieved_gflop_s"],
        "fraction_of_peak": out_variants[best]["fraction_of_peak"],
        "timm_images_per_s": out_variants["timm"]["images_per_s"],
        "speedup_vs_timm": out_variants[best]["speedup_vs_timm"],
    }
    logger.info(
        "%s %s @%d px, batch %d, %d threads: %s",
        case.stage,
        case.model,
        case.img_size,
        case.batch_size,
        case.threads,
        "; ".join(
            f"{n} {v['images_per_s']:.1f} img/s ({100 * v['fraction_of_peak']:.1f}% peak)"
            for n, v in out_variants.items()
        ),
    )
    del timm_model
    return row


# -- the loader ------------------------------------------------------------------------------


def _previous_pipeline(stage: str, img_size: int, mean: tuple, std: tuple, scale: tuple):
    """The torchvision transforms the project used before (same augmentation)."""
    crop = T.RandomResizedCrop(img_size, scale=scale, interpolation=InterpolationMode.BICUBIC)
    return T.Compose([crop, T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])


def loader_throughput(rounds: int, images: int) -> list[dict[str, Any]]:
    """Images/s of one loader worker (one process, one torch thread): the preset's train
    transform on PIL images of the bundled Fashion-MNIST-LT subset, current vs previous
    pipeline, interleaved (the same seeds for both in each round)."""
    torch.set_num_threads(1)
    rows = []
    for stage, kind in (("mgp", "pretrain"), ("bft", "finetune")):
        cfg = resolve_config(kind, PRESET)
        data = cfg.data
        mean, std = (0.2860,), (0.3530,)
        if stage == "mgp":
            current = build_pretrain_transform(data.img_size, mean, std, in_chans=1)
            scale = (0.2, 1.0)
        else:
            scale = tuple(cfg.crop_scale)
            current = build_train_transform(
                data.img_size, mean, std, in_chans=1, auto_augment=cfg.auto_augment,
                reprob=cfg.reprob, crop_scale=scale,
            )  # fmt: skip
        previous = _previous_pipeline(stage, data.img_size, mean, std, scale)
        dataset = build_dataset(PRESET, "train", root=None)
        n = min(images, len(dataset))
        pil = [dataset[i][0] for i in range(n)]
        rates: dict[str, list[float]] = {"current": [], "previous": []}
        for r in range(rounds):
            order = ("current", "previous") if r % 2 == 0 else ("previous", "current")
            for name in order:
                transform = current if name == "current" else previous
                random.seed(r)
                torch.manual_seed(r)
                start = time.perf_counter()
                for im in pil:
                    transform(im)
                rates[name].append(n / (time.perf_counter() - start))
        cur, prev = statistics.median(rates["current"]), statistics.median(rates["previous"])
        rows.append(
            {
                "stage": stage,
                "transform": repr(current).replace("\n", " "),
                "images": n,
                "rounds": rounds,
                "current_images_per_s": cur,
                "previous_images_per_s": prev,
                "us_per_image_current": 1e6 / cur,
                "us_per_image_previous": 1e6 / prev,
                "speedup": cur / prev,
            }
        )
        logger.info("loader %s: %.0f img/s per worker (previous %.0f)", stage, cur, prev)
    return rows


# -- cases and report ------------------------------------------------------------------------


def build_cases(args: argparse.Namespace, device: torch.device) -> list[Case]:
    """28 px cases at the fashion-mnist-lt preset's batch and threads; ViT-B/16 at 224 px."""
    on_gpu = device.type == "cuda"
    pre, fine = resolve_config("pretrain", PRESET), resolve_config("finetune", PRESET)
    small_threads = args.threads or pre.threads or default_threads()
    base_threads = args.threads or default_threads()
    if args.smoke:
        return [
            Case("mgp", "mae_vit_nano_patch4", 28, 1, 10, 8, small_threads, 1, 2, 1),
            Case("bft", "vit_nano_patch4", 28, 1, 10, 8, small_threads, 1, 2, 1),
        ]
    rounds = args.rounds or 6
    per_round = args.steps or (20 if on_gpu else 8)
    base_batch = args.base_batch or (64 if on_gpu else 8)
    cases = []
    for size in ("nano", "micro"):
        if size not in args.cases:
            continue
        for stage, prefix, cfg in (("mgp", "mae_vit", pre), ("bft", "vit", fine)):
            batch = args.small_batch or cfg.batch_size
            model = f"{prefix}_{size}_patch4"
            cases.append(Case(stage, model, 28, 1, 10, batch, small_threads, 3, rounds, per_round))
    if "base" in args.cases:
        base_rounds, base_steps = (rounds, per_round) if on_gpu else (args.rounds or 4, 1)
        for stage, name in (("mgp", "mae_vit_base_patch16"), ("bft", "vit_base_patch16")):
            cases.append(
                Case(
                    stage, name, 224, 3, 1000, base_batch, base_threads, 1, base_rounds, base_steps
                )
            )
    return cases


def derive(report: dict[str, Any]) -> dict[str, Any]:
    """Adds the share of peak by CPU time: FLOPs over (CPU seconds per step / threads), which
    leaves out the time a loaded machine kept the step off the cores."""
    for row in report["rows"]:
        peak = row["peak_gflop_s"]
        for v in row["variants"].values():
            busy = v["cpu_time_per_step_s"] / row["threads"]
            v["fraction_of_peak_cpu"] = row["gflop_per_step"] / busy / peak
    return report


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown header and tables."""
    dev = report["device"]
    where = dev.get("gpu") or dev["cpu"]
    isa = dev["isa"]
    peaks = ", ".join(
        f"{v:.1f} GFLOP/s at {k} thread{'s' if int(k) > 1 else ''}"
        for k, v in report["gemm_peak"]["gflop_s"].items()
    )
    lines = [
        f"# Training-step throughput on {where}",
        "",
        f"- command: `{report['command']}`",
        f"- device: {dev['type']} ({where}); CPU {dev['cpu']}, ISA: torch kernels "
        f"{isa['torch_capability']}, flags {' '.join(isa['flags']) or 'n/a'}; "
        f"{dev['cpu_count']} logical CPUs ({dev['cpus_allowed']} allowed); torch {dev['torch']}",
        f"- load average (1/5/15 min) before: {_load(report['load_before'])}, "
        f"after: {_load(report['load_after'])}",
        f"- matmul peak: {peaks} ({report['gemm_peak']['dtype']} "
        f"{report['gemm_peak']['n']}² GEMM, best repetition, start and end of the run)",
        f"- precision: {report['precision']}; synthetic input already on the device; "
        "engine and timm interleaved in rounds, medians over all timed steps",
        f"- wall time: {report['wall_s']:.0f} s",
        "",
        "| stage | model | px | batch | threads | params (M) | GFLOP/step | variant | steps "
        "| step (s) | CPU s/step | images/s | GFLOP/s | % of peak | % of peak (CPU time) "
        "| × timm (wall) | × timm (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        for name, v in r["variants"].items():
            lines.append(
                f"| {r['stage'].upper()} | {r['model']} | {r['img_size']} | {r['batch_size']} "
                f"| {r['threads']} | {r['params_m']:.2f} | {r['gflop_per_step']:.2f} | {name} "
                f"| {v['steps']} | {v['step_time_s']:.4f} | {v['cpu_time_per_step_s']:.4f} "
                f"| {v['images_per_s']:.1f} | {v['achieved_gflop_s']:.1f} "
                f"| {100 * v['fraction_of_peak']:.1f} | {100 * v['fraction_of_peak_cpu']:.1f} "
                f"| {v['speedup_vs_timm']:.2f} "
                f"| {v['cpu_speedup_vs_timm']:.2f} |"
            )
    if report.get("loader"):
        lines += [
            "",
            "Loader: images/s per worker (one process, one thread: the preset's train transform "
            "on PIL images of the bundled Fashion-MNIST-LT subset), current vs the previous "
            "torchvision pipeline (`RandomResizedCrop` + `ToTensor` + `Normalize`), interleaved:",
            "",
            "| stage | images × rounds | current img/s | µs/image | previous img/s | µs/image "
            "| speed-up |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["loader"]:
            lines.append(
                f"| {r['stage'].upper()} | {r['images']} × {r['rounds']} "
                f"| {r['current_images_per_s']:.0f} | {r['us_per_image_current']:.1f} "
                f"| {r['previous_images_per_s']:.0f} | {r['us_per_image_previous']:.1f} "
                f"| {r['speedup']:.2f} |"
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
    parser.add_argument("--compile", default="auto", help="engine variants: auto, on, off, ...")
    parser.add_argument("--cases", default="nano,micro,base", help="nano, micro, base")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per case")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round")
    parser.add_argument("--small-batch", type=int, default=None, help="batch of the 28 px cases")
    parser.add_argument("--base-batch", type=int, default=None, help="batch of the ViT-B cases")
    parser.add_argument("--gemm-n", type=int, default=None, help="size of the peak GEMM")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (all cases)")
    parser.add_argument("--no-loader", action="store_true", help="skip the loader measurement")
    parser.add_argument("--smoke", action="store_true", help="seconds: tiny models, 2 steps")
    parser.add_argument(
        "--render", type=Path, default=None, help="rewrite the Markdown of a result JSON; no run"
    )
    args = parser.parse_args(argv)
    args.compile = [m.strip() for m in args.compile.split(",") if m.strip()]
    for mode in args.compile:
        if mode not in ("auto", "on", "off"):
            parser.error(f"--compile: unknown mode {mode!r}; use auto, on, off (comma-separated)")
    args.cases = {c.strip() for c in args.cases.split(",")}
    # a smoke run must never overwrite the committed results
    args.out_dir = args.out_dir or (SMOKE_DIR if args.smoke else RESULTS_DIR)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.render is not None:
        report = derive(json.loads(args.render.read_text(encoding="utf-8")))
        write_report(report, args.render.parent, args.render.stem)
        return report
    try:
        device = resolve_device(args.device)
    except ConfigError as exc:
        raise SystemExit(f"--device: {exc.message}; run with --device cpu") from None
    started = time.perf_counter()
    load_before = _loadavg()
    logger.info("device %s", device_info(device))
    cases = build_cases(args, device)
    gemm_n = args.gemm_n or (256 if args.smoke else 8192 if device.type == "cuda" else 2048)
    seconds = 0.1 if args.smoke else 2.0
    peaks: dict[int, float] = {}
    for threads in sorted({c.threads for c in cases}):
        torch.set_num_threads(threads)
        peaks[threads] = gemm_peak(device, gemm_n, seconds)
    rows = [run_case(c, device, args.compile, peaks) for c in cases]
    for threads in peaks:  # the peak again at the end: the better of the two counts
        torch.set_num_threads(threads)
        peaks[threads] = max(peaks[threads], gemm_peak(device, gemm_n, seconds))
    for row in rows:  # re-express each row against the final peak of its thread count
        peak = peaks[row["threads"]]
        row["peak_gflop_s"] = peak
        for v in row["variants"].values():
            v["fraction_of_peak"] = v["achieved_gflop_s"] / peak
        row["fraction_of_peak"] = row["variants"][row["engine"]]["fraction_of_peak"]
    loader = (
        []
        if args.no_loader
        else loader_throughput(2 if args.smoke else 7, 64 if args.smoke else 1000)
    )
    report = {
        "command": shlex.join(
            ["python", "bench/speed.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "device": device_info(device),
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "load_before": load_before,
        "load_after": _loadavg(),
        "gemm_peak": {
            "dtype": "bfloat16" if device.type == "cuda" else "float32",
            "n": gemm_n,
            "gflop_s": {str(k): v for k, v in peaks.items()},
        },
        "rows": rows,
        "loader": loader,
        "wall_s": time.perf_counter() - started,
    }
    write_report(derive(report), args.out_dir, f"speed-{device_slug(device)}")
    return report


def write_report(report: dict[str, Any], out_dir: Path, stem: str) -> None:
    """``<stem>.json`` and ``<stem>.md`` into ``out_dir``; the Markdown also to stdout."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = to_markdown(report)
    (out_dir / f"{stem}.md").write_text(markdown, encoding="utf-8")
    logger.info("wrote %s/%s.{md,json}", out_dir, stem)
    sys.stdout.write(markdown)


if __name__ == "__main__":
    main()
