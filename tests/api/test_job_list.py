"""``GET /jobs`` filters (tag, dataset, loss, model, name substring) and result orders
(``sort=-few``), paged by their keyset cursors, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest


def _result(overall: float | None, few: float | None) -> dict:
    return {"overall": overall, "many": 80.0, "medium": 50.0, "few": few, "per_class": []}


@pytest.fixture
def ranked(make_job, user):
    """Six finetune jobs with distinct few accuracies (two tied, one without a result) and a
    pretrain; created in this order, a second apart."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    specs = [
        ("alpha bal_bce", "bal_bce", ["tau", "seed:0"], 70.0, 30.0),
        ("beta bal_bce", "bal_bce", ["tau"], 72.0, 41.5),
        ("gamma ce", "ce", ["base_ce"], 75.0, 12.0),
        ("delta ce", "ce", [], 68.0, 41.5),
        ("Epsilon_1 ce", "ce", ["tau_x"], 60.0, 55.0),
        ("zeta running", "bal_bce", ["tau"], None, None),
    ]
    jobs = []
    for index, (name, loss, tags, overall, few) in enumerate(specs):
        running = overall is None
        jobs.append(
            make_job(
                kind="finetune",
                status="running" if running else "succeeded",
                name=name,
                loss=loss,
                tags=tags,
                result=None if running else _result(overall, few),
                created_at=start + timedelta(seconds=index),
            )
        )
    jobs.append(make_job(kind="pretrain", status="succeeded", name="mgp", created_at=start))
    return {j.name: j for j in jobs}


def _names(client, user, query: str) -> list[str]:
    response = client.get(f"/jobs?{query}", headers=user.headers)
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


def _all_pages(client, user, query: str, limit: int) -> list[str]:
    names, cursor = [], None
    while True:
        path = f"/jobs?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(path, headers=user.headers).json()
        names += [i["name"] for i in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return names


def test_filters_combine(client, user, ranked) -> None:
    assert _names(client, user, "tag=tau") == ["zeta running", "beta bal_bce", "alpha bal_bce"]
    # a tag is matched whole: "tau" is not "tau_x", and "_" is no wildcard
    assert _names(client, user, "tag=tau_x") == ["Epsilon_1 ce"]
    assert _names(client, user, "tag=seed:0") == ["alpha bal_bce"]
    assert _names(client, user, "loss=ce&q=A") == ["delta ce", "gamma ce"]
    assert _names(client, user, "q=n_1") == ["Epsilon_1 ce"]
    assert _names(client, user, "q=%25") == []
    assert _names(client, user, "kind=pretrain") == ["mgp"]
    dataset = ranked["mgp"].dataset
    assert len(_names(client, user, f"dataset={dataset}")) == 7
    assert _names(client, user, "dataset=other") == []
    model = ranked["mgp"].model
    assert _names(client, user, f"model={model}&kind=pretrain") == ["mgp"]


def test_result_sort_pages_through_ties_and_missing_values(client, user, ranked) -> None:
    by_few = ["Epsilon_1 ce", "delta ce", "beta bal_bce", "alpha bal_bce", "gamma ce"]
    tied = sorted(["delta ce", "beta bal_bce"], key=lambda n: ranked[n].id, reverse=True)
    by_few[1:3] = tied
    first = _names(client, user, "sort=-few&kind=finetune")
    assert first == [*by_few, "zeta running"]
    for limit in (1, 2, 4):
        assert _all_pages(client, user, "sort=-few&kind=finetune", limit) == first
    ascending = _all_pages(client, user, "sort=few&kind=finetune", 2)
    assert ascending == [*reversed(by_few), "zeta running"]
    overall = _all_pages(client, user, "sort=-overall&loss=ce", 1)
    assert overall == ["gamma ce", "delta ce", "Epsilon_1 ce"]
    item = client.get("/jobs?sort=-few&limit=1", headers=user.headers).json()["items"][0]
    assert item["result"]["few"] == 55.0
    # newest first, also when paged, is still the default; oldest first on request
    newest = _all_pages(client, user, "kind=finetune", 4)
    assert newest[0] == "zeta running" and newest[-1] == "alpha bal_bce"
    assert _all_pages(client, user, "kind=finetune&sort=created_at", 4) == newest[::-1]


@pytest.mark.parametrize(
    ("query", "param", "named"),
    [
        ("sort=best", "sort", "-few"),
        ("loss=focal", "loss", "bal_bce"),
        ("model=resnet9", "model", "vit_"),
        ("tag=no%20spaces", "tag", ""),
        ("q=a%00b", "q", ""),
        ("dataset=%00", "dataset", ""),
        ("sort=-few&cursor=bm90IGEgY3Vyc29y", "cursor", "same sort"),
    ],
)
def test_bad_sort_and_filters_name_the_parameter(client, user, query, param, named) -> None:
    response = client.get(f"/jobs?{query}", headers=user.headers)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(e["loc"] == ["query", param] and named in e["msg"] for e in errors), errors


def test_a_cursor_of_one_sort_is_refused_by_another(client, user, ranked) -> None:
    cursor = client.get("/jobs?limit=1", headers=user.headers).json()["next_cursor"]
    response = client.get(f"/jobs?sort=-few&cursor={cursor}", headers=user.headers)
    assert response.status_code == 422
    few_cursor = client.get("/jobs?sort=-few&limit=1", headers=user.headers).json()
    response = client.get(
        f"/jobs?sort=-overall&cursor={few_cursor['next_cursor']}", headers=user.headers
    )
    assert response.status_code == 422
