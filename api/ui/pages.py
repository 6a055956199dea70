"""The dashboard's pages. Each checks its own session (api.edge.sessions)
and sends a visitor without one to the sign-in form; the data comes from
the v1 API, which each page's script calls with the session."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import structlog
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.enums import MediaType
from litestar.params import FromPath
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from api.commands.assets import VENDOR
from api.edge import sessions
from api.edge.auth import Principal, bearer_key, key_hash, key_principal
from api.edge.problems import Unauthorized
from api.services import Services, ServicesDep
from api.ui import html

log = structlog.get_logger("api.ui")
STATIC = Path(__file__).parent / "static"
SIGN_IN = "/ui/sign-in"


def _html(body: str, status: int = 200, cookies: list[Cookie] | None = None) -> Response[str]:
    return Response(
        body, status_code=status, media_type=MediaType.HTML, headers=html.HEADERS, cookies=cookies
    )


def _cookie(request: Request, value: str, max_age: int) -> Cookie:
    # Secure whenever the page was served over https, so a local http run works.
    return Cookie(
        key=sessions.COOKIE,
        value=value,
        path="/",
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _cross_site(request: Request) -> bool:
    """A form posted from another site's page: browsers name the page's
    origin, and it is not this host. Refused, so no other site can sign a
    visitor in (to a tenant of its choosing) or out."""
    origin = request.headers.get("origin")
    return origin is not None and urlsplit(origin).netloc != request.headers.get("host")


def _refused() -> Response[str]:
    page = html.page("Refused", "<h1>Refused</h1><p>This form only works from this site.</p>")
    return _html(page, status=403)


async def _signed_in(request: Request, services: Services) -> Principal | None:
    session = sessions.session_id(request.headers.get("cookie"))
    return None if session is None else await sessions.signed_in(services, session)


class DashboardController(Controller):
    path = "/ui"
    include_in_schema = False

    @get("/")
    async def home(self, request: Request, services: ServicesDep) -> Redirect:
        signed_in = await _signed_in(request, services) is not None
        return Redirect("/ui/learners" if signed_in else SIGN_IN, status_code=303)

    @get("/sign-in")
    async def sign_in_form(self) -> Response[str]:
        return _html(html.page("Sign in", html.sign_in_form()))

    @post("/sign-in", status_code=303)
    async def sign_in(self, request: Request, services: ServicesDep) -> Response:
        """Trade the form's API key for a session; the key is never logged."""
        if _cross_site(request):
            return _refused()
        form = await request.form()
        key = str(form.get("api_key") or "").strip()
        try:
            principal = await key_principal(services, key_hash(bearer_key(f"Bearer {key}")))
        except Unauthorized as exc:
            page = html.page("Sign in", html.sign_in_form(exc.detail))
            return _html(page, status=401)
        ttl = services.settings.ui.session_ttl_s
        session = await sessions.open_session(services.redis, key_hash(key), ttl)
        log.info("ui_signed_in", tenant=principal.tenant, key_id=principal.key_id)
        redirect = Redirect("/ui/learners", status_code=303)
        redirect.cookies.append(_cookie(request, session, ttl))
        return redirect

    @post("/sign-out", status_code=303)
    async def sign_out(self, request: Request, services: ServicesDep) -> Response:
        if _cross_site(request):
            return _refused()
        session = sessions.session_id(request.headers.get("cookie"))
        if session is not None:
            await sessions.close_session(services.redis, session)
        redirect = Redirect(SIGN_IN, status_code=303)
        redirect.cookies.append(_cookie(request, "", 0))
        return redirect

    @get("/learners")
    async def learners(self, request: Request, services: ServicesDep) -> Response:
        principal = await _signed_in(request, services)
        if principal is None:
            return Redirect(SIGN_IN, status_code=303)
        scripts = ("/ui/static/learners.js",)
        return _html(
            html.page("Learners", html.learners(), tenant=principal.tenant, scripts=scripts)
        )

    @get("/learners/{user_id:str}")
    async def learner(
        self, request: Request, user_id: FromPath[str], services: ServicesDep
    ) -> Response:
        principal = await _signed_in(request, services)
        if principal is None:
            return Redirect(SIGN_IN, status_code=303)
        user = await services.store.user(principal.tenant, user_id)
        if user is None:
            return _html(
                html.page("Not found", html.not_found(user_id), tenant=principal.tenant), 404
            )
        main = html.learner(user_id, user.name or user_id, user.email or "")
        scripts = (html.CHART_JS, "/ui/static/learner.js")
        return _html(html.page(user_id, main, tenant=principal.tenant, scripts=scripts))

    @get("/ask")
    async def ask(self, request: Request, services: ServicesDep) -> Response:
        principal = await _signed_in(request, services)
        if principal is None:
            return Redirect(SIGN_IN, status_code=303)
        scripts = (html.CHART_JS, "/ui/static/ask.js")
        return _html(html.page("Ask", html.ask(), tenant=principal.tenant, scripts=scripts))


def dashboard_handlers() -> list[object]:
    """The pages, their scripts and styles, and the vendored Chart.js."""
    return [
        DashboardController,
        create_static_files_router(
            "/ui/static", directories=[STATIC], name="ui-static", include_in_schema=False
        ),
        create_static_files_router(
            "/ui/vendor", directories=[VENDOR], name="ui-vendor", include_in_schema=False
        ),
    ]
