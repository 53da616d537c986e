"""API tokens: expiry, ``GET /tokens`` and ``POST /tokens/{token}/revoke``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.services.users import create_token, get_or_create_user
from livt_service.models import ApiToken

#: For checks that do not depend on the database backend: run them on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def token_expiring(db):
    """``token_expiring(name, at)`` → a token of a new user ``name`` that expires at ``at``."""

    def make(name: str, at: datetime) -> str:
        with db() as session:
            return create_token(session, get_or_create_user(session, name), expires_at=at)

    return make


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------------------------
# expiry


def test_expired_token_is_401_saying_it_expired(client, token_expiring):
    token = token_expiring("dave", datetime.now(UTC) - timedelta(seconds=1))
    response = client.get("/jobs", headers=_bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    detail = response.json()["detail"]
    assert "expired at" in detail and "livt token create" in detail


def test_token_that_expires_later_works_until_then(client, token_expiring, db):
    token = token_expiring("erin", datetime.now(UTC) + timedelta(hours=1))
    assert client.get("/jobs", headers=_bearer(token)).status_code == 200
    with db() as session:
        session.query(ApiToken).filter_by(prefix=token[:12]).update(
            {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}
        )
    assert client.get("/jobs", headers=_bearer(token)).status_code == 401


@SQLITE_ONLY
def test_revoked_token_is_401_saying_it_was_revoked(client, user):
    tokens = client.get("/tokens", headers=user.headers).json()["items"]
    client.post(f"/tokens/{tokens[0]['id']}/revoke", headers=user.headers)
    response = client.get("/jobs", headers=user.headers)
    assert response.status_code == 401
    assert "revoked at" in response.json()["detail"]


# --------------------------------------------------------------------------------------------
# listing


def test_list_tokens_shows_a_user_their_own_tokens(client, user, make_user, token_expiring):
    make_user("bob")
    response = client.get("/tokens", headers=user.headers)
    assert response.status_code == 200
    items = response.json()["items"]
    assert [t["user"] for t in items] == ["alice"]
    (mine,) = items
    assert mine["status"] == "active"
    assert user.token.startswith(mine["prefix"]) and len(mine["prefix"]) == 12
    assert mine["expires_at"] is None and mine["revoked_at"] is None
    assert mine["last_used_at"] is not None  # this request used it
    assert user.token not in response.text


def test_admin_lists_every_token_and_filters_by_user_and_status(
    client, admin, user, token_expiring
):
    token_expiring("frank", datetime.now(UTC) - timedelta(minutes=1))
    everyone = client.get("/tokens", headers=admin.headers).json()["items"]
    assert {t["user"] for t in everyone} == {"root", "alice", "frank"}
    only_alice = client.get("/tokens?user=alice", headers=admin.headers).json()["items"]
    assert [t["user"] for t in only_alice] == ["alice"]
    expired = client.get("/tokens?status=expired", headers=admin.headers).json()["items"]
    assert [(t["user"], t["status"]) for t in expired] == [("frank", "expired")]


@SQLITE_ONLY
def test_list_tokens_with_an_unknown_status_is_422(client, user):
    response = client.get("/tokens?status=lost", headers=user.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "status"]


def test_list_tokens_needs_a_token(client):
    assert client.get("/tokens").status_code == 401


# --------------------------------------------------------------------------------------------
# revoking


def _token_id(client, owner) -> int:
    return client.get("/tokens", headers=owner.headers).json()["items"][0]["id"]


def test_user_revokes_their_own_token(client, user, make_user):
    spare = make_user("alice")  # a second token of alice
    token_id = _token_id(client, user)
    response = client.post(f"/tokens/{token_id}/revoke", headers=spare.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == token_id and body["status"] == "revoked" and body["revoked_at"]
    assert client.get("/jobs", headers=user.headers).status_code == 401
    assert client.get("/jobs", headers=spare.headers).status_code == 200


def test_user_cannot_revoke_someone_elses_token(client, user, make_user):
    bob = make_user("bob")
    response = client.post(f"/tokens/{_token_id(client, bob)}/revoke", headers=user.headers)
    assert response.status_code == 404
    assert client.get("/jobs", headers=bob.headers).status_code == 200


def test_admin_revokes_any_token_by_its_prefix(client, admin, user):
    response = client.post(f"/tokens/{user.token[:12]}/revoke", headers=admin.headers)
    assert response.status_code == 200
    assert response.json()["user"] == "alice"
    assert client.get("/jobs", headers=user.headers).status_code == 401


@SQLITE_ONLY
def test_revoking_twice_keeps_the_first_time(client, admin, user):
    token_id = _token_id(client, user)
    first = client.post(f"/tokens/{token_id}/revoke", headers=admin.headers).json()
    again = client.post(f"/tokens/{token_id}/revoke", headers=admin.headers)
    assert again.status_code == 200
    assert again.json()["revoked_at"] == first["revoked_at"]


@SQLITE_ONLY
def test_revoking_an_unknown_token_is_404(client, admin):
    response = client.post("/tokens/999999/revoke", headers=admin.headers)
    assert response.status_code == 404
    assert "livt token list" in response.json()["detail"]


def test_a_non_ascii_digit_reference_is_a_prefix_not_a_server_error(client, user):
    # '¹'.isdigit() is true but int('¹') fails: the reference is looked up as a prefix
    response = client.post("/tokens/%C2%B9/revoke", headers=user.headers)
    assert response.status_code == 404, response.text


def test_nul_in_a_token_filter_or_reference_is_a_422_naming_it(client, user):
    response = client.get("/tokens", params={"user": "a\x00b"}, headers=user.headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "user"]
    response = client.post("/tokens/a%00b/revoke", headers=user.headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["path", "token"]
