"""The dashboard in headless Chromium against a real ``livt serve`` running real (tiny) jobs."""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import expect

from livt.client import Job, LivtClient
from tests.live_server import TINY_FINETUNE, LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Long enough (tens of seconds) to watch its progress move.
WATCHED = {**TINY_FINETUNE, "name": "ui-watched", "epochs": 4, "max_steps_per_epoch": 8}


@pytest.fixture(scope="module")
def watched(client: LivtClient) -> Job:
    return client.submit(WATCHED)


def row(page, job_id: str):
    return page.locator(f'tr[data-job-id="{job_id}"]')


def test_token_in_url_signs_in_and_disappears(page, server: LiveServer, token: str) -> None:
    page.goto(f"{server.url}/?token={token}#/jobs")
    expect(page.locator("table.jobs-table")).to_be_visible()
    assert "token" not in page.url and page.url.endswith("/#/jobs")
    assert token not in page.content()
    assert page.evaluate("localStorage.getItem('livt.token')") == token


def test_sign_in_form_and_sign_out(page, server: LiveServer, token: str) -> None:
    page.goto(server.url)
    page.evaluate("localStorage.clear()")
    page.reload()
    page.fill("#token-input", "livt_wrong")
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("#sign-in-error")).to_contain_text("not valid")
    page.fill("#token-input", token)
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("table.jobs-table")).to_be_visible()
    page.click("#sign-out")
    expect(page.locator("#sign-in-form")).to_be_visible()
    assert page.evaluate("localStorage.getItem('livt.token')") is None


def test_list_follows_progress_without_reload(signed_in, watched: Job) -> None:
    page = signed_in
    page.evaluate("window.__noReload = true")
    target = row(page, watched.id)
    expect(target).to_be_visible()
    seen = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(seen) < 3:
        seen.add(
            (
                target.get_attribute("data-status"),
                target.locator(".progress").get_attribute("data-fraction"),
            )
        )
        page.wait_for_timeout(500)
    assert len(seen) >= 3, seen  # status and progress changed while we watched
    assert page.evaluate("window.__noReload") is True
    assert target.locator(".badge[data-status]").inner_text() in {"queued", "running", "succeeded"}


def test_list_filters_by_status(signed_in, watched: Job) -> None:
    page = signed_in
    page.select_option("#filter-status", "failed")
    expect(page.locator("td.empty")).to_contain_text("No jobs match")
    page.select_option("#filter-status", "")
    expect(row(page, watched.id)).to_be_visible()


def test_job_page_draws_live_curves_and_results(
    signed_in, watched: Job, client: LivtClient
) -> None:
    page = signed_in
    row(page, watched.id).locator("a").click()
    assert page.url.endswith(f"#/jobs/{watched.id}")
    loss = page.locator("#chart-loss path.series-line").first
    expect(loss).to_be_attached(timeout=60_000)
    assert int(loss.get_attribute("data-points")) >= 1
    expect(page.locator("h1 .badge")).to_have_text("succeeded", timeout=120_000)
    val = page.locator('#chart-val path.series-line[data-series="overall"]')
    expect(val).to_have_attribute("data-points", str(WATCHED["epochs"]))
    expect(page.locator('#chart-val path.series-line[data-series="few"]')).to_be_attached()
    expect(page.locator("#chart-lr path.series-line").first).to_be_attached()
    expect(page.locator("#chart-groups rect.bar")).to_have_count(4)
    expect(page.locator("#chart-per-class circle.scatter-dot")).to_have_count(10)
    expect(page.locator("#chart-calibration svg.reliability-chart")).to_be_attached()  # 15 bins
    expect(page.locator("#logs")).to_contain_text("epoch")
    page.click("#config summary")
    expect(page.locator("#config pre")).to_contain_text(f'"epochs": {WATCHED["epochs"]}')
    result = client.job(watched.id).result
    assert result is not None
    expect(page.locator(".tile .value").first).to_have_text(f"{result.overall:.1f}")


def test_artifact_downloads_with_the_token(signed_in, watched: Job, client: LivtClient) -> None:
    page = signed_in
    client.wait(watched.id, poll=0.5, timeout=180)
    page.goto(page.url.split("#")[0] + f"#/jobs/{watched.id}")
    button = page.locator('button[data-artifact="results.json"]')
    with page.expect_download() as info:
        button.click()
    download = info.value
    assert download.suggested_filename == "results.json"
    with open(download.path()) as fh:
        assert json.load(fh)["overall"] == pytest.approx(client.job(watched.id).result.overall)


def test_cancel_from_the_job_page(signed_in, client: LivtClient) -> None:
    page = signed_in
    job = client.submit({**TINY_FINETUNE, "name": "ui-cancel", "epochs": 40})
    page.goto(page.url.split("#")[0] + f"#/jobs/{job.id}")
    expect(page.locator("#cancel-job")).to_be_enabled()
    page.click("#cancel-job")
    expect(page.locator("h1 .badge")).to_have_text(re.compile("cancelling|cancelled"))
    expect(page.locator("h1 .badge")).to_have_text("cancelled", timeout=60_000)
    expect(page.locator("#retry-job")).to_be_enabled()
    expect(page.locator("#cancel-job")).to_be_disabled()


def test_a_queued_job_says_why_it_waits_and_what_it_runs_on(signed_in, client: LivtClient) -> None:
    page = signed_in
    busy = client.submit({**TINY_FINETUNE, "name": "ui-busy", "epochs": 40})
    waiting = client.submit({**TINY_FINETUNE, "name": "ui-waiting"})
    try:
        page.goto(page.url.split("#")[0] + f"#/jobs/{waiting.id}")
        expect(page.locator(".progress-text")).to_contain_text("workers busy (position")
        # CPU on a host without GPUs (the embedded worker has none to hand out)
        expect(page.locator("dl.meta")).to_contain_text(re.compile(r"default · (CPU|1 GPU)"))
    finally:
        client.cancel(waiting.id)
        client.cancel(busy.id)


def test_submit_form_shows_422_next_to_the_field(signed_in) -> None:
    page = signed_in
    page.click('#nav a[data-nav="submit"]')
    expect(page.locator('#f-preset option[value="fashion-mnist-lt"]')).to_be_attached()
    page.fill("#f-epochs", "0")
    page.click("#submit-form button[type=submit]")
    error = page.locator('.field[data-field="epochs"] .field-error')
    expect(error).to_be_visible()
    expect(error).to_contain_text("positive")
    expect(page.locator("#submit-errors")).to_contain_text("422")


def test_submit_form_creates_a_job(signed_in, client: LivtClient) -> None:
    page = signed_in
    page.goto(page.url.split("#")[0] + "#/submit")
    expect(page.locator('#f-loss option[value="ce"]')).to_be_attached()
    page.fill("#f-name", "from the form")
    page.select_option("#f-loss", "ce")
    page.fill("#f-epochs", "1")
    page.fill("#f-max_steps_per_epoch", "1")
    page.fill("#f-extra", json.dumps({"model_kwargs": {"depth": 1}, "data": {"num_workers": 0}}))
    page.click("#submit-form button[type=submit]")
    page.wait_for_url(re.compile(r"#/jobs/j_"))
    job_id = page.url.rsplit("/", 1)[-1]
    job = client.job(job_id)
    assert (job.name, job.loss, job.config["epochs"]) == ("from the form", "ce", 1)
    client.cancel(job_id)


def test_compare_view(signed_in, watched: Job, client: LivtClient) -> None:
    page = signed_in
    client.wait(watched.id, poll=0.5, timeout=180)
    page.goto(page.url.split("#")[0] + f"#/compare?ids={watched.id}")
    expect(page.locator("#compare-table tbody tr")).to_have_count(1)
    expect(page.locator("#chart-compare rect.bar")).to_have_count(4)
    page.locator(f'#compare-pick tr[data-job-id="{watched.id}"] input').uncheck()
    expect(page.locator("#comparison")).to_contain_text("Select two or more")
    assert "ids=" not in page.url


def test_list_pages_through_next_cursor(signed_in, client: LivtClient) -> None:
    page = signed_in
    page_size = 25  # PAGE_SIZE of the dashboard
    submitted = [
        client.submit({**TINY_FINETUNE, "name": f"page-{i:02d}"}) for i in range(page_size + 1)
    ]
    for job in submitted:
        client.cancel(job.id)
    for job in submitted:  # one of them may have started: wait until it has stopped
        client.wait(job.id, poll=0.3, timeout=60)
    cancelled = [j.id for j in client.iter_jobs(status="cancelled")]
    assert len(cancelled) > page_size
    page.select_option("#filter-status", "cancelled")
    rows = page.locator("tbody tr[data-job-id]")
    expect(rows).to_have_count(page_size)
    expect(page.locator("#prev-page")).to_be_disabled()
    page.click("#next-page")
    expect(rows).to_have_count(len(cancelled) - page_size)
    expect(rows.first).to_have_attribute("data-job-id", cancelled[page_size])
    expect(page.locator("#next-page")).to_be_disabled()
    page.click("#prev-page")
    expect(rows.first).to_have_attribute("data-job-id", cancelled[0])
