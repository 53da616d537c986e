"""``livt worker``: one job worker process (production: Redis broker, PostgreSQL database).

Imports stay inside the handler so that ``livt --help`` does not load the service stack.
"""

from __future__ import annotations

import argparse
import logging


def _queues(value: str) -> list[str]:
    queues = [q.strip() for q in value.split(",") if q.strip()]
    if not queues:
        raise argparse.ArgumentTypeError("give at least one queue name, e.g. gpu,default")
    return queues


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


# --------------------------------------------------------------------------- livt worker


def worker_command(args: argparse.Namespace) -> int:
    """Runs a Celery worker (threads pool: each job is a child process, the threads only watch)."""
    import worker.janitor  # noqa: F401  (connects the lifecycle signal handlers)
    from livt_service.queue import declare_queues, get_celery_app, is_embedded_broker
    from livt_service.settings import get_settings
    from worker.context import configure, node_name

    settings = get_settings()
    queues = args.queues or [settings.default_queue]
    context = configure(node_name(args.name), queues, args.gpus, concurrency=args.concurrency)
    if is_embedded_broker(settings.broker_url):
        declare_queues(queues)
    if args.metrics_port is not None:
        from worker.exporter import serve

        serve(args.metrics_port, context.worker_id)
    app = get_celery_app()
    celery_worker = app.Worker(
        hostname=context.worker_id,
        queues=queues,
        concurrency=args.concurrency or max(1, context.gpus),
        pool="threads",
        loglevel="DEBUG" if logging.getLogger().isEnabledFor(logging.DEBUG) else "INFO",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        optimization="fair",
    )
    celery_worker.start()
    return int(celery_worker.exitcode or 0)


# --------------------------------------------------------------------------- parsers


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``worker`` to the ``livt`` command."""
    work = subparsers.add_parser(
        "worker",
        help="run a job worker (production: one per GPU host)",
        description="Take jobs from the given Celery queues and run them as child processes.",
    )
    work.add_argument(
        "--queues",
        type=_queues,
        metavar="Q1,Q2",
        help="queues to take jobs from (default: LIVT_DEFAULT_QUEUE)",
    )
    work.add_argument(
        "--gpus",
        type=_non_negative,
        metavar="N",
        help="GPUs this worker hands out (default: those visible; 0 = run jobs on the CPU)",
    )
    work.add_argument(
        "--concurrency",
        type=_positive,
        metavar="N",
        help="jobs run at once, each with its own GPUs (default: one per GPU, 1 without GPUs)",
    )
    work.add_argument(
        "--name",
        metavar="NAME",
        help="worker id, NAME@host (default: livt@<hostname>); unique per running worker, "
        "the same across restarts",
    )
    work.add_argument(
        "--metrics-port",
        type=_positive,
        metavar="PORT",
        help="serve Prometheus metrics (GPU utilisation and memory, the process) on this port",
    )
    work.set_defaults(func=worker_command)
