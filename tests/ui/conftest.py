"""Fixtures of the dashboard's browser tests: a real API server, Debian's
chromium (ops/chromium installs it) driven by Playwright, never a browser
Playwright downloads, and pages that fail their test on any console error."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from runtime.settings import Settings
from tests.conftest import ApiProcess, Tenant, new_tenant

WIDTHS = (1280, 390)


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "Debian's chromium is not installed; ops/chromium (run by ops/test) installs it"
        )
    return path


@pytest.fixture(scope="module")
def ui_api(migrated: Settings) -> Iterator[ApiProcess]:
    api = ApiProcess(migrated)
    yield api
    api.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Per module: Playwright's sync API holds an event loop on this thread
    while it runs, which the asyncio tests of later modules could not start."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def ui_tenant(db) -> Tenant:
    return new_tenant(db)


@pytest.fixture
def api_client(ui_api: ApiProcess, ui_tenant: Tenant) -> Iterator[httpx.Client]:
    """The same API as the browser's, with the tenant's key."""
    with httpx.Client(base_url=ui_api.url, headers=ui_tenant.headers, timeout=10) as client:
        yield client


class Console:
    """Every console error and uncaught exception of a browser context."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page) -> None:
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))


@pytest.fixture
def open_context(browser: Browser) -> Iterator[Callable[[int], tuple[BrowserContext, Page]]]:
    """Opens a context `width` px wide with one page; at the end of the
    test, asserts no page of it logged an error."""
    consoles: list[Console] = []
    contexts: list[BrowserContext] = []

    def opened(width: int = WIDTHS[0]) -> tuple[BrowserContext, Page]:
        context = browser.new_context(viewport={"width": width, "height": 900})
        console = Console()
        context.on("page", console.watch)
        page = context.new_page()
        consoles.append(console)
        contexts.append(context)
        return context, page

    yield opened
    for context in contexts:
        context.close()
    assert [e for c in consoles for e in c.errors] == []


def sign_in(page: Page, base_url: str, key: str) -> None:
    page.goto(f"{base_url}/ui/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/ui/learners")
