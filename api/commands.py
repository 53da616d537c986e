"""``livt db upgrade`` and ``livt token create``: the service's administration commands.

Imports stay inside the handlers so that ``livt --help`` does not load the service stack.
"""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger(__name__)


def _db_upgrade(args: argparse.Namespace) -> int:
    from livt_service.db import upgrade_database

    upgrade_database(args.url, args.revision)
    return 0


def _token_create(args: argparse.Namespace) -> int:
    from api.services.users import create_token, get_or_create_user
    from livt_core.errors import ConfigError
    from livt_service.db import session_scope, upgrade_database
    from livt_service.settings import get_settings

    if args.url is None and get_settings().embedded:
        upgrade_database()  # the embedded database may not exist before the first `livt serve`
    try:
        with session_scope(args.url) as session:
            user = get_or_create_user(session, args.name, admin=args.admin)
            token = create_token(session, user)
            role = "admin" if user.is_admin else "user"
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    sys.stdout.write(f"API token for {args.name} ({role}); it is shown only once:\n{token}\n")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``db`` and ``token`` to the ``livt`` command."""
    db = subparsers.add_parser("db", help="manage the service database")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply the migrations (alembic upgrade)")
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.add_argument("--url", help="database URL (default: LIVT_DATABASE_URL)")
    upgrade.set_defaults(func=_db_upgrade)

    token = subparsers.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = token_sub.add_parser(
        "create", help="create a token (and its user if needed); printed on the last line"
    )
    create.add_argument("--name", required=True, help="user name (created if new)")
    create.add_argument("--admin", action="store_true", help="the user sees and acts on all jobs")
    create.add_argument("--url", help="database URL (default: LIVT_DATABASE_URL)")
    create.set_defaults(func=_token_create)
