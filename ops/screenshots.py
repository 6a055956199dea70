"""Screenshots of every dashboard page at 1280 and 390 px wide, into
docs/ui-<page>-<width>.png (what the README's "Dashboard" section shows).
Run by ops/screenshots against a running API (ops/up's by default), with
Debian's chromium driven by Playwright."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import httpx
import structlog
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = (1280, 390)
QUESTION = "top 5 errors of {learner} this month"
log = structlog.get_logger("ops.screenshots")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ops/screenshots", description=__doc__.split("\n\n")[0])
    port = os.environ.get("API_PORT", "8000")
    parser.add_argument("--api", default=f"http://127.0.0.1:{port}", help="the API's base URL")
    parser.add_argument("--key", help="API key (default: .local/dev-api-key, ops/up's)")
    parser.add_argument("--learner", help="the learner shown (default: the first listed)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="default: docs/")
    return parser.parse_args()


def first_learner(api: str, key: str) -> str:
    r = httpx.get(
        f"{api}/v1/users", params={"limit": "1"}, headers={"Authorization": f"Bearer {key}"}
    )
    users = r.raise_for_status().json()["users"]
    if not users:
        raise SystemExit("the tenant has no learner: load the demo data first (ops/up)")
    return users[0]["user_id"]


def settled(page: Page) -> None:
    """Every panel drawn once."""
    for panel in ("errors", "top", "learning", "insights", "utterances"):
        page.locator(f"#{panel}[data-refreshed-at]").wait_for()


def shoot(page: Page, out: Path, name: str, width: int) -> None:
    path = out / f"ui-{name}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    log.info("screenshot", path=str(path.relative_to(ROOT)))


def main() -> None:
    args = arguments()
    key = args.key or (ROOT / ".local" / "dev-api-key").read_text().strip()
    learner = args.learner or first_learner(args.api, key)
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium: ops/chromium installs Debian's")
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        for width in WIDTHS:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(f"{args.api}/ui/sign-in")
            shoot(page, args.out, "sign-in", width)
            page.get_by_label("API key").fill(key)
            page.get_by_role("button", name="Sign in").click()
            page.locator("#learner-rows tr").first.wait_for()
            shoot(page, args.out, "learners", width)
            page.goto(f"{args.api}/ui/learners/{learner}")
            settled(page)
            shoot(page, args.out, "learner", width)
            page.goto(f"{args.api}/ui/ask")
            page.get_by_label("Question").fill(QUESTION.format(learner=learner))
            page.get_by_role("button", name="Ask", exact=True).click()
            page.locator("#answer").wait_for()
            shoot(page, args.out, "ask", width)
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
