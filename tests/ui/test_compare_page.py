"""The compare view in headless Chromium, against a real ``livt serve`` running two tiny
finetunes that differ in their loss and an evaluation of one of them on another split: the runs'
curves overlaid (metric switch, log y, drag to zoom), the config keys that differ, per-class
accuracy side by side ordered by training images, and the warning (with nothing marked best)
for runs measured on different splits."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from livt.client import Job, LivtClient
from tests.live_server import TINY_FINETUNE

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def runs(client: LivtClient) -> dict[str, Job]:
    made = {
        "ce": client.submit({**TINY_FINETUNE, "name": "cmp-ce", "loss": "ce"}),
        "bal": client.submit({**TINY_FINETUNE, "name": "cmp-bal", "loss": "bal_bce"}),
    }
    for job in made.values():
        assert client.wait(job.id, poll=0.5, timeout=400).status == "succeeded", job.id
    evaluate = {
        "kind": "evaluate",
        "preset": "fashion-mnist-lt",
        "name": "cmp-eval-val",
        "init": {"job": made["ce"].id},
        "split": "val",
        "data": {"num_workers": 0},
    }
    made["val"] = client.submit(evaluate)
    assert client.wait(made["val"].id, poll=0.5, timeout=400).status == "succeeded"
    return {name: client.job(job.id) for name, job in made.items()}


def open_compare(page, *jobs: Job):
    page.goto(page.url.split("#")[0] + "#/compare?ids=" + ",".join(j.id for j in jobs))
    expect(page.locator("#compare-table tbody tr")).to_have_count(len(jobs))
    return page


def test_overlaid_curves_diff_and_per_class(signed_in, runs: dict[str, Job]) -> None:
    page = open_compare(signed_in, runs["ce"], runs["bal"])
    lines = page.locator("#chart-overlay path.series-line")
    expect(lines).to_have_count(2)
    assert {lines.nth(i).get_attribute("data-series") for i in range(2)} == {"cmp-ce", "cmp-bal"}
    assert lines.first.get_attribute("data-points") == "2"  # one point per epoch
    expect(page.locator("#compare-warning")).to_have_count(0)
    assert page.locator("#compare-table strong").count() > 0  # same data: best is marked

    page.select_option("#overlay-metric", "train_loss")
    expect(page.locator("#chart-overlay")).to_have_attribute("data-curve", "train_loss")
    expect(lines).to_have_count(2)
    page.check("#overlay-log")
    expect(page.locator("#chart-overlay svg")).to_have_attribute("data-log", "y")
    # drag across the left half of the plot: only the first epoch stays
    chart = page.locator("#chart-overlay svg")
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 40, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
    page.mouse.up()
    expect(page.locator("#zoom-reset")).to_be_visible()
    expect(lines.first).to_have_attribute("data-points", "1")
    page.click("#zoom-reset")
    expect(lines.first).to_have_attribute("data-points", "2")

    diff = page.locator("#config-diff tbody tr")
    keys = [diff.nth(i).get_attribute("data-key") for i in range(diff.count())]
    assert "loss" in keys and "name" not in keys, keys
    assert "epochs" not in keys and not [k for k in keys if "dir" in k], keys
    loss_row = page.locator('#config-diff tr[data-key="loss"] td')
    assert [loss_row.nth(i).inner_text() for i in (1, 2)] == ['"ce"', '"bal_bce"']

    rows = page.locator("#compare-per-class tbody tr")
    expect(rows).to_have_count(10)
    counts = [int(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(10)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    ce_classes = {c["class"]: c for c in runs["ce"].result.per_class}
    first = rows.first
    cls = int(first.get_attribute("data-class"))
    assert first.locator("td").nth(3).inner_text() == f"{ce_classes[cls]['accuracy']:.1f}"


def test_runs_on_different_splits_warn_and_mark_nothing_best(
    signed_in, runs: dict[str, Job]
) -> None:
    page = open_compare(signed_in, runs["ce"], runs["val"])
    warning = page.locator("#compare-warning")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("different splits (test, val)")
    expect(page.locator("#compare-table strong")).to_have_count(0)
    # an evaluation trains nothing: the finetune's curve alone
    expect(page.locator("#chart-overlay path.series-line")).to_have_count(1)
