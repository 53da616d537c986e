"""In headless Chromium against a real ``livt serve``: the API docs (Swagger UI, ReDoc) render
from the files shipped in the package with every request off this machine blocked (and none
attempted: the pages' Content-Security-Policy allows this server only), and a job page opened
after the run draws the step curves from the stored step points."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from livt.client import Job, LivtClient
from tests.live_server import TINY_FINETUNE, LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@pytest.fixture
def offline(page):
    """The page with every request to a host other than this machine aborted; yields the list
    of the URLs it tried."""
    tried: list[str] = []

    def route(r) -> None:
        url = r.request.url
        scheme, host = urlsplit(url).scheme, urlsplit(url).hostname
        if scheme in ("data", "blob") or host in LOOPBACK:
            r.continue_()
        else:
            tried.append(url)
            r.abort()

    page.route("**/*", route)
    yield page, tried


def test_swagger_ui_renders_offline_with_the_operation_ids(offline, server: LiveServer) -> None:
    page, tried = offline
    page.goto(f"{server.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("LiVT job service")
    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible()
    assert operations.count() >= 20
    expect(page.locator(".opblock-summary-operation-id", has_text="createJob")).to_have_count(1)
    expect(page.locator(".opblock-summary-operation-id", has_text="exportJob")).to_have_count(1)
    page.locator(".opblock-summary-operation-id", has_text="createJob").click()
    expect(page.locator(".opblock.is-open .opblock-section-request-body")).to_be_visible()
    assert tried == []


def test_redoc_renders_offline(offline, server: LiveServer) -> None:
    page, tried = offline
    response = page.goto(f"{server.url}/redoc")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator("h1", has_text="LiVT job service")).to_be_visible(timeout=30_000)
    expect(page.locator('[data-section-id="operation/createJob"]')).to_be_attached()
    expect(page.locator('[data-section-id="operation/exportJob"]')).to_be_attached()
    assert page.locator('[data-section-id^="operation/"]').count() >= 20
    assert tried == []


@pytest.fixture(scope="module")
def finished(client: LivtClient) -> Job:
    job = client.submit({**TINY_FINETUNE, "name": "ui-steps", "max_steps_per_epoch": 6})
    done = client.wait(job.id, poll=0.5, timeout=300)
    assert done.status == "succeeded"
    return done


def test_job_page_opened_after_the_run_draws_the_stored_step_curves(
    signed_in, server: LiveServer, token: str, finished: Job
) -> None:
    stored = httpx.get(
        f"{server.url}/jobs/{finished.id}/metrics",
        params={"level": "step"},
        headers={"Authorization": f"Bearer {token}"},
    ).json()["items"]
    assert stored and all(p["global_step"] >= 1 for p in stored)
    page = signed_in
    page.goto(f"{server.url}/#/jobs/{finished.id}")
    expect(page.locator("h1 .badge")).to_have_text("succeeded")
    loss = page.locator('#chart-loss path.series-line[data-series="step loss"]')
    expect(loss).to_have_attribute("data-points", str(len(stored)))
    lr = page.locator('#chart-lr path.series-line[data-series="lr (step)"]')
    expect(lr).to_have_attribute("data-points", str(len(stored)))
    # a reload keeps them: they come from the database, not from this page's polling
    page.reload()
    expect(loss).to_have_attribute("data-points", str(len(stored)))
