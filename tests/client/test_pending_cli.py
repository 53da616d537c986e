"""``livt show`` and ``livt jobs`` print why a queued job waits and what it runs on (the
client's commands against the real app, in-process through FastAPI's TestClient)."""

from __future__ import annotations

import argparse
import re

from livt import client_cli
from livt.client import LivtClient


def _livt(client, user) -> LivtClient:
    livt = LivtClient("http://testserver", user.token)
    livt._http.close()
    client.headers["Authorization"] = f"Bearer {user.token}"
    livt._http = client  # a TestClient is an httpx.Client talking to the app itself
    return livt


def test_show_and_jobs_print_the_pending_reason_and_cpu(
    client, user, make_job, make_worker, capsys
):
    make_worker(gpus=0, queues=["default"])
    waiting = make_job(queue="default", devices="cpu")
    livt = _livt(client, user)
    client_cli._show(livt, argparse.Namespace(job_id=waiting.id, json=False, config=False))
    out = capsys.readouterr().out
    assert "default (CPU)" in out
    assert re.search(r"^waiting +workers busy \(position 1 in 'default'\)$", out, re.M), out
    args = argparse.Namespace(status=None, kind=None, limit=10, cursor=None, json=False)
    client_cli._jobs(livt, args)
    row = next(line for line in capsys.readouterr().out.splitlines() if waiting.id in line)
    assert "workers busy (position 1 in 'default')" in row
