"""The ``livt`` console script.

Each layer contributes its own sub-commands through an ``add_commands(subparsers)`` function, so
that this module stays a thin dispatcher and ``livt train`` never imports the service stack:

- ``livt_core.cli``: ``train``
- ``api.commands``: ``db``, ``token``
- ``worker.commands``: ``serve``, ``worker``, ``demo``
- ``livt.client_cli``: ``submit``, ``jobs``, ``show``, ``logs``, ``cancel``, ``retry``, ``wait``,
  ``results``

A handler is stored as ``func`` on its parser and returns the process exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMAND_MODULES = ("livt_core.cli", "api.commands", "worker.commands", "livt.client_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livt",
        description="Long-tailed ViT training (LiVT): library runs, the job service and its client.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
