"""Request bodies: size, JSON depth and key limits, and the token check before the body is read.

The first tests run against a real ``livt serve --no-worker`` (uvicorn), where reading a body
and stalling the event loop are real; the last ones check the settings and the JSON scan in
process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.request_limits import BodyLimits, BodyRejected, check_json_shape
from tests.live_server import LiveServer
from tests.raw_http import HealthWatch, many_keys_body, send_request

#: For checks that do not depend on the database backend: run them on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

PRETRAIN = {"kind": "pretrain", "preset": "fashion-mnist-lt", "epochs": 1}
MIB = 1024 * 1024
#: A job spec of 1.2 M keys, 20 MB: twenty times the default limit.
BIG_KEYS = 1_200_000


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer.start(tmp_path_factory.mktemp("limits"), worker=False) as server:
        yield server


@pytest.fixture(scope="module")
def auth(live: LiveServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {live.create_token('alice')}"}


@pytest.fixture(scope="module")
def big_body() -> bytes:
    return many_keys_body(BIG_KEYS)


# --------------------------------------------------------------------------------------------
# against uvicorn


@pytest.mark.slow
def test_oversize_body_is_413_at_once_while_healthz_keeps_answering(live, auth, big_body):
    with HealthWatch(live.url) as watch:
        response = send_request(live.url, "POST", "/jobs", big_body, headers=auth, timeout=30)
    assert response.status == 413
    assert "LIVT_MAX_BODY_BYTES" in json.loads(response.body)["detail"]
    assert response.headers["connection"] == "close"
    assert response.seconds < 5
    assert response.sent < len(big_body)  # answered before the body was all there
    assert watch.failures == 0 and watch.worst < 2.0, watch.latencies


@pytest.mark.slow
def test_declared_oversize_length_is_413_before_any_body_byte(live, auth):
    response = send_request(
        live.url, "POST", "/jobs", b"", headers=auth, content_length=52_000_000, timeout=10
    )
    assert response.status == 413
    assert response.sent == 0


@pytest.mark.slow
def test_oversize_chunked_body_is_413_once_the_limit_is_passed(live, auth, big_body):
    with HealthWatch(live.url) as watch:
        response = send_request(
            live.url, "POST", "/jobs", big_body, headers=auth, chunked=True, timeout=30
        )
    assert response.status == 413
    assert "LIVT_MAX_BODY_BYTES" in json.loads(response.body)["detail"]
    assert response.seconds < 5
    assert response.sent < len(big_body)
    assert watch.failures == 0 and watch.worst < 2.0, watch.latencies


@pytest.mark.slow
@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "missing API token"),
        ({"Authorization": "Bearer livt_not-a-real-token"}, "invalid API token"),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "missing API token"),
    ],
)
def test_post_without_a_valid_token_is_401_without_reading_the_body(live, headers, says):
    # only the headers go out: the answer cannot have waited for the body
    response = send_request(
        live.url, "POST", "/jobs", b"", headers=headers, content_length=52_000_000, timeout=10
    )
    assert response.status == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert says in json.loads(response.body)["detail"]


@pytest.mark.slow
def test_unauthenticated_oversize_post_is_401_at_once(live, big_body):
    with HealthWatch(live.url) as watch:
        response = send_request(live.url, "POST", "/jobs", big_body, timeout=30)
    assert response.status == 401
    assert response.seconds < 5
    assert response.sent < len(big_body)
    assert watch.worst < 2.0, watch.latencies


@pytest.mark.slow
def test_deeply_nested_json_is_422_naming_the_limit(live, auth):
    depth = 100_000
    body = b'{"kind": "pretrain", "data": ' + b"[" * depth + b"]" * depth + b"}"
    response = send_request(live.url, "POST", "/jobs", body, headers=auth, timeout=30)
    assert response.status == 422
    (error,) = json.loads(response.body)["detail"]
    assert error["loc"] == ["body"] and error["type"] == "json_too_deep"
    assert "32 levels" in error["msg"] and "LIVT_MAX_JSON_DEPTH" in error["msg"]


@pytest.mark.slow
def test_json_with_too_many_keys_is_422_naming_the_limit(live, auth):
    body = many_keys_body(50_000)  # 850 kB: under the size limit
    assert len(body) < MIB
    response = send_request(live.url, "POST", "/jobs", body, headers=auth, timeout=30)
    assert response.status == 422
    (error,) = json.loads(response.body)["detail"]
    assert error["type"] == "json_too_many_keys"
    assert "10000 object keys" in error["msg"] and "LIVT_MAX_JSON_KEYS" in error["msg"]
    assert response.seconds < 3


@pytest.mark.slow
def test_json_with_too_many_array_items_is_422_at_once(live, auth):
    # 150 000 bad list items once cost 16 s and a 14 MB answer of one error each
    body = json.dumps({**PRETRAIN, "data": {"mean": [[]] * 150_000}}).encode()
    with HealthWatch(live.url) as watch:
        response = send_request(live.url, "POST", "/jobs", body, headers=auth, timeout=60)
    assert response.status == 422
    (error,) = json.loads(response.body)["detail"]
    assert error["type"] == "json_too_many_items" and "LIVT_MAX_JSON_ITEMS" in error["msg"]
    assert response.seconds < 3
    assert watch.worst < 2.0, watch.latencies


@pytest.mark.slow
def test_a_422_lists_at_most_50_problems(live, auth):
    body = json.dumps({**PRETRAIN, "data": {"mean": ["x"] * 5000}}).encode()
    response = send_request(live.url, "POST", "/jobs", body, headers=auth, timeout=60)
    assert response.status == 422
    detail = json.loads(response.body)["detail"]
    assert len(detail) == 51
    assert detail[-1]["type"] == "more_errors" and "4950 more" in detail[-1]["msg"]


@pytest.mark.slow
def test_normal_requests_still_work(live, auth):
    spec = json.dumps({**PRETRAIN, "name": "ok"}).encode()
    created = send_request(live.url, "POST", "/jobs", spec, headers=auth, timeout=30)
    assert created.status == 201, created.body
    chunked = send_request(live.url, "POST", "/jobs", [spec], headers=auth, chunked=True)
    assert chunked.status == 201, chunked.body
    stages = {"stages": [PRETRAIN, {**PRETRAIN, "kind": "finetune"}]}
    pipeline = send_request(
        live.url, "POST", "/pipelines", json.dumps(stages).encode(), headers=auth, timeout=30
    )
    assert pipeline.status == 201, pipeline.body
    listed = send_request(live.url, "GET", "/jobs", b"", headers=auth, timeout=30)
    assert listed.status == 200
    assert len(json.loads(listed.body)["items"]) == 4


# --------------------------------------------------------------------------------------------
# in process


@pytest.fixture
def small_limits(settings):
    limited = settings.model_copy(
        update={
            "max_body_bytes": 2048,
            "max_json_depth": 6,
            "max_json_keys": 120,
            "max_json_items": 100,
        }
    )
    with TestClient(create_app(limited)) as client:
        yield client


@SQLITE_ONLY
def test_the_limits_are_settings(small_limits, user):
    fits = {**PRETRAIN, "name": "x" * 100}
    assert small_limits.post("/jobs", json=fits, headers=user.headers).status_code == 201
    too_big = small_limits.post(
        "/jobs", json={**PRETRAIN, "name": "x" * 3000}, headers=user.headers
    )
    assert too_big.status_code == 413
    assert "2048 bytes" in too_big.json()["detail"]
    deep = small_limits.post(
        "/jobs", json={**PRETRAIN, "data": {"a": [[[[[1]]]]]}}, headers=user.headers
    )
    assert deep.status_code == 422 and "6 levels" in deep.json()["detail"][0]["msg"]
    keys = {**PRETRAIN, **{f"k{i}": 0 for i in range(130)}}
    many = small_limits.post("/jobs", json=keys, headers=user.headers)
    assert many.status_code == 422 and "120 object keys" in many.json()["detail"][0]["msg"]
    items = {**PRETRAIN, "data": {"mean": [0.5] * 101}}
    long = small_limits.post("/jobs", json=items, headers=user.headers)
    assert long.status_code == 422 and "100 array items" in long.json()["detail"][0]["msg"]


@SQLITE_ONLY
def test_oversize_requests_are_counted_in_the_metrics(small_limits, admin):
    small_limits.post("/jobs", content=b"x" * 4096, headers=admin.headers)
    metrics = small_limits.get("/metrics", headers=admin.headers).text
    assert 'livt_http_requests_total{method="POST",route="unmatched",status="413"} 1.0' in metrics


@SQLITE_ONLY
def test_public_paths_skip_the_token_check_but_not_the_size_limit(small_limits):
    assert small_limits.post("/healthz", json={"a": 1}).status_code == 405
    assert small_limits.post("/healthz", content=b"x" * 4096).status_code == 413


@SQLITE_ONLY
def test_a_database_outage_is_left_to_the_route_and_the_size_limit_still_holds(settings, tmp_path):
    folder = tmp_path / "not-a-database"
    folder.mkdir()
    broken = settings.model_copy(update={"database_url": f"sqlite:///{folder}"})
    client = TestClient(create_app(broken), raise_server_exceptions=False)  # no lifespan
    headers = {"Authorization": "Bearer livt_some-token"}
    # the token cannot be checked: that is not reported as a bad token
    small = client.post("/jobs", json=PRETRAIN, headers=headers)
    assert small.status_code != 401
    oversize = client.post("/jobs", content=b"[" + b"0," * MIB + b"0]", headers=headers)
    assert oversize.status_code == 413


@SQLITE_ONLY
@pytest.mark.parametrize(
    "settings_value",
    [{"max_body_bytes": 10}, {"max_json_depth": 1}, {"max_json_keys": 0}, {"max_json_items": 5}],
)
def test_limit_settings_have_floors(settings, settings_value):
    from pydantic import ValidationError

    from livt_service.settings import Settings

    with pytest.raises(ValidationError, match=next(iter(settings_value))):
        Settings(**{**settings.model_dump(), **settings_value})


LIMITS = BodyLimits(max_bytes=MIB, max_json_depth=3, max_json_keys=3, max_json_items=6)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "b": {"c": [1, 2]}}',  # 3 keys, 3 levels
        '{"a": "{[{[{[", "b": "x:y", "c": "\\"d\\": 1"}',  # brackets, colons, quotes in strings
        '[[["a", "b"]]]',
        '[1, "a,b", {"c": [2]}, [], null]',  # 5 + 1 items; a comma in a string is none
        '"unterminated [[[[',
        "",
    ],
)
def test_json_scan_accepts_bodies_within_the_limits(text):
    check_json_shape(text.encode(), LIMITS)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('{"a": 1, "b": 2, "c": 3, "d": 4}', "json_too_many_keys"),
        ('{"a": {"b": {"c": 1}}, "d": {"e": 1}}', "json_too_many_keys"),  # keys of every level
        ("[[[[]]]]", "json_too_deep"),
        ('{"a": [{"b": [1]}]}', "json_too_deep"),
        ("[1, 2, 3, 4, 5, 6, 7]", "json_too_many_items"),
        ('[["a", "b", "c"], ["d", "e"], []]', "json_too_many_items"),  # 3 + 3 + 2 items
        ("[1, 2, 3, 4, 5, 6, 7", "json_too_many_items"),  # after the last bracket, too
    ],
)
def test_json_scan_refuses_bodies_over_the_limits(text, kind):
    with pytest.raises(BodyRejected) as caught:
        check_json_shape(text.encode(), LIMITS)
    assert caught.value.status == 422 and caught.value.type == kind


def test_json_scan_is_linear_on_hostile_text():
    import time

    hostile = [
        b'"' + b'\\"' * 500_000,
        b'"\\' * 500_000,
        b"[]" * 500_000,
        b'"a"' * 300_000,
        b"{" + b'"a": {}, ' * 100_000 + b"}",
    ]
    for body in hostile:
        start = time.perf_counter()
        check_json_shape(body, BodyLimits(MIB, 32, 10**9, 10**9))
        assert time.perf_counter() - start < 2.0
