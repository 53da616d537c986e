"""``livt jobs --tag T --sort few`` and the client's list filters, against the real app
in-process (FastAPI's TestClient as the client's HTTP connection)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from livt import client_cli
from livt.cli import build_parser
from livt.client import LivtApiError, LivtClient


def _livt(client, user) -> LivtClient:
    livt = LivtClient("http://testserver", user.token)
    livt._http.close()
    client.headers["Authorization"] = f"Bearer {user.token}"
    livt._http = client  # a TestClient is an httpx.Client talking to the app itself
    return livt


@pytest.fixture
def tagged(make_job):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    made = {}
    for index, (name, tags, few) in enumerate(
        [("low", ["tau"], 10.0), ("high", ["tau"], 40.0), ("other", ["x"], 90.0)]
    ):
        result = {"overall": 50.0 + index, "few": few, "per_class": []}
        made[name] = make_job(
            kind="finetune",
            status="succeeded",
            name=name,
            tags=tags,
            result=result,
            created_at=start + timedelta(seconds=index),
        )
    return made


def _jobs(livt: LivtClient, capsys, *argv: str) -> list[str]:
    args = build_parser(["livt.client_cli"]).parse_args(["jobs", *argv])
    assert client_cli._jobs(livt, args) == 0
    return capsys.readouterr().out.strip().splitlines()


def test_jobs_tag_and_sort_few_best_first(client, user, tagged, capsys) -> None:
    livt = _livt(client, user)
    header, *rows = _jobs(livt, capsys, "--tag", "tau", "--sort", "few")
    assert header.split()[-3:] == ["OVERALL", "FEW", "CREATED"]
    assert [r.split()[0] for r in rows] == [tagged["high"].id, tagged["low"].id]
    assert rows[0].split()[-4:-2] == ["51.00", "40.00"]  # overall, few (before the date)
    _, *rows = _jobs(livt, capsys, "--tag", "tau", "--sort", "+few", "--limit", "1")
    assert rows[0].startswith(tagged["low"].id)
    assert rows[-1].startswith("more: livt jobs --limit 1 --tag tau --sort +few --cursor ")


def test_client_filters_and_refusals(client, user, tagged) -> None:
    livt = _livt(client, user)
    ranked = [j.name for j in livt.iter_jobs(sort="-overall", page_size=1)]
    assert ranked == ["other", "high", "low"]
    assert [j.name for j in livt.jobs(q="IG").items] == ["high"]
    with pytest.raises(LivtApiError, match="sort"):
        livt.jobs(sort="best")
