"""Dashboard sessions (api/edge/sessions.py): signing in trades a key for an
HttpOnly, SameSite=Strict cookie; the API takes the cookie only with the
dashboard's own header; signing out, or revoking the key, ends it."""

from __future__ import annotations

import httpx

from api.commands.keys import revoke
from api.edge.sessions import COOKIE, UI_HEADER_VALUE
from cql.session import Db
from tests.conftest import Tenant

UI = {"X-Requested-With": UI_HEADER_VALUE}


async def signed_in(client: httpx.AsyncClient, key: str) -> str:
    r = await client.post("/ui/sign-in", data={"api_key": key}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/learners"
    return r.cookies[COOKIE]


async def test_sign_in_sets_an_http_only_strict_cookie_that_carries_no_key(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    r = await client.post("/ui/sign-in", data={"api_key": tenant.key}, follow_redirects=False)
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert tenant.key not in cookie and tenant.key not in r.headers["location"]
    assert "Secure" not in cookie  # served over http here; https pages get Secure


async def test_a_wrong_key_gets_the_form_again_with_401(client: httpx.AsyncClient) -> None:
    r = await client.post("/ui/sign-in", data={"api_key": "us_nope_nope"}, follow_redirects=False)
    assert r.status_code == 401 and COOKIE not in r.cookies
    assert "unknown, revoked or expired" in r.text and 'role="alert"' in r.text


async def test_the_api_takes_the_session_only_with_the_dashboards_header(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    session = await signed_in(client, tenant.key)
    client.cookies.clear()
    cookies = {"Cookie": f"{COOKIE}={session}"}
    assert (await client.get("/v1/users", headers=cookies)).status_code == 401
    assert (await client.get("/v1/users", headers=cookies | UI)).status_code == 200
    created = await client.post(
        "/v1/users", headers=cookies | UI, json={"email": "a@example.com", "name": "Ana"}
    )
    assert created.status_code == 201
    assert (
        await client.post(
            "/v1/users", headers=cookies, json={"email": "b@example.com", "name": "B"}
        )
    ).status_code == 401


async def test_pages_send_a_visitor_without_a_session_to_the_sign_in_form(
    client: httpx.AsyncClient,
) -> None:
    for page in ("/ui/", "/ui/learners", "/ui/learners/x", "/ui/ask"):
        r = await client.get(page, follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/ui/sign-in")


async def test_sign_out_ends_the_session(client: httpx.AsyncClient, tenant: Tenant) -> None:
    session = await signed_in(client, tenant.key)
    r = await client.post("/ui/sign-out", follow_redirects=False)
    assert r.headers["location"] == "/ui/sign-in" and "Max-Age=0" in r.headers["set-cookie"]
    client.cookies.clear()
    stale = {"Cookie": f"{COOKIE}={session}"} | UI
    assert (await client.get("/v1/users", headers=stale)).status_code == 401


async def test_revoking_the_key_ends_its_sessions(
    client: httpx.AsyncClient, tenant: Tenant, db: Db
) -> None:
    session = await signed_in(client, tenant.key)
    client.cookies.clear()
    headers = {"Cookie": f"{COOKIE}={session}"} | UI
    assert (await client.get("/v1/users", headers=headers)).status_code == 200
    revoke(db, tenant.key)
    client.app.state.services.keys._entries.clear()  # the 30 s lookup cache, elapsed
    assert (await client.get("/v1/users", headers=headers)).status_code == 401
    r = await client.get("/ui/learners", headers=headers, follow_redirects=False)
    assert r.status_code == 303


async def test_another_sites_form_cannot_sign_in_or_out(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    elsewhere = {"Origin": "https://evil.example"}
    r = await client.post(
        "/ui/sign-in", data={"api_key": tenant.key}, headers=elsewhere, follow_redirects=False
    )
    assert r.status_code == 403 and COOKIE not in r.cookies
    await signed_in(client, tenant.key)
    r = await client.post("/ui/sign-out", headers=elsewhere, follow_redirects=False)
    assert r.status_code == 403
    assert (await client.get("/v1/users", headers=UI)).status_code == 200
