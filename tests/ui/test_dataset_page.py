"""The dashboard's dataset pages in headless Chromium against a real ``livt serve`` whose worker
profiles every image folder (``LIVT_PROFILE_INLINE_IMAGES=0``): the status and progress while
profiling, then the class counts on a log axis with the shot groups, and the profile."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from livt.client import LivtClient
from tests.folders import make_imagefolder
from tests.live_server import TINY_FINETUNE, LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("livt-ui-datasets")
    root = make_imagefolder(
        data_dir / "datasets" / "clothes",
        n_max=150,
        imbalance=30,
        per_class=2,
        size=28,
        colour=False,
        missing_in_val=("bag",),
        corrupt=1,
    )
    assert root.is_dir()
    with LiveServer.start(data_dir, env={"LIVT_PROFILE_INLINE_IMAGES": "0"}) as live:
        yield live


def test_dataset_page_follows_the_profiling_and_draws_the_profile(
    signed_in, client: LivtClient, server: LiveServer, token: str
) -> None:
    page = signed_in
    # the worker (one job at a time) is busy: the profiling waits behind this job
    job = client.submit({**TINY_FINETUNE, "name": "keeps-the-worker-busy"})
    response = httpx.post(
        f"{server.url}/datasets",
        json={"name": "clothes", "kind": "imagefolder", "root": "clothes"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 202, response.text
    total = response.json()["progress"]["total"]

    page.click('#nav a[data-nav="datasets"]')
    expect(page.locator('tr[data-dataset="clothes"]')).to_be_visible()
    page.click('tr[data-dataset="clothes"] a')
    status = page.locator("#dataset-status")
    expect(status).to_contain_text(f"0 of {total} images read")
    expect(page.locator(".page-head .badge-profiling")).to_be_visible()
    # while profiling, the counts from the file names are drawn already
    expect(page.locator("#chart-class-counts rect.bar")).to_have_count(10)

    client.wait(job.id, poll=0.5, timeout=240)
    expect(page.locator(".page-head .badge-ready")).to_be_visible(timeout=60_000)
    expect(status.locator(".progress")).to_have_attribute("data-fraction", "1.0000")

    bars = page.locator("#chart-class-counts rect.bar")
    values = [int(v) for v in bars.evaluate_all("els => els.map(e => e.dataset.value)")]
    assert values == sorted(values, reverse=True) and values[0] == 150
    groups = bars.evaluate_all("els => els.map(e => e.dataset.group)")
    assert groups == ["many" if v > 100 else "few" if v < 20 else "medium" for v in values]
    assert {"many", "medium", "few"} <= set(groups)
    # a log axis: 10 and 100 images are ticks, and the bar heights follow log(count)
    ticks = page.locator("#chart-class-counts text.tick").all_text_contents()
    assert "10" in ticks and "100" in ticks
    # the bar tops lie on a line in log(count): the middle class's top, interpolated between
    # the largest and the smallest class in log space, is where it is drawn
    tops = bars.evaluate_all("els => els.map(e => e.getBBox().y)")
    (v0, y0), (vm, ym), (v1, y1) = [(values[i], tops[i]) for i in (0, len(values) // 2, -1)]
    in_log = y0 + (y1 - y0) * (math.log(vm / v0) / math.log(v1 / v0))
    in_linear = y0 + (y1 - y0) * ((vm - v0) / (v1 - v0))
    assert abs(ym - in_log) < 1.0 and abs(ym - in_linear) > 10
    for group in ("many", "medium", "few"):
        expect(page.locator(f'#shot-groups [data-group="{group}"]')).to_be_visible()

    profile = page.locator("#dataset-profile")
    expect(profile).to_contain_text("28 × 28 px")
    expect(profile).to_contain_text("grey (1 channel)")
    expect(profile).to_contain_text("val/: bag")
    expect(profile).to_contain_text("train/tee/0000.png")
    expect(profile).to_contain_text("train ")
