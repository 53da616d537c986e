"""``livt db upgrade``, ``livt token create`` and the bootstrap token."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient

from api.db import alembic_config, current_revision
from api.main import create_app
from livt.cli import main

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
    from api.settings import get_settings

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
