"""The API docs, as a person opens them: Swagger UI at /swagger (the address
the README and ops/up give) from a real API process, without an API key,
with every file the page loads served by the API itself, so the page works
without internet. A browser's rendering is checked elsewhere; here, the
page and each file it references."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from runtime.settings import Settings
from tests.conftest import ApiProcess
from tests.helpers import api_process

DOCS = "/swagger"


class _References(HTMLParser):
    """Every URL the page loads or links to: src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


@pytest.fixture(scope="module")
def server(migrated: Settings) -> Iterator[ApiProcess]:
    yield from api_process(migrated)


@pytest.fixture(scope="module")
def page(server: ApiProcess) -> httpx.Response:
    return httpx.get(server.url + DOCS, timeout=30)


def test_the_docs_page_answers_without_a_key(page: httpx.Response) -> None:
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle(" in page.text
    assert page.headers["X-Request-ID"]


def test_every_file_the_page_references_is_served_by_the_api(
    server: ApiProcess, page: httpx.Response
) -> None:
    urls = [urljoin(server.url + DOCS, ref) for ref in references(page.text)]
    assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls), urls
    host = urlsplit(server.url).netloc
    off_host = [u for u in urls if urlsplit(u).netloc != host]
    assert off_host == [], "the docs page loads files from another host"
    with httpx.Client(timeout=30) as c:
        for url in urls:
            r = c.get(url)
            assert r.status_code == 200, (url, r.status_code)
            assert r.content, url
            if url.endswith(".js"):
                assert "javascript" in r.headers["content-type"], url
            elif url.endswith(".css"):
                assert r.headers["content-type"].startswith("text/css"), url


def test_the_page_names_no_other_host(server: ApiProcess, page: httpx.Response) -> None:
    """Nowhere in the page (its markup, its script, the document it embeds)
    is there an http(s) URL of another host."""
    host = urlsplit(server.url).netloc
    absolute = re.findall(r"https?://[^\s\"'<>)]+", page.text)
    assert [u for u in absolute if urlsplit(u).netloc != host] == []


def test_the_document_and_the_old_docs_address_still_answer(server: ApiProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        schema = c.get("/schema/openapi.json")
        assert schema.status_code == 200 and schema.json()["info"]["title"] == "utterstream"
        assert c.get("/schema/swagger").status_code == 200
