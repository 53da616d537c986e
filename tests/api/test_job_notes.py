"""``PATCH /jobs/{id}`` (name, tags, notes) and ``DELETE /jobs/{id}``."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_patch_sets_name_tags_and_notes(client, user, make_job):
    job = make_job(status="succeeded")
    url = f"/jobs/{job.id}"
    response = client.patch(
        url,
        json={"name": "mgp base", "tags": ["mgp", "fmnist"], "notes": "ok"},
        headers=user.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["tags"], body["notes"]) == ("mgp base", ["mgp", "fmnist"], "ok")
    cleared = client.patch(url, json={"notes": None}, headers=user.headers).json()
    assert cleared["notes"] is None and cleared["tags"] == ["mgp", "fmnist"]
    listed = client.get("/jobs", headers=user.headers).json()["items"][0]
    assert listed["tags"] == ["mgp", "fmnist"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"tags": ["a b"]}, ["body", "tags", 0]),
        ({"tags": ["x", "x"]}, ["body", "tags"]),
        ({"owner": "bob"}, ["body", "owner"]),
    ],
)
def test_patch_bad_field_is_422(client, user, make_job, body, loc):
    job = make_job()
    response = client.patch(f"/jobs/{job.id}", json=body, headers=user.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


def test_patch_and_delete_of_another_users_job_are_404(client, user, make_job, make_user):
    job = make_job(status="succeeded")
    bob = make_user("bob")
    assert (
        client.patch(f"/jobs/{job.id}", json={"name": "x"}, headers=bob.headers).status_code == 404
    )
    assert client.delete(f"/jobs/{job.id}", headers=bob.headers).status_code == 404


def test_delete_removes_a_finished_job_and_its_artifacts(client, user, make_job, admin):
    job = make_job(status="succeeded")
    folder = Path(job.artifact_dir)
    folder.mkdir(parents=True)
    (folder / "results.json").write_text("{}")
    assert client.delete(f"/jobs/{job.id}", headers=user.headers).status_code == 204
    assert client.get(f"/jobs/{job.id}", headers=user.headers).status_code == 404
    assert not folder.exists()
    other = make_job(status="failed")
    assert client.delete(f"/jobs/{other.id}", headers=admin.headers).status_code == 204


def test_delete_refuses_unfinished_jobs_and_jobs_others_start_from(client, user, make_job):
    running = make_job(status="running")
    response = client.delete(f"/jobs/{running.id}", headers=user.headers)
    assert response.status_code == 409 and "running" in response.json()["detail"]
    pretrain = make_job(status="succeeded")
    child = make_job(kind="finetune", status="queued", depends_on=pretrain.id)
    response = client.delete(f"/jobs/{pretrain.id}", headers=user.headers)
    assert response.status_code == 409 and child.id in response.json()["detail"]
