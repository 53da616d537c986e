"""``livt train {pretrain,finetune,evaluate}`` (also ``python -m livt_core train ...``).

The config is built as defaults ← ``--preset`` ← ``--config FILE`` ← ``--set key=value`` and
validated before anything runs. Exit status (see ``docs/architecture.md``): 0 success,
2 invalid configuration, 3 cancelled, 4 invalid data or checkpoint, 5 non-finite loss,
6 out of memory, 1 anything else; on failure the ``error`` and ``end`` events are written first.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from livt_core import contract
from livt_core.checks.run import check_loss
from livt_core.config import (
    CONFIG_CLASSES,
    KINDS,
    ConfigErrors,
    FinetuneConfig,
    deep_merge,
    list_presets,
    load_config_file,
    parse_overrides,
    preset_overrides,
    resolve_config,
)
from livt_core.distributed import env_rank
from livt_core.engine import RunResult, failure_reason, run
from livt_core.errors import ConfigError, LivtError
from livt_core.events import Callback, CallbackList, JsonlEventWriter, StopFile
from livt_core.fence import AttemptFence
from livt_core.paths import PathPolicy
from livt_core.tensorboard import tensorboard_writer

logger = logging.getLogger(__name__)

EXIT_OK = contract.EXIT_OK
EXIT_INTERNAL = contract.EXIT_INTERNAL
EXIT_CONFIG = contract.EXIT_CONFIG
EXIT_CANCELLED = contract.EXIT_CANCELLED
EXIT_CODES = contract.EXIT_CODES

_STAGE_HELP = {
    "pretrain": "MGP: masked generative pretraining of an MAE on the long-tailed training set",
    "finetune": "BFT: balanced fine-tuning of a ViT classifier (Bal-BCE by default)",
    "evaluate": "many / medium / few / overall accuracy of a classifier checkpoint",
}


class ProgressBar(Callback):
    """A tqdm bar per epoch on stderr, showing loss, lr and throughput."""

    def __init__(self) -> None:
        self._bar: Any = None

    def on_step(self, progress: Mapping[str, Any]) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(
                total=progress["steps"],
                desc=f"epoch {progress['epoch'] + 1}/{progress['epochs']}",
                unit="step",
                leave=False,
                dynamic_ncols=True,
            )
        self._bar.set_postfix(
            loss=f"{progress['loss']:.4f}",
            lr=f"{progress['lr']:.2e}",
            img_s=f"{progress['images_per_sec']:.0f}",
            refresh=False,
        )
        self._bar.update(1)

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        self._close()

    def on_end(self, status: str) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``train`` with one sub-command per stage to a parent parser's sub-commands."""
    train = subparsers.add_parser(
        "train",
        help="run a pretrain / finetune / evaluate stage in this process (or under torchrun)",
        description="Run one LiVT stage. The config is defaults ← --preset ← --config ← --set.",
    )
    stages = train.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for kind in KINDS:
        parser = stages.add_parser(kind, help=_STAGE_HELP[kind], description=_STAGE_HELP[kind])
        _add_run_options(parser)
        parser.set_defaults(func=train_command, kind=kind)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", metavar="NAME", help=f"data set preset: {', '.join(list_presets())}"
    )
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of settings")
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="an image folder (DIR/train/<class>/<image>, DIR/val/..., optional DIR/test/...): "
        "sets data.dataset=imagefolder and data.root=DIR. Without --preset an image folder is "
        "profiled and the auto recipe chooses the settings (see --print-config)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting (dotted keys, YAML values), e.g. --set data.img_size=32",
    )
    parser.add_argument(
        "--output-dir", metavar="DIR", help="run directory (default runs/<kind>-<UTC time>)"
    )
    parser.add_argument(
        "--resume",
        default="auto",
        metavar="auto|none|PATH",
        help="auto: continue from DIR/checkpoint-last.pth if present (default); none: start "
        "afresh; PATH: continue from that checkpoint",
    )
    parser.add_argument("--events", metavar="FILE", help="append the event stream (JSON lines)")
    parser.add_argument("--stop-file", metavar="FILE", help="stop the run once FILE exists")
    parser.add_argument(
        "--attempt",
        type=int,
        metavar="N",
        help="the run is attempt N of a job: it stops and writes nothing more into the output "
        "directory once DIR/ATTEMPT names a later attempt (the job service sets this)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write TensorBoard event files into the output directory (default: on)",
    )
    parser.add_argument(
        "--data-root",
        dest="data_roots",
        action="append",
        default=None,
        metavar="DIR",
        help="confine every path of the config and every dataset file to these folders "
        "(repeatable; the job service passes its data roots). Default: no confinement",
    )
    parser.add_argument(
        "--checkpoint-root",
        dest="checkpoint_roots",
        action="append",
        default=[],
        metavar="DIR",
        help="with --data-root: a further folder checkpoints (init, checkpoint) may come from",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.add_argument(
        "--help-config", action="store_true", help="list every setting with its default and exit"
    )


def _config_errors(exc: ConfigErrors | ConfigError) -> list[ConfigError]:
    return list(exc.errors) if isinstance(exc, ConfigErrors) else [exc]


def format_config_errors(exc: ConfigErrors | ConfigError) -> str:
    """One block per bad field: ``field: message`` and, indented, its fix."""
    lines = ["invalid configuration:"]
    for err in _config_errors(exc):
        lines.append(f"  {err.field}: {err.message}")
        if err.fix:
            lines.append(f"      fix: {err.fix}")
    return "\n".join(lines)


def _settings_help(model: type[BaseModel], prefix: str = "") -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += _settings_help(annotation, f"{prefix}{name}.")
            continue
        if name == "kind":
            continue
        default = field.get_default(call_default_factory=True)
        text = f"  {prefix}{name} = {json.dumps(default, default=str)}"
        if field.description:
            text += f"    # {field.description}"
        lines.append(text)
    return lines


def build_config(args: argparse.Namespace) -> Any:
    """The validated config from ``--preset``, ``--config`` and ``--set``.

    A ``preset`` key in the config file is used when ``--preset`` is not given.
    """
    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    file_preset = values.pop("preset", None)
    preset = args.preset or file_preset
    values = deep_merge(values, parse_overrides(args.overrides))
    if args.data:
        values = deep_merge(values, {"data": {"dataset": "imagefolder", "root": args.data}})
    return resolve_config(
        args.kind, preset, values, profile=folder_profile(args.kind, values, preset)
    )


def folder_profile(
    kind: str, values: Mapping[str, Any], preset: str | None
) -> dict[str, Any] | None:
    """The profile of the image folder a config names (``data.dataset=imagefolder`` with a
    ``data.root``), read from its files; None for other data sets. With a preset the profile
    is still read: its checks and the channel statistics of the data apply."""
    data = values.get("data")
    if not isinstance(data, Mapping) or not isinstance(data.get("root"), str):
        return None
    dataset = data.get("dataset")
    if dataset is None and preset is not None:
        dataset = preset_overrides(kind, preset).get("data", {}).get("dataset")
    if dataset != "imagefolder":
        return None
    from livt_core.data.profile import profile_imagefolder

    root = Path(data["root"]).expanduser()
    if not (root / "train").is_dir():
        return None  # the run reports the missing folder with the expected layout
    logger.info("profiling %s", root)
    return profile_imagefolder(root).to_dict()


def _path_policy(args: argparse.Namespace) -> PathPolicy | None:
    if not args.data_roots:
        return None
    return PathPolicy(
        tuple(Path(p) for p in args.data_roots), tuple(Path(p) for p in args.checkpoint_roots)
    )


def _resume_arg(value: str) -> str | None:
    return None if value.lower() == "none" else value


def _default_output_dir(kind: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"runs/{kind}-{stamp}"


def _print_summary(result: RunResult) -> None:
    res = result.result
    out = result.output_dir
    if result.kind == "pretrain":
        print(f"pretraining done: final loss {res['final_loss']:.4f}")
        print(f"checkpoint: {res['checkpoint']}")
        print(f"results: {out}/results.json")
        return

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    header = ["split", "many", "medium", "few", "overall", "top5", "ECE"]
    row = [res["split"]] + [cell(res[k]) for k in ("many", "medium", "few", "overall", "top5")]
    row.append(cell(res["ece"]))
    widths = [max(len(h), len(c)) for h, c in zip(header, row, strict=True)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    sizes = res.get("group_sizes", {})
    print(
        f"classes per group: many {sizes.get('many')}, medium {sizes.get('medium')}, "
        f"few {sizes.get('few')} (training counts: {res['class_counts_source']})"
    )
    if res.get("selection_split") == res["split"]:
        print(f"note: {res['split']} was also used to choose the best epoch")
    print(f"results: {out}/results.json")


def train_command(args: argparse.Namespace) -> int:
    """Handler of ``train <stage>``: returns the process exit status."""
    main_rank = env_rank() == 0
    events = JsonlEventWriter(args.events) if args.events and main_rank else None
    try:
        if args.help_config:
            print(f"settings of `train {args.kind}` (defaults before any preset):")
            print("\n".join(_settings_help(CONFIG_CLASSES[args.kind])))
            return EXIT_OK
        config = build_config(args)
        if isinstance(config, FinetuneConfig) and config.loss_kwargs:
            # the option values are checked by building the loss (torch-free configs cannot)
            check_loss(
                config.loss, tau=config.tau, smoothing=config.smoothing, options=config.loss_kwargs
            )
        if args.print_config:
            print(json.dumps(config.model_dump(mode="json"), indent=2))
            return EXIT_OK
        output_dir = args.output_dir
        if output_dir is None:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise ConfigError(
                    "--output-dir",
                    "is required when several processes run",
                    "pass the same --output-dir to every process",
                )
            output_dir = _default_output_dir(args.kind)
    except (ConfigErrors, ConfigError) as exc:
        print(format_config_errors(exc), file=sys.stderr)
        if events is not None:
            events.on_error("invalid_config", str(exc))
            events.on_end("failed")
        return EXIT_CONFIG

    callbacks: list[Callback] = []
    if events is not None:
        callbacks.append(events)
    if args.stop_file:
        callbacks.append(StopFile(args.stop_file))
    fence = AttemptFence(output_dir, args.attempt) if args.attempt is not None else None
    if fence is not None:
        callbacks.append(fence)
    if main_rank and args.tensorboard:
        board = tensorboard_writer(output_dir, config.model_dump(mode="json"), args.attempt)
        if board is not None:
            callbacks.append(board)
    progress = main_rank and not args.no_progress
    if progress:
        callbacks.append(ProgressBar())
    redirect: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if progress:
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm()
    try:
        with redirect:
            result = run(
                config,
                output_dir,
                callbacks=CallbackList(callbacks),
                resume=_resume_arg(args.resume),
                paths=_path_policy(args),
                fence=fence,
            )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except (ConfigErrors, ConfigError) as exc:
        print(format_config_errors(exc), file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        reason = failure_reason(exc)
        if reason == "internal":
            logger.exception("the run failed")
        print(f"error ({reason}): {exc}", file=sys.stderr)
        return EXIT_CODES.get(reason, EXIT_INTERNAL)
    if result.status == "cancelled":
        if main_rank:
            print(f"cancelled; the last checkpoint in {output_dir} is intact", file=sys.stderr)
        return EXIT_CANCELLED
    if main_rank:
        _print_summary(result)
    return EXIT_OK


def export_command(args: argparse.Namespace) -> int:
    """Handler of ``export CHECKPOINT -o DIR``."""
    from livt_core.export import export_checkpoint

    try:
        folder = export_checkpoint(args.checkpoint, args.output)
    except LivtError as exc:
        print(f"error ({exc.reason}): {exc}", file=sys.stderr)
        return EXIT_CODES.get(exc.reason, EXIT_INTERNAL)
    print(f"exported {args.checkpoint} to {folder}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m livt_core train ...`` / ``export ...``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m livt_core", description="LiVT training stages (the library's CLI)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_commands(sub)
    export = sub.add_parser(
        "export",
        help="export a checkpoint's weights for timm (model.safetensors + config.json)",
        description="Write DIR/model.safetensors (weights only, the model config in its "
        "metadata) and DIR/config.json (timm's layout) of a checkpoint this project wrote; an "
        "MAE checkpoint exports its encoder. timm loads the folder with "
        "timm.create_model('local-dir:DIR', pretrained=True).",
    )
    export.add_argument("checkpoint", metavar="CHECKPOINT")
    export.add_argument("-o", "--output", required=True, metavar="DIR")
    export.set_defaults(func=export_command)
    args = parser.parse_args(argv)
    rank = env_rank()
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(
        level=level if rank == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s",
    )
    return int(args.func(args))
