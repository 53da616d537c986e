"""The sweep page and the post-hoc curve in headless Chromium against a real ``livt serve``:
a two-dimensional sweep of real (tiny) evaluate jobs."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from livt.client import LivtClient
from tests.live_server import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TAUS = [0, 0.5, 1, 2]


@pytest.fixture(scope="module")
def checkpoint(server: LiveServer) -> str:
    """A freshly initialised tiny classifier in the server's data root: evaluating it needs no
    training run."""
    from livt_core.checkpoint import save_checkpoint
    from livt_core.config import resolve_config
    from livt_core.engine.factories import data_spec, model_kwargs
    from livt_core.models import create_model

    config = resolve_config("evaluate", "fashion-mnist-lt", {"model_kwargs": {"depth": 1}})
    model = create_model(config.model, **model_kwargs(config, data_spec(config.data), 10))
    path = server.data_dir / "datasets" / "tiny-classifier.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"model": model.state_dict()})
    return str(path)


def test_sweep_page_shows_table_heatmap_and_the_posthoc_curve(
    signed_in, server: LiveServer, token: str, client: LivtClient, checkpoint: str
) -> None:
    base = {
        "kind": "evaluate",
        "preset": "fashion-mnist-lt",
        "model_kwargs": {"depth": 1},
        "data": {"num_workers": 0},
        "init": {"checkpoint": checkpoint},
        "posthoc_tau": TAUS,
    }
    sweep = client.submit_sweep(
        base, {"split": ["val", "test"], "batch_size": [64]}, [0], name="ui-sweep"
    )
    page = signed_in
    page.goto(page.url.split("#")[0] + "#/sweeps")
    page.locator(f'tr[data-sweep-id="{sweep.id}"] a').click()
    assert page.url.endswith(f"#/sweeps/{sweep.id}")
    expect(page.locator("h1 .badge")).to_have_text("succeeded", timeout=180_000)
    done = client.sweep(sweep.id)

    rows = page.locator("#sweep-table tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first.locator("td").nth(2)).to_have_text("1")  # n
    cells = page.locator("#sweep-heatmap td.heat-cell")
    expect(cells).to_have_count(2)
    for index, row in enumerate(done.table):
        cell = cells.nth(index)
        expect(cell).to_have_attribute("data-status", "succeeded")
        expect(cell.locator(".heat-value")).to_have_text(f"{row['overall']['mean']:.2f}")
    page.select_option("#heatmap-metric", "few")
    expect(cells.first.locator(".heat-value")).to_have_text(f"{done.table[0]['few']['mean']:.2f}")
    page.click('button[data-format="md"]')
    expect(page.locator("#sweep-export")).to_contain_text("| split | batch_size | n | Overall |")

    job_id = done.table[1]["cells"][0]["job"]
    result = httpx.get(f"{server.url}/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"})
    posthoc = result.json()["result"]
    page.goto(page.url.split("#")[0] + f"#/jobs/{job_id}")
    chart = page.locator("#chart-posthoc svg")
    expect(chart).to_be_attached(timeout=30_000)
    expect(page.locator("#job-sweep")).to_have_text(sweep.id)
    points = [p for p in posthoc["posthoc"] if p["few"] is not None and p["many"] is not None]
    expect(chart.locator('path.series-line[data-series="τ from 0 up"]')).to_have_attribute(
        "data-points", str(len(points))
    )
    assert float(chart.get_attribute("data-best-tau")) == posthoc["posthoc_best_tau"]
    expect(page.locator("#posthoc-table tbody tr")).to_have_count(len(TAUS))
    expect(page.locator("#posthoc-calibration")).to_contain_text("fitted on the val split")

    # a row's compare link opens the compare view with the row's jobs
    page.goto(page.url.split("#")[0] + f"#/sweeps/{sweep.id}")
    page.locator("#sweep-table tbody tr").first.get_by_role("link", name="compare").click()
    expect(page.locator("#compare-table tbody tr")).to_have_count(1)
    assert done.table[0]["cells"][0]["job"] in page.url
