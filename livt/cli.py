"""The ``livt`` console script.

Each layer contributes its own sub-commands through an ``add_commands(subparsers)`` function, so
that this module stays a thin dispatcher and ``livt train`` never imports the service stack:

- ``livt_core.cli``: ``train``
- ``api.commands``: ``db``, ``token``
- ``livt.serve``: ``serve``, ``demo``
- ``worker.commands``: ``worker``
- ``livt.client_cli``: ``submit``, ``jobs``, ``show``, ``logs``, ``cancel``, ``retry``, ``wait``,
  ``results``, ``download``, ``datasets``, ``pipeline``, ``webhooks``, ``export``
- ``livt.completion``: ``completion`` (a bash / zsh completion script)
- ``livt.sweeps_cli``: ``sweep``
- ``livt.tags_cli``: ``tag``

Output closed early (``livt jobs --json | head -1``) ends the command quietly with status 141
(128 + SIGPIPE, as a shell reports it), without a traceback.

A handler is stored as ``func`` on its parser and returns the process exit status. ``main`` imports
only the module of the command it runs (``COMMANDS``), so a client command does not pay for
importing torch; ``livt --help`` imports them all.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "livt_core.cli",
    "api.commands",
    "livt.serve",
    "worker.commands",
    "livt.client_cli",
    "livt.completion",
    "livt.sweeps_cli",
    "livt.tags_cli",
)
#: The module that registers each top-level command.
COMMANDS = {
    "train": "livt_core.cli",
    **dict.fromkeys(("db", "token"), "api.commands"),
    **dict.fromkeys(("serve", "demo"), "livt.serve"),
    "worker": "worker.commands",
    **dict.fromkeys(
        (
            "submit",
            "jobs",
            "show",
            "logs",
            "cancel",
            "retry",
            "wait",
            "results",
            "download",
            "datasets",
            "pipeline",
            "webhooks",
            "export",
        ),
        "livt.client_cli",
    ),
    "completion": "livt.completion",
    "sweep": "livt.sweeps_cli",
    "tag": "livt.tags_cli",
}


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livt",
        description="Long-tailed ViT training (LiVT): library runs, the job service and its client.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        importlib.import_module(name).add_commands(sub)
    return parser


EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # a pipe closed early fails here, not at interpreter exit
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    return code


def _silence_stdout() -> None:
    """Points stdout at /dev/null so the flush at exit does not report the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
        pass


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    module = COMMANDS.get(command or "")
    parser = build_parser((module,) if module else COMMAND_MODULES)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # one line per HTTP request drowns the progress of `livt demo` / `wait`
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
