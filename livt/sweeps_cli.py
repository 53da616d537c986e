"""``livt sweep``: submit a sweep (grid × seeds of jobs) and read its mean ± std table.

- ``livt sweep SPEC.yaml [--wait]``: submits the spec (the body of ``POST /sweeps``: ``name``,
  ``base``, ``grid``, ``seeds``); with ``--wait``, follows it and prints the table at the end.
- ``livt sweep show ID [--format md|csv|latex]``: the table (with ``--format``: only the table,
  ready for a paper or a spreadsheet).
- ``livt sweep cancel ID``, ``livt sweep list``.

A spec with ``search`` instead of ``grid`` is an adaptive search (Optuna); ``--wait`` polls it,
and each poll lets the service tell finished trials and ask the next ones.

Exit status as the other client commands: 0 success (a waited sweep that succeeded), 1 an error
or a failed sweep, 2 a spec the server rejected, 3 a cancelled sweep.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from livt.client_cli import DEFAULT_URL, EXIT_CANCELLED, CommandError, _command, _read_spec

if TYPE_CHECKING:
    from livt.client import LivtClient, Sweep

ACTIONS = ("show", "cancel", "list")
FORMATS = ("md", "csv", "latex")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="submit a sweep (grid × seeds) or show its mean ± std table",
        description="`livt sweep SPEC.yaml [--wait]` submits a sweep; `livt sweep show ID "
        "[--format md|csv|latex]` prints its table; `livt sweep cancel ID`; `livt sweep list`.",
    )
    p.add_argument("target", metavar="SPEC|show|cancel|list", help="a sweep spec file or action")
    p.add_argument("sweep_id", metavar="ID", nargs="?", help="the sweep of show / cancel")
    p.add_argument("--wait", action="store_true", help="wait for every job, then print the table")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between polls with --wait")
    p.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")
    p.add_argument("--format", choices=FORMATS, help="print only the table, in this format")
    conn = p.add_argument_group("service")
    conn.add_argument(
        "--url", default=None, help=f"service URL (default: $LIVT_URL or {DEFAULT_URL})"
    )
    conn.add_argument("--token", default=None, help="API token (default: $LIVT_TOKEN)")
    p.set_defaults(func=_command(_sweep))


def _sweep(client: LivtClient, args: argparse.Namespace) -> int:
    if args.target == "list":
        for item in client.sweeps():
            grid = " × ".join(f"{k}[{len(v)}]" for k, v in item["grid"].items()) or "-"
            print(
                f"{item['id']}  {item['status']:<9}  {item['num_jobs']:>4} jobs  "
                f"{grid} × {len(item['seeds'])} seeds  {item['name'] or ''}".rstrip()
            )
        return 0
    if args.target in ("show", "cancel"):
        if not args.sweep_id:
            raise CommandError(
                f"livt sweep {args.target} needs the sweep id: livt sweep {args.target} s_...", 2
            )
        if args.target == "cancel":
            sweep = client.cancel_sweep(args.sweep_id)
            print(f"{sweep.id}: {sweep.status} ({_counts(sweep)})")
            return 0
        return _print(client, client.sweep(args.sweep_id), args.format)
    spec = _read_spec(args.target)
    body = {k: spec[k] for k in ("base", "grid", "seeds", "name", "search") if k in spec}
    unknown = sorted(set(spec) - set(body))
    if unknown or "base" not in spec:
        raise CommandError(
            f"{args.target}: a sweep spec has `base` (a job spec or a pipeline), `grid` or "
            f"`search`, `seeds` and `name`; "
            f"{'remove ' + ', '.join(unknown) if unknown else 'add base'}",
            2,
        )
    sweep = client.submit_sweep(
        body["base"],
        body.get("grid"),
        body.get("seeds"),
        name=body.get("name"),
        search=body.get("search"),
    )
    print(f"submitted {sweep.id} ({len(sweep.jobs)} jobs)")
    if not args.wait:
        return 0
    sweep = client.wait_sweep(sweep.id, poll=args.poll, timeout=args.timeout, callback=_progress)
    print(file=sys.stderr)
    code = _print(client, sweep, args.format)
    return code or {"succeeded": 0, "cancelled": EXIT_CANCELLED}.get(sweep.status, 1)


def _counts(sweep: Sweep) -> str:
    done = sum(1 for j in sweep.jobs if j.finished)
    return f"{done}/{len(sweep.jobs)} jobs finished"


def _progress(sweep: Sweep) -> None:
    print(f"\r{sweep.id} {sweep.status}: {_counts(sweep)}", end="", file=sys.stderr, flush=True)


def _print(client: LivtClient, sweep: Sweep, fmt: str | None) -> int:
    table = client.sweep_table(sweep.id, fmt or "md")
    if fmt is None:
        print(f"{sweep.id} {sweep.name or ''}: {sweep.status} ({_counts(sweep)})")
        failed = [
            f"  {c['job']} (seed {c['seed']}): {c['status']} {c.get('failure_message') or ''}"
            for row in sweep.table
            for c in row["cells"]
            if c["status"] in ("failed", "cancelled")
        ]
        print(table, end="")
        if sweep.best is not None:
            params = ", ".join(f"{k}={v:.4g}" for k, v in sweep.best["params"].items())
            print(
                f"best trial: {params}: objective {sweep.best['objective']:.2f} "
                f"({sweep.best['job']})"
            )
        if failed:
            print("not finished with a result:")
            print("\n".join(line.rstrip() for line in failed))
        return 0
    print(table, end="")
    return 0
