"""``livt tag ID TAG…``: adds tags to a job (``--remove`` takes them off); ``--note`` sets its
notes. Connection options and exit status as the other client commands."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from livt.client_cli import DEFAULT_URL, _command

if TYPE_CHECKING:
    from livt.client import LivtClient


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tag", help="add tags (or notes) to a job")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("tags", metavar="TAG", nargs="*", help="tags to add")
    p.add_argument("--remove", action="store_true", help="take the TAGs off instead")
    p.add_argument("--note", help="set the job's notes to this text")
    conn = p.add_argument_group("service")
    conn.add_argument(
        "--url", default=None, help=f"service URL (default: $LIVT_URL or {DEFAULT_URL})"
    )
    conn.add_argument("--token", default=None, help="API token (default: $LIVT_TOKEN)")
    p.set_defaults(func=_command(_tag))


def _tag(client: LivtClient, args: argparse.Namespace) -> int:
    if args.remove:
        keep = [t for t in client.job(args.job_id).tags if t not in set(args.tags)]
        job = client.update_job(args.job_id, tags=keep, notes=args.note)
    elif args.tags:
        job = client.tag(args.job_id, *args.tags)
        if args.note is not None:
            job = client.update_job(args.job_id, notes=args.note)
    else:
        job = client.update_job(args.job_id, notes=args.note)
    print(
        f"{job.id}: tags {', '.join(job.tags) or '-'}"
        + (f"; notes: {job.notes}" if job.notes else "")
    )
    return 0
