"""The dashboard in headless Chromium against a real API server: sign in,
find a learner, see the API's own numbers drawn, see a new utterance arrive
without a reload, use every page at 1280 and 390 px with the keyboard, and
sign out for good. Any console error fails the test (tests/ui/conftest.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from api.edge.sessions import COOKIE, UI_HEADER_VALUE
from tests.served_seed import Seeder
from tests.ui.conftest import WIDTHS, sign_in

PANELS = ("errors", "top", "learning", "insights", "utterances")


def seeded_learners(db, tenant: str, api: httpx.Client) -> None:
    """Three learners, created through the API; `ui-a-1` with error counts
    of the last few hours and words practised in the last two days, written
    straight into the served tables (tests/served_seed.py)."""
    for user_id in ("ui-a-1", "ui-a-2", "ui-b-1"):
        body = {"user_id": user_id, "email": f"{user_id}@example.com", "name": "Ana"}
        assert api.post("/v1/users", json=body).status_code == 201
    seed = Seeder(db, tenant)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for start, category, subcategory, count in (
        (hour - timedelta(hours=1), "grammar", "articles", 2),
        (hour - timedelta(hours=1), "grammar", "past tense", 1),
        (hour - timedelta(hours=1), "spelling", "double letters", 4),
        (hour - timedelta(hours=5), "grammar", "articles", 3),
    ):
        seed.error_count("ui-a-1", "hour", start, category, subcategory, count)
    for category, subcategory, count in (
        ("grammar", "articles", 5),
        ("spelling", "double letters", 4),
    ):
        seed.error_total("ui-a-1", category, subcategory, count)
    quarter = hour - timedelta(hours=1)
    seed.learning_bucket("ui-a-1", quarter, entries=2, words=7)
    seed.learning_bucket("ui-a-1", quarter - timedelta(days=1), entries=1, words=3)


def wait_for_panels(page: Page) -> None:
    for key in PANELS:
        expect(page.locator(f"#{key}")).to_have_attribute("data-refreshed-at", _any())
        expect(page.locator(f"#{key} .status")).to_be_empty()


def _any() -> Any:
    import re

    return re.compile(r"\d+")


def drawn(page: Page, canvas: str) -> dict[str, Any]:
    return page.evaluate(
        """(id) => { const c = Chart.getChart(document.getElementById(id));
            return { labels: c.data.labels,
                     datasets: c.data.datasets.map((d) => ({ label: d.label, data: d.data })) }; }""",
        canvas,
    )


def read_by_page(page: Page, api: httpx.Client, panel: str) -> dict[str, Any]:
    """The API's answer to the very read the panel drew."""
    source = page.locator(f"#{panel}").get_attribute("data-source")
    assert source
    r = api.get(source)
    assert r.status_code == 200, r.text
    return r.json()


def test_sign_in_find_a_learner_and_see_the_apis_numbers(
    open_context, ui_api, ui_tenant, api_client, db
) -> None:
    seeded_learners(db, ui_tenant.name, api_client)
    _, page = open_context(WIDTHS[0])
    sign_in(page, ui_api.url, ui_tenant.key)
    rows = page.locator("#learner-rows tr")
    expect(rows).to_have_count(3)
    page.get_by_label("Learner id starts with").fill("ui-a")
    page.keyboard.press("Enter")
    expect(rows).to_have_count(2)
    page.get_by_role("link", name="ui-a-1").click()
    page.wait_for_url(f"{ui_api.url}/ui/learners/ui-a-1")
    page.get_by_label("Time zone").select_option("UTC")
    wait_for_panels(page)

    errors = read_by_page(page, api_client, "errors")
    chart = drawn(page, "errors-chart")
    start = datetime.fromisoformat(errors["from"])
    expected: dict[str, list[int]] = {}
    slots = len(chart["labels"])
    assert slots == (datetime.fromisoformat(errors["to"]) - start) // timedelta(hours=1)
    for window in errors["windows"]:
        i = (datetime.fromisoformat(window["window_start"]) - start) // timedelta(hours=1)
        for c in window["counts"]:
            expected.setdefault(c["category"], [0] * slots)[i] += c["count"]
    assert {d["label"]: d["data"] for d in chart["datasets"]} == expected
    assert sum(map(sum, expected.values())) == 10

    top = read_by_page(page, api_client, "top")
    chart = drawn(page, "top-chart")
    assert chart["labels"] == [f"{e['category']} / {e['subcategory']}" for e in top["errors"]]
    assert chart["datasets"][0]["data"] == [e["count"] for e in top["errors"]] == [5, 4]

    learning = read_by_page(page, api_client, "learning")
    chart = drawn(page, "learning-chart")
    assert chart["datasets"][0]["data"] == [p["total_words"] for p in learning["periods"]]
    assert sum(chart["datasets"][0]["data"]) == 10
    for panel in ("errors", "top", "learning", "insights"):
        expect(page.locator(f"#{panel} [data-as-of]")).not_to_have_text("…")


def test_a_posted_utterance_appears_on_the_open_page_without_a_reload(
    open_context, ui_api, ui_tenant, api_client
) -> None:
    user_id = f"ui-live-{uuid.uuid4().hex[:6]}"
    assert (
        api_client.post(
            "/v1/users", json={"user_id": user_id, "email": "l@example.com", "name": "Lee"}
        ).status_code
        == 201
    )
    conversation = api_client.post(
        "/v1/conversations", json={"user_id": user_id, "title": "t"}
    ).json()
    _, page = open_context(WIDTHS[0])
    sign_in(page, ui_api.url, ui_tenant.key)
    page.goto(f"{ui_api.url}/ui/learners/{user_id}")
    wait_for_panels(page)
    page.evaluate("window.stillTheSamePage = true")
    text = f"I has seen the {uuid.uuid4().hex[:8]} yesterday."
    posted = api_client.post(
        "/v1/utterances",
        json={
            "conversation_id": conversation["conversation_id"],
            "user_id": user_id,
            "text": text,
            "timestamp": datetime.now(UTC).isoformat(),
            "errors": [{"category": "grammar", "subcategory": "subject-verb agreement"}],
            "words_learned": 3,
        },
    )
    assert posted.status_code == 202, posted.text
    expect(page.get_by_text(text)).to_be_visible(timeout=3000)
    expect(page.locator("#utterance-count")).to_have_text("1")
    assert page.evaluate("window.stillTheSamePage") is True


CONTROLS = "a[href], button, input, select, textarea, summary"


def unlabelled_controls(page: Page) -> list[str]:
    return page.evaluate(
        """(selector) => [...document.querySelectorAll(selector)].filter((e) => {
              const label = e.getAttribute("aria-label") || (e.labels && e.labels[0] && e.labels[0].textContent)
                || e.textContent || e.getAttribute("title");
              return !(label && label.trim());
           }).map((e) => e.outerHTML.slice(0, 80))""",
        CONTROLS,
    )


def unreachable_by_tab(page: Page) -> list[str]:
    """The visible, enabled controls that pressing Tab never focuses."""
    wanted = set(
        page.evaluate(
            """(selector) => [...document.querySelectorAll(selector)]
                 .map((e, i) => { e.dataset.control = i; return e; })
                 .filter((e) => !e.disabled && e.getClientRects().length && getComputedStyle(e).visibility !== "hidden")
                 .map((e) => e.dataset.control)""",
            CONTROLS,
        )
    )
    page.locator("body").focus()
    reached: set[str] = set()
    for _ in range(len(wanted) + 5):
        page.keyboard.press("Tab")
        control = page.evaluate("document.activeElement && document.activeElement.dataset.control")
        if control is not None:
            reached.add(control)
    return sorted(wanted - reached)


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_is_labelled_reachable_by_keyboard_and_fits(
    open_context, ui_api, ui_tenant, api_client, db, width: int
) -> None:
    seeded_learners(db, ui_tenant.name, api_client)
    _, page = open_context(width)
    for name, path in [
        ("sign-in", None),
        ("learners", "/ui/learners"),
        ("learner", "/ui/learners/ui-a-1"),
        ("ask", "/ui/ask"),
    ]:
        if path is None:
            page.goto(f"{ui_api.url}/ui/sign-in")
        else:
            if name == "learners":
                sign_in(page, ui_api.url, ui_tenant.key)
            page.goto(f"{ui_api.url}{path}")
        if name == "learners":
            expect(page.locator("#learner-rows tr")).to_have_count(3)
        if name == "learner":
            wait_for_panels(page)
        assert unlabelled_controls(page) == [], name
        assert unreachable_by_tab(page) == [], name
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} at {width} px is {overflow} px too wide"


def test_sign_out_ends_access(open_context, ui_api, ui_tenant) -> None:
    context, page = open_context(WIDTHS[1])
    sign_in(page, ui_api.url, ui_tenant.key)
    (cookie,) = [c for c in context.cookies() if c["name"] == COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert ui_tenant.key not in page.content()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{ui_api.url}/ui/sign-in")
    stale = {"Cookie": f"{COOKIE}={cookie['value']}", "X-Requested-With": UI_HEADER_VALUE}
    assert httpx.get(f"{ui_api.url}/v1/users", headers=stale).status_code == 401
    page.goto(f"{ui_api.url}/ui/learners")
    assert page.url == f"{ui_api.url}/ui/sign-in"


def test_the_ask_page_answers_a_gold_question(
    open_context, ui_api, ui_tenant, api_client, db
) -> None:
    body = {"user_id": "learner-001", "email": "l1@example.com", "name": "Pedro"}
    assert api_client.post("/v1/users", json=body).status_code == 201
    seed = Seeder(db, ui_tenant.name)
    for category, subcategory, count in (
        ("grammar", "articles", 7),
        ("grammar", "past tense", 5),
        ("spelling", "double letters", 2),
    ):
        seed.error_total("learner-001", category, subcategory, count)
    _, page = open_context(WIDTHS[1])
    sign_in(page, ui_api.url, ui_tenant.key)
    page.get_by_role("link", name="Ask").click()
    page.get_by_label("Question").fill("What are the top 5 mistakes of learner-001?")
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(page.locator("#answer")).to_be_visible()
    get_url = page.locator("#get-url").text_content()
    assert get_url and get_url.startswith("/v1/users/learner-001/errors/top")
    assert '"operation": "top_errors"' in (page.locator("#plan").text_content() or "")
    expect(page.locator("#explanation")).not_to_be_empty()
    answer = api_client.get(get_url).json()
    chart = drawn(page, "answer-chart")
    assert chart["datasets"][0]["data"] == [e["count"] for e in answer["errors"]] == [7, 5, 2]
