"""Client commands of ``livt``: submit, jobs, show, logs, cancel, retry, wait, results,
download, datasets (list / register / show), pipeline (submit / show) and webhooks (create /
list / deliveries / delete) and export.

Every one of them takes ``--output table|json`` (``--json`` is short for ``--output json``) and
``-q``/``--quiet``, which prints only the ids of what the command lists or changes (job ids,
dataset names, downloaded paths), one a line, for scripts: ``livt jobs -q --status failed``.

They talk to a running service through :class:`livt.client.LivtClient`, configured by
``--url``/``--token`` or the ``LIVT_URL``/``LIVT_TOKEN`` environment variables. The HTTP client is
imported only when one of these commands runs, so that other ``livt`` commands start fast.

Exit status: 0 success; 1 an error (server unreachable, bad token, unknown job, a failed job);
2 a spec the server rejected (422); 3 a cancelled job; 4 / 5 / 6 a job that failed on invalid
data / a non-finite loss / out of memory (the codes of ``livt train``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from livt_core import contract

if TYPE_CHECKING:
    from livt.client import Job, LivtApiError, LivtClient, LogLine, Result

DEFAULT_URL = "http://127.0.0.1:8000"
KINDS = contract.KINDS
STATUSES = contract.JOB_STATUSES
#: ``livt jobs --sort``: a result field, best first (``+few``: worst first), or ``created_at``.
SORTS = [
    f"{sign}{name}"
    for name in ("few", "overall", "many", "medium", "created_at")
    for sign in ("", "+")
]
EXIT_INVALID_SPEC = contract.EXIT_CONFIG
EXIT_CANCELLED = contract.EXIT_CANCELLED
OUTPUTS = ("table", "json")


class CommandError(Exception):
    """A user-facing failure of a command: the message is printed, ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Registers the client commands on the ``livt`` dispatcher."""
    common = argparse.ArgumentParser(add_help=False)
    conn = common.add_argument_group("service")
    conn.add_argument(
        "--url",
        default=None,
        help=f"service URL (default: $LIVT_URL or {DEFAULT_URL})",
    )
    conn.add_argument("--token", default=None, help="API token (default: $LIVT_TOKEN)")
    _add_output_options(common)

    p = subparsers.add_parser(
        "submit",
        parents=[common],
        help="submit a job (or a pipeline) from a YAML/JSON spec",
        description="Submit a job spec; a spec with a `stages` list submits a pipeline.",
    )
    _add_spec_arguments(
        p,
        set_help="override a spec field, e.g. --set epochs=5 --set data.num_workers=0",
        wait_help="wait for the job and show its results",
    )
    p.set_defaults(func=_command(_submit))

    p = subparsers.add_parser("jobs", parents=[common], help="list jobs, newest first")
    p.add_argument("--status", choices=STATUSES, help="only jobs in this state")
    p.add_argument("--kind", choices=KINDS, help="only jobs of this kind")
    p.add_argument("--tag", help="only jobs carrying this tag")
    p.add_argument("--dataset", help="only jobs on this dataset")
    p.add_argument("--loss", help="only jobs with this loss, e.g. bal_bce")
    p.add_argument("--model", help="only jobs of this model")
    p.add_argument("--search", dest="q", metavar="TEXT", help="only names containing TEXT")
    p.add_argument(
        "--sort",
        choices=SORTS,
        help="order by a result (best first; created_at: newest first); prefix '+' for "
        "lowest / oldest first",
    )
    p.add_argument("--limit", type=int, default=20, help="jobs per page (default 20)")
    p.add_argument("--cursor", help="continue after a previous page")
    p.set_defaults(func=_command(_jobs))

    p = subparsers.add_parser("show", parents=[common], help="show one job")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--config", action="store_true", help="also print the resolved config")
    p.set_defaults(func=_command(_show))

    p = subparsers.add_parser("logs", parents=[common], help="print a job's log")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until it finishes")
    p.add_argument("--offset", type=int, default=0, help="first line to print (0-based)")
    p.set_defaults(func=_command(_logs))

    p = subparsers.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    p.add_argument("job_id", metavar="ID")
    p.set_defaults(func=_command(_cancel))

    p = subparsers.add_parser("retry", parents=[common], help="queue a failed/cancelled job again")
    p.add_argument("job_id", metavar="ID")
    p.set_defaults(func=_command(_retry))

    p = subparsers.add_parser(
        "wait",
        parents=[common],
        help="wait for a job, with a progress bar",
        description="Wait for a job. Exit status: 0 succeeded, 3 cancelled, non-zero failed.",
    )
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between polls")
    p.add_argument("--timeout", type=float, help="give up after this many seconds (exit 1)")
    p.set_defaults(func=_command(_wait))

    p = subparsers.add_parser(
        "results", parents=[common], help="many / medium / few / overall accuracy of a job"
    )
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--per-class", action="store_true", help="also list every class")
    p.set_defaults(func=_command(_results))

    _add_more_commands(subparsers, common)
    _add_export_command(subparsers, common)


def _add_spec_arguments(p: argparse.ArgumentParser, *, set_help: str, wait_help: str) -> None:
    """``SPEC``, ``--set KEY=VALUE``, ``--wait`` and ``--poll``: what a submitting command takes."""
    p.add_argument("spec", help="YAML or JSON file; '-' reads standard input")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=set_help,
    )
    p.add_argument("--wait", action="store_true", help=wait_help)
    p.add_argument("--poll", type=float, default=2.0, help="seconds between polls with --wait")


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--output table|json``, ``--json`` and ``-q``: the output options of every command."""
    group = parser.add_argument_group("output").add_mutually_exclusive_group()
    group.add_argument(
        "--output",
        choices=OUTPUTS,
        default="table",
        help="table: aligned text (default); json: machine-readable JSON",
    )
    group.add_argument(
        "--json", dest="output", action="store_const", const="json", help="same as --output json"
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", help="print only ids (job ids, names, paths)"
    )


def _add_more_commands(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    """``download``, ``datasets list|register|show`` and ``pipeline submit|show``."""
    p = subparsers.add_parser(
        "download",
        parents=[common],
        help="download a job's artifacts (all of them, or those named)",
        description="Save artifacts of a job into a folder; `livt show ID` lists them.",
    )
    p.add_argument("job_id", metavar="JOB")
    p.add_argument("names", nargs="*", metavar="NAME", help="artifact names (default: all)")
    p.add_argument(
        "-d", "--dir", default=".", type=Path, help="folder to save into (default: current)"
    )
    p.set_defaults(func=_command(_download))

    datasets = subparsers.add_parser("datasets", help="registered datasets")
    actions = datasets.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    p = actions.add_parser("list", parents=[common], help="list registered datasets")
    p.set_defaults(func=_command(_datasets_list))
    p = actions.add_parser(
        "register",
        parents=[common],
        help="register a dataset root inside the server's data roots",
        description="Register a dataset; jobs then name it with `dataset: NAME`.",
    )
    p.add_argument("name", metavar="NAME", help="lowercase letters, digits, . _ -")
    p.add_argument("--kind", required=True, help="dataset type, e.g. imagefolder")
    p.add_argument("--root", help="folder inside the server's data roots (default: bundled)")
    p.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a data.* setting, e.g. --param imbalance_factor=100",
    )
    p.set_defaults(func=_command(_datasets_register))
    p = actions.add_parser("show", parents=[common], help="class counts and shot groups")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_command(_datasets_show))

    pipeline = subparsers.add_parser("pipeline", help="pretrain → finetune → evaluate chains")
    actions = pipeline.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "submit",
        parents=[common],
        help="submit a pipeline spec (a mapping with `stages`)",
        description="Submit a YAML/JSON spec with a `stages` list; each stage starts from the "
        "previous one's checkpoint.",
    )
    _add_spec_arguments(
        p,
        set_help="override a top-level field (e.g. --set name=run1)",
        wait_help="wait for every stage",
    )
    p.set_defaults(func=_command(_pipeline_submit))
    p = actions.add_parser("show", parents=[common], help="a pipeline's stages and their state")
    p.add_argument("pipeline_id", metavar="ID")
    p.set_defaults(func=_command(_pipeline_show))

    hooks = subparsers.add_parser("webhooks", help="URLs called when your jobs end")
    actions = hooks.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "create",
        parents=[common],
        help="call a URL when your jobs (or one job) end; prints the signing secret once",
    )
    p.add_argument("hook_url", metavar="URL")
    p.add_argument("--job", dest="job_id", help="only this job (default: every job of yours)")
    p.set_defaults(func=_command(_webhooks_create))
    p = actions.add_parser("list", parents=[common], help="your webhooks")
    p.set_defaults(func=_command(_webhooks_list))
    p = actions.add_parser("deliveries", parents=[common], help="a webhook's delivery log")
    p.add_argument("webhook_id", metavar="ID")
    p.add_argument("--limit", type=int, default=20, help="newest deliveries to show (20)")
    p.set_defaults(func=_command(_webhooks_deliveries))
    p = actions.add_parser("delete", parents=[common], help="stop calling a webhook's URL")
    p.add_argument("webhook_id", metavar="ID")
    p.set_defaults(func=_command(_webhooks_delete))


def _add_export_command(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    p = subparsers.add_parser(
        "export",
        parents=[common],
        help="export a job's (or a local checkpoint's) weights for timm",
        description="Write DIR/model.safetensors (weights only, the model config in its "
        "metadata) and DIR/config.json (timm's pretrained_cfg layout) of a succeeded job, or of "
        "a local checkpoint-*.pth. Load with timm.create_model('local-dir:DIR', pretrained=True). "
        "A pretrain job exports its encoder.",
    )
    p.add_argument("source", metavar="JOB|CHECKPOINT", help="a job id, or a checkpoint file")
    p.add_argument(
        "--format",
        choices=("safetensors", "timm"),
        default="safetensors",
        help="safetensors: fetch the weights file; timm: fetch the zip timm loads (default "
        "safetensors; both leave model.safetensors and config.json in DIR)",
    )
    p.add_argument(
        "-o", "--out-dir", dest="out_dir", required=True, metavar="DIR", help="output folder"
    )
    p.set_defaults(func=_export_command)


def _export_command(args: argparse.Namespace) -> int:
    """``livt export``: a local checkpoint file is exported here; a job id through the API."""
    source = Path(args.source)
    if source.is_file():
        from livt_core.errors import LivtError
        from livt_core.export import export_checkpoint

        try:
            folder = export_checkpoint(source, args.out_dir)
        except LivtError as exc:
            return _fail(str(exc), contract.EXIT_CODES.get(exc.reason, 1))
        print(f"exported {source} to {folder}/model.safetensors and {folder}/config.json")
        return 0
    return _command(_export)(args)


def _export(client: LivtClient, args: argparse.Namespace) -> int:
    import zipfile

    from livt_core.export import TIMM_CONFIG_FILE, WEIGHTS_FILE, write_timm_folder

    folder = Path(args.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if args.format == "safetensors":
        weights = client.download_export(args.source, folder / WEIGHTS_FILE, "safetensors")
        try:
            write_timm_folder(weights, folder)
        except ValueError as exc:
            raise CommandError(f"the server sent no livt export: {exc}") from None
    else:
        archive = client.download_export(args.source, folder / f".{args.source}-timm.zip", "timm")
        try:
            with zipfile.ZipFile(archive) as zf:
                for name in (WEIGHTS_FILE, TIMM_CONFIG_FILE):
                    zf.extract(name, folder)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise CommandError(f"the server sent no timm export: {exc}") from None
        finally:
            archive.unlink(missing_ok=True)
    print(f"exported {args.source} to {folder}/{WEIGHTS_FILE} and {folder}/{TIMM_CONFIG_FILE}")
    return 0


# plumbing ------------------------------------------------------------------------------------


def _command(handler: Callable[[LivtClient, argparse.Namespace], int]) -> Callable[..., int]:
    """Wraps a handler: builds the client and turns client errors into messages + exit codes."""

    def run(args: argparse.Namespace) -> int:
        from livt.client import LivtApiError, LivtClient, LivtConnectionError

        if not getattr(args, "verbose", False):  # a line per HTTP request only with -v
            logging.getLogger("httpx").setLevel(logging.WARNING)
        url = args.url or os.environ.get("LIVT_URL") or DEFAULT_URL
        token = args.token or os.environ.get("LIVT_TOKEN")
        try:
            with LivtClient(url, token) as client:
                return handler(client, args)
        except LivtConnectionError:
            return _fail(
                f"cannot connect to {url}: is the server running at {url}? "
                "(start it with `livt serve`, or set LIVT_URL / --url)"
            )
        except LivtApiError as exc:
            return _fail(*_api_error_message(exc, has_token=bool(token)))
        except CommandError as exc:
            return _fail(str(exc), exc.code)
        except TimeoutError as exc:
            return _fail(str(exc))
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 130

    return run


def _fail(message: str, code: int = 1) -> int:
    print(f"livt: error: {message}", file=sys.stderr)
    return code


def _api_error_message(exc: LivtApiError, *, has_token: bool) -> tuple[str, int]:
    if exc.status == 401:
        what = "the server rejected the token" if has_token else "no API token given"
        return (
            f"{what} (HTTP 401): set LIVT_TOKEN or pass --token "
            "(create one with `livt token create --name NAME`)",
            1,
        )
    if exc.status == 422 and exc.errors:
        lines = "\n".join(f"  {e.field}: {e.message}" for e in exc.errors)
        return f"the server rejected the request (HTTP 422):\n{lines}", EXIT_INVALID_SPEC
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return f"{detail} (HTTP {exc.status})", 1


# formatting ----------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _devices(job: Job) -> str:
    """``CPU``, ``1 GPU``, ``2 nodes × 4 GPUs`` as the service labels it (older servers: GPUs)."""
    return job.devices or f"{job.gpus} GPU{'s' if job.gpus != 1 else ''}"


def _progress_text(job: Job) -> str:
    p = job.progress
    if job.status == "succeeded":
        return "done"
    if job.status == "queued" and job.pending_reason:
        return job.pending_reason
    if p is None or not p.epochs:
        return "-"
    epoch = min((p.epoch or 0) + 1, p.epochs)
    return f"{epoch}/{p.epochs} {100 * (p.fraction or 0):3.0f}%"


def _table(
    rows: Sequence[Sequence[str]],
    headers: Sequence[str],
    out: TextIO,
    right: Iterable[int] = (),
) -> None:
    """Prints aligned columns; the columns numbered in ``right`` are right-aligned."""
    right = set(right)
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    for row in (headers, *rows):
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip(), file=out)


def _bar(fraction: float, width: int = 24) -> str:
    filled = int(round(fraction * width))
    return "#" * filled + "." * (width - filled)


def _dump_json(obj: Any, indent: int | None = 2) -> str:
    """Dataclasses (and datetimes inside them) as JSON, indented unless ``indent`` is None."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    elif isinstance(obj, list):
        obj = [asdict(x) if is_dataclass(x) and not isinstance(x, type) else x for x in obj]
    return json.dumps(obj, indent=indent, default=lambda v: v.isoformat())


def _emit(args: argparse.Namespace, data: Any, ids: Iterable[str]) -> bool:
    """Prints ``ids`` one a line for ``-q`` or ``data`` as JSON for ``--output json``; True
    when it did, so the caller prints its table only when this returns False."""
    if getattr(args, "quiet", False):
        for item in ids:
            print(item)
        return True
    if getattr(args, "output", "table") == "json":
        print(_dump_json(data))
        return True
    return False


# commands ------------------------------------------------------------------------------------


def _read_spec(path: str) -> dict[str, Any]:
    import yaml

    from livt_core.config import load_yaml

    if path == "-":
        text, name = sys.stdin.read(), "standard input"
    else:
        file = Path(path)
        if not file.is_file():
            raise CommandError(f"spec file {file} does not exist", EXIT_INVALID_SPEC)
        text, name = file.read_text(encoding="utf-8"), str(file)
    try:
        data = load_yaml(text)  # JSON is YAML; YAML 1.2 booleans, as in livt train
    except yaml.YAMLError as exc:
        raise CommandError(f"cannot parse {name}: {exc}", EXIT_INVALID_SPEC) from None
    if not isinstance(data, dict):
        raise CommandError(
            f"{name} must hold a mapping (a job spec with `kind`, or a pipeline with `stages`)",
            EXIT_INVALID_SPEC,
        )
    return data


def _apply_overrides(spec: dict[str, Any], items: Iterable[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` onto the spec, parsed as ``livt train`` parses it (YAML 1.2 values:
    ``amp=off`` stays the string)."""
    from livt_core.config import ConfigErrors, deep_merge, parse_overrides

    try:
        overrides = parse_overrides(list(items))
    except ConfigErrors as exc:
        raise CommandError(f"cannot parse --set: {exc}", EXIT_INVALID_SPEC) from None
    return deep_merge(spec, overrides)


def _submit(client: LivtClient, args: argparse.Namespace) -> int:
    spec = _apply_overrides(_read_spec(args.spec), args.overrides)
    if "stages" in spec:
        return _submit_stages(client, args, spec)
    job = client.submit(spec)
    if not args.wait:
        if not _emit(args, job, [job.id]):
            print(f"submitted {job.id} ({job.kind}, {job.status})")
        return 0
    if _table_output(args):
        print(f"submitted {job.id} ({job.kind}, {job.status})")
    return _wait_and_report(client, job.id, args.poll, None, args)


def _table_output(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False) and getattr(args, "output", "table") == "table"


def _submit_stages(client: LivtClient, args: argparse.Namespace, spec: dict[str, Any]) -> int:
    pipeline = client.submit_pipeline(spec["stages"], name=spec.get("name"))
    if not args.wait and _emit(args, pipeline, [j.id for j in pipeline.jobs]):
        return 0
    if _table_output(args):
        print(f"submitted pipeline {pipeline.id} ({len(pipeline.jobs)} stages)")
        for job in pipeline.jobs:
            print(f"  stage {job.stage}: {job.id}  {job.kind:<9} {job.status}")
    if not args.wait or not pipeline.jobs:
        return 0
    code = 0
    for job in pipeline.jobs:
        code = _wait_and_report(client, job.id, args.poll, None, args, report=False)
        if code:
            break
    if not _table_output(args):  # a JSON / id report of every stage once it is over
        _emit(args, client.pipeline(pipeline.id), [j.id for j in pipeline.jobs])
    return code


def _jobs(client: LivtClient, args: argparse.Namespace) -> int:
    if args.limit <= 0:
        raise CommandError("--limit must be a positive number of jobs")
    sort, args_sort = None, getattr(args, "sort", None)
    if args_sort:  # the CLI's --sort few means best first: the API's -few
        sort = args_sort[1:] if args_sort.startswith("+") else f"-{args_sort}"
    filters = {name: getattr(args, name, None) for name in ("tag", "dataset", "loss", "model", "q")}
    page = client.jobs(
        args.status,
        args.kind,
        **filters,
        sort=sort,
        limit=args.limit,
        cursor=args.cursor,
    )
    if _emit(args, page, [j.id for j in page.items]):
        return 0
    if not page.items:
        print("no jobs")
        return 0
    rows = [
        [
            j.id,
            j.kind,
            j.status,
            _progress_text(j),
            str(j.attempt),
            j.dataset or j.preset or "-",
            j.model or "-",
            j.name or "-",
            _accuracy(j, "overall"),
            _accuracy(j, "few"),
            _when(j.created_at),
        ]
        for j in page.items
    ]
    headers = [
        "ID",
        "KIND",
        "STATUS",
        "PROGRESS",
        "TRY",
        "DATASET",
        "MODEL",
        "NAME",
        "OVERALL",
        "FEW",
        "CREATED",
    ]
    _table(rows, headers, sys.stdout, right=(4, 8, 9))
    if page.next_cursor:
        flags = [f"--limit {args.limit}"]
        for name in ("status", "kind", "tag", "dataset", "loss", "model", "sort", "q"):
            if getattr(args, name, None):
                flag = "search" if name == "q" else name
                flags.append(f"--{flag} {shlex.quote(getattr(args, name))}")
        print(f"\nmore: livt jobs {' '.join(flags)} --cursor {page.next_cursor}")
    return 0


def _accuracy(job: Job, group: str) -> str:
    value = getattr(job.result, group, None) if job.result is not None else None
    return "-" if value is None else f"{value:.2f}"


def _show(client: LivtClient, args: argparse.Namespace) -> int:
    job = client.job(args.job_id)
    if _emit(args, job, [job.id]):
        return 0
    fields: list[tuple[str, str]] = [
        ("id", job.id),
        ("kind", job.kind),
        ("name", job.name or "-"),
        ("status", job.status),
        ("owner", job.owner or "-"),
        ("preset", job.preset or "-"),
        ("dataset", job.dataset or "-"),
        ("model", job.model or "-"),
        ("loss", job.loss or "-"),
        ("attempt", str(job.attempt)),
        ("queue", f"{job.queue or '-'} ({_devices(job)})"),
    ]
    if job.status == "queued" and job.pending_reason:
        fields.append(("waiting", job.pending_reason))
    if job.progress is not None and not job.finished:
        fields.append(("progress", _progress_line(job)))
    if job.failure is not None:
        fields.append(("failure", f"{job.failure.reason}: {job.failure.message}"))
    if job.pipeline_id:
        fields.append(("pipeline", f"{job.pipeline_id} (stage {job.stage})"))
    if job.init_job_id:
        fields.append(("init job", job.init_job_id))
    if job.depends_on:
        fields.append(("depends on", job.depends_on))
    fields += [
        ("created", _when(job.created_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
    ]
    if job.result is not None and job.kind == "pretrain":
        final = job.result.extra.get("final_loss")
        fields.append(("result", f"final loss {_number(final)}"))
    elif job.result is not None:
        r = job.result
        fields.append(
            (
                "result",
                f"overall {_pct(r.overall)}  many {_pct(r.many)}  medium {_pct(r.medium)}  "
                f"few {_pct(r.few)}  (livt results {job.id})",
            )
        )
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        print(f"{key:<{width}}  {value}")
    if job.finished:
        artifacts = client.artifacts(job.id)
        if artifacts:
            print("artifacts:")
            for a in artifacts:
                print(f"  {a.name:<24} {_size(a.size_bytes):>9}  {client.url}{a.url}")
    if args.config and job.config is not None:
        print("config:")
        print(json.dumps(job.config, indent=2, sort_keys=True))
    return 0


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def _logs(client: LivtClient, args: argparse.Namespace) -> int:
    """``--output json`` prints one JSON object per line (JSON Lines, also with ``-f``);
    ``-q`` prints the messages alone."""
    if args.follow:
        for line in client.follow_logs(args.job_id, offset=args.offset):
            _print_log(line, args)
        return 0
    offset = args.offset
    while True:
        chunk = client.logs(args.job_id, offset)
        for line in chunk.lines:
            _print_log(line, args)
        if not chunk.lines or chunk.next_offset <= offset:
            return 0
        offset = chunk.next_offset


def _print_log(line: LogLine, args: argparse.Namespace) -> None:
    if getattr(args, "quiet", False):
        print(line.message, flush=True)
        return
    if getattr(args, "output", "table") == "json":
        print(_dump_json(line, indent=None), flush=True)
        return
    stamp = line.ts.astimezone().strftime("%H:%M:%S") if line.ts else "--:--:--"
    print(f"{stamp} {line.level:<7} {line.message}", flush=True)


def _cancel(client: LivtClient, args: argparse.Namespace) -> int:
    job = client.cancel(args.job_id)
    if not _emit(args, job, [job.id]):
        print(f"{job.id}: {job.status}")
    return 0


def _retry(client: LivtClient, args: argparse.Namespace) -> int:
    job = client.retry(args.job_id)
    if not _emit(args, job, [job.id]):
        print(f"{job.id}: {job.status} (attempt {job.attempt})")
    return 0


def _wait(client: LivtClient, args: argparse.Namespace) -> int:
    return _wait_and_report(client, args.job_id, args.poll, args.timeout, args)


def _progress_line(job: Job) -> str:
    p = job.progress
    if p is None or not p.epochs:
        return ""
    frac = p.fraction or 0.0
    text = (
        f"[{_bar(frac)}] {100 * frac:3.0f}%  epoch {min((p.epoch or 0) + 1, p.epochs)}/{p.epochs}"
    )
    if p.loss is not None:
        text += f"  loss {p.loss:.4f}"
    if p.eta_seconds is not None and not job.finished:
        text += f"  ETA {_duration(p.eta_seconds)}"
    return text


class _ProgressPrinter:
    """A tqdm bar over the job's steps on a terminal; a line per status/epoch change into a
    log or a pipe (where a redrawn bar would be noise)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last: tuple[str, str] | None = None
        self.bar: Any = None

    def __call__(self, job: Job) -> None:
        progress = _progress_line(job)
        text = f"{job.id} {job.status:<10} {progress}".rstrip()
        key = (job.status, _coarse(progress))
        if self.tty:
            self._draw(job)
        elif key != self.last:
            print(text, file=self.out, flush=True)
        self.last = key

    def _draw(self, job: Job) -> None:
        from tqdm import tqdm

        p = job.progress
        total, done = 100, 100 * (p.fraction or 0.0) if p else 0.0
        if p is not None and p.epochs and p.steps:  # in steps, so tqdm shows steps/s
            total = p.epochs * p.steps
            done = min(total, (p.epoch or 0) * p.steps + (p.step or 0) + 1)
        if job.status == "succeeded":
            done = total
        if self.bar is None:
            self.bar = tqdm(
                total=total, desc=job.id, unit="step", file=self.out, dynamic_ncols=True
            )
        self.bar.total = total
        self.bar.n = int(done)
        postfix = [job.status]
        if p is not None and p.epochs:
            postfix.append(f"epoch {min((p.epoch or 0) + 1, p.epochs)}/{p.epochs}")
        if p is not None and p.loss is not None:
            postfix.append(f"loss {p.loss:.4f}")
        self.bar.set_postfix_str(", ".join(postfix), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _coarse(progress: str) -> str:
    """A progress line without its ever-changing figures (bar, percentage, loss, ETA): with
    the status, a log gets a line per status or epoch change."""
    return progress.split("%")[-1].split("loss")[0] if "epoch" in progress else progress


def _wait_and_report(
    client: LivtClient,
    job_id: str,
    poll: float,
    timeout: float | None,
    args: argparse.Namespace | None = None,
    *,
    report: bool = True,
) -> int:
    """Waits for the job; reports it as a table (with a progress bar on stderr), as JSON or as
    its id (nothing for JSON / -q when ``report`` is False). The exit status tells how it ended (the codes of ``livt train``)."""
    table = args is None or _table_output(args)
    printer = _ProgressPrinter(sys.stderr) if table else None
    try:
        job = client.wait(job_id, poll=poll, timeout=timeout, callback=printer)
    finally:
        if printer is not None:
            printer.close()
    failure = job.failure
    code = 0
    if job.status == "cancelled":
        code = EXIT_CANCELLED
    elif job.status != "succeeded":
        code = contract.exit_code(failure.reason if failure else "internal")
    if not table:
        if report:
            _emit(args, job, [job.id])
        return code
    if job.status == "succeeded":
        print(f"{job.id} succeeded")
        if job.result is not None:
            _print_result(job, job.result, per_class=False)
    elif job.status == "cancelled":
        print(f"{job.id} cancelled")
    else:
        reason = f": {failure.reason}: {failure.message}" if failure else ""
        print(f"{job.id} failed{reason}")
    return code


def _results(client: LivtClient, args: argparse.Namespace) -> int:
    job = client.job(args.job_id)
    if job.result is None:
        state = f"it is still {job.status}" if not job.finished else f"it {job.status}"
        raise CommandError(f"job {job.id} has no results: {state}")
    if _emit(args, job.result, [job.id]):
        return 0
    if job.kind == "pretrain":
        extra = job.result.extra
        print(f"{job.id}  pretrain  {job.dataset or job.preset}  {job.model}")
        print(
            f"final loss {_number(extra.get('final_loss'))}   "
            f"lowest loss {_number(extra.get('min_loss'))}   epochs {extra.get('epochs', '-')}"
        )
        return 0
    _print_result(job, job.result, per_class=args.per_class)
    return 0


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_result(job: Job, r: Result, *, per_class: bool) -> None:
    out = sys.stdout
    head = [job.id, job.kind, job.dataset or job.preset, job.model, job.loss]
    split = f"  ({r.split} split)" if r.split else ""
    print("  ".join(str(x) for x in head if x) + split, file=out)
    sizes = r.group_sizes
    rows = [
        [name, str(sizes.get(name, "-")), _pct(value)]
        for name, value in (("many", r.many), ("medium", r.medium), ("few", r.few))
    ]
    rows.append(["overall", str(len(r.class_counts) or "-"), _pct(r.overall)])
    _table(rows, ["group", "classes", "top-1 %"], out, right=(1, 2))
    pdc = "-" if r.pdc is None else f"{r.pdc:.3f}"
    print(f"top-5 {_pct(r.top5)}%   ECE {_pct(r.ece)}%   MCE {_pct(r.mce)}%   PDC {pdc}", file=out)
    if per_class and r.per_class:
        print(file=out)
        rows = [
            [
                str(c.get("class", i)),
                str(c.get("name") or "-"),
                str(c.get("group", "-")),
                str(c.get("train_count", "-")),
                str(c.get("support", "-")),
                _pct(c.get("accuracy")),
            ]
            for i, c in enumerate(r.per_class)
        ]
        _table(
            rows, ["class", "name", "group", "train", "test", "top-1 %"], out, right=(0, 3, 4, 5)
        )


# download, datasets, pipeline -----------------------------------------------------------------


def _download(client: LivtClient, args: argparse.Namespace) -> int:
    available = {a.name: a for a in client.artifacts(args.job_id)}
    names = list(args.names) or list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        known = ", ".join(available) or "none yet"
        raise CommandError(
            f"job {args.job_id} has no artifact {', '.join(unknown)} (it has: {known})"
        )
    if not names:
        raise CommandError(f"job {args.job_id} has no artifacts yet")
    if not args.dir.is_dir():
        raise CommandError(f"--dir {args.dir} is not a folder: create it first")
    saved = []
    for name in names:
        path = client.download_artifact(args.job_id, name, args.dir)
        saved.append({"name": name, "path": str(path), "size_bytes": path.stat().st_size})
    if not _emit(args, saved, [s["path"] for s in saved]):
        for s in saved:
            print(f"saved {s['path']} ({_size(s['size_bytes'])})")
    return 0


def _datasets_list(client: LivtClient, args: argparse.Namespace) -> int:
    datasets = client.datasets()
    if _emit(args, datasets, [d.name for d in datasets]):
        return 0
    if not datasets:
        print("no datasets (register one with `livt datasets register NAME --kind KIND`)")
        return 0
    rows = [
        [
            d.name,
            d.kind,
            d.root or "(bundled)",
            str(len(d.classes or d.class_counts)),
            str(d.num_train if d.num_train is not None else "-"),
            "/".join(str(len(d.shot_groups.get(g, []))) for g in ("many", "medium", "few")),
        ]
        for d in datasets
    ]
    headers = ["NAME", "KIND", "ROOT", "CLASSES", "IMAGES", "MANY/MED/FEW"]
    _table(rows, headers, sys.stdout, right=(3, 4))
    return 0


def _datasets_register(client: LivtClient, args: argparse.Namespace) -> int:
    from livt_core.config import ConfigErrors, parse_overrides

    try:
        params = parse_overrides(list(args.params))
    except ConfigErrors as exc:
        raise CommandError(f"cannot parse --param: {exc}", EXIT_INVALID_SPEC) from None
    dataset = client.register_dataset(args.name, args.kind, args.root, params)
    if not _emit(args, dataset, [dataset.name]):
        print(f"registered {dataset.name} ({dataset.kind}, {dataset.num_train} training images)")
    return 0


def _datasets_show(client: LivtClient, args: argparse.Namespace) -> int:
    datasets = {d.name: d for d in client.datasets()}
    dataset = datasets.get(args.name)
    if dataset is None:
        known = ", ".join(sorted(datasets)) or "none registered"
        raise CommandError(f"no dataset {args.name!r} (known: {known})")
    if _emit(args, dataset, [dataset.name]):
        return 0
    fields = [
        ("name", dataset.name),
        ("kind", dataset.kind),
        ("root", dataset.root or "(bundled)"),
        ("images", str(dataset.num_train if dataset.num_train is not None else "-")),
        ("params", json.dumps(dataset.params, sort_keys=True) if dataset.params else "-"),
        ("created", _when(dataset.created_at)),
    ]
    for key, value in fields:
        print(f"{key:<8}  {value}")
    group_of = {c: g for g, ids in dataset.shot_groups.items() for c in ids}
    rows = [
        [
            str(i),
            (dataset.classes[i] if i < len(dataset.classes) else "-"),
            str(n),
            group_of.get(i, "-"),
        ]
        for i, n in enumerate(dataset.class_counts)
    ]
    if rows:
        print()
        _table(rows, ["class", "name", "train", "group"], sys.stdout, right=(0, 2))
    return 0


def _pipeline_submit(client: LivtClient, args: argparse.Namespace) -> int:
    spec = _apply_overrides(_read_spec(args.spec), args.overrides)
    if not isinstance(spec.get("stages"), list):
        raise CommandError(
            f"{args.spec} has no `stages` list: a pipeline spec is a mapping with `stages` "
            "(submit a single job with `livt submit`)",
            EXIT_INVALID_SPEC,
        )
    return _submit_stages(client, args, spec)


def _pipeline_show(client: LivtClient, args: argparse.Namespace) -> int:
    pipeline = client.pipeline(args.pipeline_id)
    if _emit(args, pipeline, [j.id for j in pipeline.jobs]):
        return 0
    print(f"pipeline {pipeline.id}  {pipeline.name or ''}".rstrip())
    rows = [
        [str(j.stage if j.stage is not None else i), j.id, j.kind, j.status, _progress_text(j)]
        for i, j in enumerate(pipeline.jobs)
    ]
    _table(rows, ["STAGE", "ID", "KIND", "STATUS", "PROGRESS"], sys.stdout, right=(0,))
    return 0


def _webhooks_create(client: LivtClient, args: argparse.Namespace) -> int:
    hook = client.create_webhook(args.hook_url, args.job_id)
    if not _emit(args, hook, [hook["id"]]):
        what = f"job {hook['job_id']}" if hook.get("job_id") else "every job of yours"
        print(f"created {hook['id']}: POST {hook['url']} when {what} ends")
        print(f"signing secret (shown only now): {hook['secret']}")
    return 0


def _webhooks_list(client: LivtClient, args: argparse.Namespace) -> int:
    hooks = client.webhooks()
    if _emit(args, hooks, [h["id"] for h in hooks]):
        return 0
    if not hooks:
        print("no webhooks (create one with `livt webhooks create URL`)")
        return 0
    rows = [[h["id"], h.get("job_id") or "(all jobs)", h["url"]] for h in hooks]
    _table(rows, ["ID", "JOB", "URL"], sys.stdout)
    return 0


def _webhooks_deliveries(client: LivtClient, args: argparse.Namespace) -> int:
    if args.limit <= 0:
        raise CommandError("--limit must be a positive number of deliveries")
    items = client.webhook_deliveries(args.webhook_id, limit=args.limit)
    if _emit(args, items, [str(d["id"]) for d in items]):
        return 0
    if not items:
        print("no deliveries yet")
        return 0
    rows = [
        [
            str(d["id"]),
            d["job_id"],
            d["event"],
            d["status"],
            str(d["attempts"]),
            str(d.get("last_status_code") or "-"),
            (d.get("last_error") or "-")[:60],
        ]
        for d in items
    ]
    headers = ["ID", "JOB", "EVENT", "STATUS", "TRIES", "HTTP", "LAST ERROR"]
    _table(rows, headers, sys.stdout, right=(0, 4))
    return 0


def _webhooks_delete(client: LivtClient, args: argparse.Namespace) -> int:
    client.delete_webhook(args.webhook_id)
    if not _emit(args, {"id": args.webhook_id, "deleted": True}, [args.webhook_id]):
        print(f"deleted {args.webhook_id}")
    return 0
