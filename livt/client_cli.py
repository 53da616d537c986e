"""Client commands of ``livt``: submit, jobs, show, logs, cancel, retry, wait, results, export.

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
EXIT_INVALID_SPEC = contract.EXIT_CONFIG
EXIT_CANCELLED = contract.EXIT_CANCELLED


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

    p = subparsers.add_parser(
        "submit",
        parents=[common],
        help="submit a job (or a pipeline) from a YAML/JSON spec",
        description="Submit a job spec; a spec with a `stages` list submits a pipeline.",
    )
    p.add_argument("spec", help="YAML or JSON file; '-' reads standard input")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec field, e.g. --set epochs=5 --set data.num_workers=0",
    )
    p.add_argument("--wait", action="store_true", help="wait for the job and show its results")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between polls with --wait")
    p.set_defaults(func=_command(_submit))

    p = subparsers.add_parser("jobs", parents=[common], help="list jobs, newest first")
    p.add_argument("--status", choices=STATUSES, help="only jobs in this state")
    p.add_argument("--kind", choices=KINDS, help="only jobs of this kind")
    p.add_argument("--limit", type=int, default=20, help="jobs per page (default 20)")
    p.add_argument("--cursor", help="continue after a previous page")
    p.add_argument("--json", action="store_true", help="print the page as JSON")
    p.set_defaults(func=_command(_jobs))

    p = subparsers.add_parser("show", parents=[common], help="show one job")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--config", action="store_true", help="also print the resolved config")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
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
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_command(_results))

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
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=_export_command)


def _export_command(args: argparse.Namespace) -> int:
    """``livt export``: a local checkpoint file is exported here; a job id through the API."""
    source = Path(args.source)
    if source.is_file():
        from livt_core.errors import LivtError
        from livt_core.export import export_checkpoint

        try:
            folder = export_checkpoint(source, args.output)
        except LivtError as exc:
            return _fail(str(exc), contract.EXIT_CODES.get(exc.reason, 1))
        print(f"exported {source} to {folder}/model.safetensors and {folder}/config.json")
        return 0
    return _command(_export)(args)


def _export(client: LivtClient, args: argparse.Namespace) -> int:
    import zipfile

    from livt_core.export import TIMM_CONFIG_FILE, WEIGHTS_FILE, write_timm_folder

    folder = Path(args.output)
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


def _progress_text(job: Job) -> str:
    p = job.progress
    if job.status == "succeeded":
        return "done"
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


def _dump_json(obj: Any) -> str:
    """Dataclasses (and datetimes inside them) as indented JSON."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    return json.dumps(obj, indent=2, default=lambda v: v.isoformat())


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
        pipeline = client.submit_pipeline(spec["stages"], name=spec.get("name"))
        print(f"submitted pipeline {pipeline.id} ({len(pipeline.jobs)} stages)")
        for job in pipeline.jobs:
            print(f"  stage {job.stage}: {job.id}  {job.kind:<9} {job.status}")
        if not args.wait or not pipeline.jobs:
            return 0
        code = 0
        for job in pipeline.jobs:
            code = _wait_and_report(client, job.id, args.poll, None)
            if code:
                return code
        return code
    job = client.submit(spec)
    print(f"submitted {job.id} ({job.kind}, {job.status})")
    if not args.wait:
        return 0
    return _wait_and_report(client, job.id, args.poll, None)


def _jobs(client: LivtClient, args: argparse.Namespace) -> int:
    if args.limit <= 0:
        raise CommandError("--limit must be a positive number of jobs")
    page = client.jobs(args.status, args.kind, limit=args.limit, cursor=args.cursor)
    if args.json:
        print(_dump_json(page))
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
            _when(j.created_at),
        ]
        for j in page.items
    ]
    headers = ["ID", "KIND", "STATUS", "PROGRESS", "TRY", "DATASET", "MODEL", "NAME", "CREATED"]
    _table(rows, headers, sys.stdout, right=(4,))
    if page.next_cursor:
        print(f"\nmore: livt jobs --limit {args.limit} --cursor {page.next_cursor}")
    return 0


def _show(client: LivtClient, args: argparse.Namespace) -> int:
    job = client.job(args.job_id)
    if args.json:
        print(_dump_json(job))
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
        ("queue", f"{job.queue or '-'} ({job.gpus} GPU{'s' if job.gpus != 1 else ''})"),
    ]
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
    if args.follow:
        for line in client.follow_logs(args.job_id, offset=args.offset):
            _print_log(line)
        return 0
    offset = args.offset
    while True:
        chunk = client.logs(args.job_id, offset)
        for line in chunk.lines:
            _print_log(line)
        if not chunk.lines or chunk.next_offset <= offset:
            return 0
        offset = chunk.next_offset


def _print_log(line: LogLine) -> None:
    stamp = line.ts.astimezone().strftime("%H:%M:%S") if line.ts else "--:--:--"
    print(f"{stamp} {line.level:<7} {line.message}", flush=True)


def _cancel(client: LivtClient, args: argparse.Namespace) -> int:
    job = client.cancel(args.job_id)
    print(f"{job.id}: {job.status}")
    return 0


def _retry(client: LivtClient, args: argparse.Namespace) -> int:
    job = client.retry(args.job_id)
    print(f"{job.id}: {job.status} (attempt {job.attempt})")
    return 0


def _wait(client: LivtClient, args: argparse.Namespace) -> int:
    return _wait_and_report(client, args.job_id, args.poll, args.timeout)


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
    """Draws a one-line progress bar on a terminal, or a line per change into a log/pipe."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = ""

    def __call__(self, job: Job) -> None:
        text = f"{job.id} {job.status:<10} {_progress_line(job)}".rstrip()
        if self.tty:
            self.out.write("\r" + text.ljust(len(self.last)))
            self.out.flush()
        elif _coarse(text) != _coarse(self.last):
            print(text, file=self.out, flush=True)
        self.last = text

    def close(self) -> None:
        if self.tty and self.last:
            self.out.write("\n")
            self.out.flush()


def _coarse(text: str) -> str:
    """A progress line without its ever-changing figures: logs get a line per status/epoch."""
    return text.split("%")[-1].split("loss")[0] if "epoch" in text else text


def _wait_and_report(client: LivtClient, job_id: str, poll: float, timeout: float | None) -> int:
    printer = _ProgressPrinter(sys.stderr)
    try:
        job = client.wait(job_id, poll=poll, timeout=timeout, callback=printer)
    finally:
        printer.close()
    if job.status == "succeeded":
        print(f"{job.id} succeeded")
        if job.result is not None:
            _print_result(job, job.result, per_class=False)
        return 0
    if job.status == "cancelled":
        print(f"{job.id} cancelled")
        return EXIT_CANCELLED
    failure = job.failure
    reason = f": {failure.reason}: {failure.message}" if failure else ""
    print(f"{job.id} failed{reason}")
    # the exit status of a finished job matches ``livt train``'s
    return contract.exit_code(failure.reason if failure else "internal")


def _results(client: LivtClient, args: argparse.Namespace) -> int:
    job = client.job(args.job_id)
    if job.result is None:
        state = f"it is still {job.status}" if not job.finished else f"it {job.status}"
        raise CommandError(f"job {job.id} has no results: {state}")
    if args.json:
        print(_dump_json(job.result))
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
