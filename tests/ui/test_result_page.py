"""The finished result page in headless Chromium: confusion heatmap ordered by training count,
reliability diagram from the engine's 15 bins, sortable per-class table, scatter labels on hover,
no ``null`` text, evaluate pages without training cards, MGP's reconstruction grid."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from livt.client import LivtClient, Pipeline
from tests.live_server import TINY_FINETUNE

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PRETRAIN = {
    "kind": "pretrain",
    "preset": "fashion-mnist-lt",
    "epochs": 2,
    "warmup_epochs": 1,
    "max_steps_per_epoch": 2,
    "model_kwargs": {"depth": 1},
    "data": {"num_workers": 0},
}
EVALUATE = {"kind": "evaluate", "preset": "fashion-mnist-lt", "data": {"num_workers": 0}}


@pytest.fixture(scope="module")
def pipeline(client: LivtClient) -> Pipeline:
    """MGP → BFT → evaluate, all tiny; waits until every stage is over."""
    made = client.submit_pipeline([PRETRAIN, {**TINY_FINETUNE}, EVALUATE], name="ui-results")
    for job in made.jobs:
        assert client.wait(job.id, poll=0.5, timeout=400).status == "succeeded", job.id
    return client.pipeline(made.id)


def open_job(page, server, job_id: str):
    page.goto(f"{server.url}/#/jobs/{job_id}")
    expect(page.locator("h1 .badge")).to_have_text("succeeded", timeout=30_000)
    return page


def test_confusion_heatmap_is_ordered_by_training_count(signed_in, server, pipeline, client):
    finetune = pipeline.jobs[1]
    page = open_job(signed_in, server, finetune.id)
    cells = page.locator("#chart-confusion rect.cell")
    expect(cells).to_have_count(100)
    result = client.job(finetune.id).result
    order = sorted(range(10), key=lambda c: (-result.class_counts[c], c))
    rows = [int(cells.nth(10 * i).get_attribute("data-row")) for i in range(10)]
    assert rows == order
    matrix = result.extra["confusion_matrix"]
    first = cells.nth(0)
    assert int(first.get_attribute("data-count")) == matrix[order[0]][order[0]]
    assert "true " in first.locator("title").text_content()


def test_reliability_diagram_draws_the_engines_bins(signed_in, server, pipeline, client):
    finetune = pipeline.jobs[1]
    page = open_job(signed_in, server, finetune.id)
    bins = client.job(finetune.id).result.extra["reliability"]
    assert len(bins) == 15
    used = [b for b in bins if b["count"]]
    expect(page.locator("#chart-calibration svg.reliability-chart rect.bar")).to_have_count(
        len(used)
    )
    expect(page.locator("#chart-calibration line.diagonal")).to_be_attached()


def test_per_class_table_sorts_by_count_and_accuracy(signed_in, server, pipeline, client):
    finetune = pipeline.jobs[1]
    page = open_job(signed_in, server, finetune.id)
    table = page.locator("#per-class-table")
    expect(table.locator("tbody tr")).to_have_count(10)

    def column(index: int) -> list[float]:
        cells = table.locator(f"tbody tr td:nth-child({index})").all_text_contents()
        return [float(c) if c != "–" else float("-inf") for c in cells]

    counts = column(4)
    assert counts == sorted(counts, reverse=True)  # by training images, most first
    table.locator('th[data-key="accuracy"]').click()
    expect(table.locator('th[data-key="accuracy"]')).to_have_attribute("aria-sort", "descending")
    accuracy = column(6)
    assert accuracy == sorted(accuracy, reverse=True)
    expected = sorted(
        (c.get("accuracy") or 0 for c in client.job(finetune.id).result.per_class), reverse=True
    )
    assert [round(a, 1) for a in accuracy] == [round(a, 1) for a in expected]
    table.locator('th[data-key="accuracy"]').click()
    assert column(6) == sorted(accuracy)
    table.locator('th[data-key="train_count"]').click()
    assert column(4) == counts


def test_scatter_shows_the_class_label_on_hover(signed_in, server, pipeline):
    page = open_job(signed_in, server, pipeline.jobs[1].id)
    label = page.locator("#chart-per-class text.point-label")
    expect(label).to_have_attribute("visibility", "hidden")
    page.locator("#chart-per-class circle.scatter-dot").first.hover()
    expect(label).to_have_attribute("visibility", "visible")
    expect(label).to_contain_text("training images")
    page.mouse.move(2, 2)
    expect(label).to_have_attribute("visibility", "hidden")


def test_evaluate_page_has_no_training_cards(signed_in, server, pipeline):
    page = open_job(signed_in, server, pipeline.jobs[2].id)
    expect(page.locator("#chart-confusion rect.cell")).to_have_count(100)
    expect(page.locator("#training-curves")).to_be_hidden()
    expect(page.locator("#chart-val")).to_be_hidden()
    expect(page.locator("#chart-loss")).to_be_hidden()


def test_pretrain_page_shows_the_reconstruction_grid_and_no_null(signed_in, server, pipeline):
    pretrain = pipeline.jobs[0]
    page = open_job(signed_in, server, pretrain.id)
    img = page.locator("#reconstruction img")
    expect(page.locator("#reconstruction")).to_be_visible(timeout=30_000)
    page.wait_for_function(
        "() => { const i = document.querySelector('#reconstruction img'); return i && i.complete && i.naturalWidth > 0; }"
    )
    width, height = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert width > height > 0  # 8 images wide, 3 rows high
    expect(page.locator(".stages .stage")).to_have_count(3)  # the pipeline card is drawn
    for job in pipeline.jobs:
        open_job(page, server, job.id)
        page.locator(".stages .stage").first.wait_for()
        assert "null" not in page.locator("#app").inner_text(), job.kind
