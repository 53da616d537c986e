"""``livt db upgrade``, ``livt token create`` and the bootstrap token."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient

from api.main import create_app
from livt.cli import main
from livt_service.db import alembic_config, current_revision

#: The newest migration revision.
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
#: For checks that do not depend on the database backend: run them on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_db_upgrade_migrates_a_new_database(tmp_path):
    url = f"sqlite:///{tmp_path}/new.sqlite"
    assert main(["db", "upgrade", "--url", url]) == 0
    assert current_revision(url) == HEAD


@SQLITE_ONLY
def test_db_upgrade_uses_the_settings_database(settings, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/from-env.sqlite"
    monkeypatch.setenv("LIVT_DATABASE_URL", url)
    from livt_service.settings import get_settings

    get_settings.cache_clear()
    assert main(["db", "upgrade"]) == 0
    assert current_revision(url) == HEAD


def test_token_create_prints_a_working_token_on_the_last_line(settings, client, capsys):
    assert main(["token", "create", "--name", "carol"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("livt_")
    response = client.get("/jobs", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_token_create_admin_sees_every_job(settings, client, make_job, capsys):
    job = make_job()
    assert main(["token", "create", "--name", "ops", "--admin"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    response = client.get(f"/jobs/{job.id}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_token_create_for_an_existing_user_adds_a_token(settings, client, user, capsys):
    assert main(["token", "create", "--name", user.name]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token != user.token
    for headers in ({"Authorization": f"Bearer {token}"}, user.headers):
        assert client.get("/jobs", headers=headers).status_code == 200


@SQLITE_ONLY
def test_token_create_with_an_invalid_name_fails(settings, capsys):
    assert main(["token", "create", "--name", "no spaces"]) == 2
    assert capsys.readouterr().out == ""


def _last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_token_create_with_expires_in_sets_the_expiry(settings, client, db, capsys):
    from datetime import UTC, datetime, timedelta

    from livt_service.models import ApiToken

    assert main(["token", "create", "--name", "temp", "--expires-in", "2h"]) == 0
    out = capsys.readouterr().out
    assert "expires 20" in out
    token = out.strip().splitlines()[-1]
    with db() as session:
        row = session.query(ApiToken).filter_by(prefix=token[:12]).one()
        expires_at = row.expires_at
    assert abs(expires_at - (datetime.now(UTC) + timedelta(hours=2))) < timedelta(minutes=1)
    assert client.get("/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200


@SQLITE_ONLY
@pytest.mark.parametrize("duration", ["0d", "soon", "-5m", "4000d"])
def test_token_create_with_a_bad_duration_fails(settings, duration, capsys, caplog):
    assert main(["token", "create", "--name", "temp", f"--expires-in={duration}"]) == 2
    assert capsys.readouterr().out == ""
    assert "expires_in" in caplog.text


def test_token_list_shows_each_token_with_its_status(settings, user, make_user, capsys):
    bob = make_user("bob")
    assert main(["token", "revoke", str(bob.token[:12])]) == 0
    capsys.readouterr()
    assert main(["token", "list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["ID", "USER", "PREFIX", "STATUS"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert rows["alice"][2] == user.token[:12] and rows["alice"][3] == "active"
    assert rows["bob"][3] == "revoked"
    assert user.token not in "\n".join(lines)
    assert main(["token", "list", "--user", "bob"]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]] == ["bob"]


def test_token_revoke_by_id_makes_it_401(settings, client, user, db, capsys):
    from livt_service.models import ApiToken

    with db() as session:
        token_id = session.query(ApiToken).filter_by(user_id=user.id).one().id
    assert main(["token", "revoke", str(token_id)]) == 0
    assert f"revoked token {token_id}" in capsys.readouterr().out
    response = client.get("/jobs", headers=user.headers)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


@SQLITE_ONLY
def test_token_revoke_user_revokes_all_their_tokens(settings, client, user, make_user, capsys):
    second = make_user("alice")
    bob = make_user("bob")
    assert main(["token", "revoke", "--user", "alice"]) == 0
    assert capsys.readouterr().out.count("revoked token") == 2
    for headers, code in ((user.headers, 401), (second.headers, 401), (bob.headers, 200)):
        assert client.get("/jobs", headers=headers).status_code == code


@SQLITE_ONLY
def test_token_revoke_of_an_unknown_token_fails(settings, caplog):
    assert main(["token", "revoke", "4242"]) == 2
    assert "token 4242 not found" in caplog.text
    assert main(["token", "revoke"]) == 2


def test_bootstrap_token_becomes_an_admin_token(settings, make_job):
    job = make_job()
    with_token = settings.model_copy(update={"bootstrap_token": "livt_bootstrap-secret"})
    with TestClient(create_app(with_token)) as client:
        headers = {"Authorization": "Bearer livt_bootstrap-secret"}
        assert client.get(f"/jobs/{job.id}", headers=headers).status_code == 200
    with TestClient(create_app(with_token)) as client:  # a restart keeps it, without a copy
        assert client.get("/jobs", headers=headers).status_code == 200


def test_adding_the_commands_imports_nothing_heavy():
    code = (
        "import argparse, sys, api.commands;"
        "api.commands.add_commands(argparse.ArgumentParser().add_subparsers());"
        "print(sorted(m for m in ('sqlalchemy', 'fastapi', 'torch', 'alembic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@SQLITE_ONLY
def test_token_list_json_and_quiet(settings, user, make_user, capsys):
    import json

    bob = make_user("bob", admin=True)
    assert main(["token", "list", "--output", "json"]) == 0
    items = {t["user"]: t for t in json.loads(capsys.readouterr().out)}
    assert items["alice"]["prefix"] == user.token[:12] and items["alice"]["admin"] is False
    assert items["bob"]["admin"] is True and items["bob"]["status"] == "active"
    assert bob.token not in json.dumps(items)
    assert main(["token", "list", "-q", "--user", "bob"]) == 0
    assert capsys.readouterr().out == f"{items['bob']['id']}\n"
