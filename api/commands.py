"""``livt db upgrade`` and ``livt token create|list|revoke``: the service's administration
commands. They work on the database directly (run them where the service runs).

Imports stay inside the handlers so that ``livt --help`` does not load the service stack.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime

logger = logging.getLogger(__name__)


def _db_upgrade(args: argparse.Namespace) -> int:
    from livt_service.db import upgrade_database

    upgrade_database(args.url, args.revision)
    return 0


def _prepare(url: str | None) -> None:
    from livt_service.db import upgrade_database
    from livt_service.settings import get_settings

    if url is None and get_settings().embedded:
        upgrade_database()  # the embedded database may not exist before the first `livt serve`


def _token_create(args: argparse.Namespace) -> int:
    from api.services.users import create_token, get_or_create_user, parse_duration
    from livt_core.errors import ConfigError
    from livt_service.db import session_scope
    from livt_service.models import utcnow

    try:
        expires_at = utcnow() + parse_duration(args.expires_in) if args.expires_in else None
        _prepare(args.url)
        with session_scope(args.url) as session:
            user = get_or_create_user(session, args.name, admin=args.admin)
            token = create_token(session, user, expires_at=expires_at)
            role = "admin" if user.is_admin else "user"
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    until = f", expires {_when(expires_at)}" if expires_at else ""
    sys.stdout.write(
        f"API token for {args.name} ({role}{until}); it is shown only once:\n{token}\n"
    )
    return 0


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _token_list(args: argparse.Namespace) -> int:
    from api.services.users import list_tokens
    from livt_service.db import session_scope

    _prepare(args.url)
    with session_scope(args.url) as session:
        tokens = list_tokens(session, None, user_name=args.user, status=args.status)
        items = [
            {
                "id": t.id,
                "user": t.user.name,
                "admin": t.user.is_admin,
                "prefix": t.prefix,
                "status": t.status(),
                "created_at": _when(t.created_at),
                "last_used_at": _when(t.last_used_at),
                "expires_at": _when(t.expires_at),
            }
            for t in tokens
        ]
    if args.quiet:
        sys.stdout.write("".join(f"{t['id']}\n" for t in items))
        return 0
    if args.output == "json":
        sys.stdout.write(json.dumps(items, indent=2) + "\n")
        return 0
    header = ("ID", "USER", "PREFIX", "STATUS", "CREATED", "LAST USED", "EXPIRES")
    rows = [
        (
            str(t["id"]),
            t["user"] + (" (admin)" if t["admin"] else ""),
            t["prefix"],
            t["status"],
            t["created_at"],
            t["last_used_at"],
            t["expires_at"],
        )
        for t in items
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        sys.stdout.write(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
        )
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from api.errors import ServiceError
    from api.services.users import list_tokens, revoke_token
    from livt_service.db import session_scope

    if not args.tokens and args.user is None:
        logger.error("name the tokens to revoke (ids or prefixes), or give --user NAME")
        return 2
    _prepare(args.url)
    status = 0
    with session_scope(args.url) as session:
        refs: list[str | int] = list(args.tokens)
        if args.user is not None:
            owned = list_tokens(session, None, user_name=args.user, status="active")
            if not owned:
                logger.error("user %s has no active token", args.user)
                status = 2
            refs += [t.id for t in owned]
        for ref in refs:
            try:
                token = revoke_token(session, None, ref)
            except ServiceError as exc:
                logger.error("%s", exc.detail if isinstance(exc.detail, str) else exc)
                status = 2
                continue
            sys.stdout.write(
                f"revoked token {token.id} ({token.prefix}) of {token.user.name} at "
                f"{_when(token.revoked_at)}\n"
            )
    return status


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
    create.add_argument(
        "--expires-in",
        metavar="DURATION",
        help="the token stops working after this long: 90m, 12h, 30d, 2w (default: never)",
    )
    create.add_argument("--url", help="database URL (default: LIVT_DATABASE_URL)")
    create.set_defaults(func=_token_create)

    listing = token_sub.add_parser("list", help="list tokens (ids, prefixes, status, expiry)")
    listing.add_argument("--user", help="only this user's tokens")
    output = listing.add_mutually_exclusive_group()
    output.add_argument("--output", choices=("table", "json"), default="table")
    output.add_argument("--json", dest="output", action="store_const", const="json")
    output.add_argument("-q", "--quiet", action="store_true", help="print only token ids")
    listing.add_argument(
        "--status", choices=("active", "expired", "revoked"), help="only tokens in this state"
    )
    listing.add_argument("--url", help="database URL (default: LIVT_DATABASE_URL)")
    listing.set_defaults(func=_token_list)

    revoke = token_sub.add_parser("revoke", help="revoke tokens: they answer 401 from then on")
    revoke.add_argument(
        "tokens", nargs="*", metavar="TOKEN", help="token ids or prefixes (see `livt token list`)"
    )
    revoke.add_argument("--user", help="revoke every active token of this user")
    revoke.add_argument("--url", help="database URL (default: LIVT_DATABASE_URL)")
    revoke.set_defaults(func=_token_revoke)
