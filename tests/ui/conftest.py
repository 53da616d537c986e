"""Fixtures of the browser tests: a real ``livt serve``, a token and headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from livt.client import LivtClient
from tests.live_server import CHROMIUM, LiveServer, launch_chromium


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer.start(tmp_path_factory.mktemp("livt-ui")) as live:
        yield live


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    return server.create_token("dana")


@pytest.fixture(scope="module")
def client(server: LiveServer, token: str) -> Iterator[LivtClient]:
    with LivtClient(server.url, token) as c:
        yield c


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium is missing at {CHROMIUM}: install Debian's package `chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = launch_chromium(
            playwright,
            tmp_path_factory.mktemp("chromium-profile"),
            viewport={"width": 1360, "height": 900},
            accept_downloads=True,
        )
        context.set_default_timeout(15_000)
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    yield page
    page.close()


@pytest.fixture
def signed_in(page, server: LiveServer, token: str):
    """A page signed in through ``/?token=`` and showing the job list."""
    page.goto(f"{server.url}/?token={token}")
    page.locator("table.jobs-table").wait_for()
    return page
