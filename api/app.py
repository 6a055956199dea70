"""The application factory: `create_app(settings)` wires routes,
dependencies, middleware and the error table; `app_from_env()` is what the
server runs (`granian --factory api.app:app_from_env`)."""

from __future__ import annotations

import sys

from litestar import Litestar, Request, Router
from litestar.datastructures import ResponseHeader, State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from api.edge.auth import Principal
from api.edge.limits import RATE_LIMIT_HEADERS
from api.edge.metrics import MetricsController
from api.edge.middleware import REQUEST_ID, EdgeMiddleware, unrouted
from api.edge.problems import exception_handlers, handle_http_exception
from api.resources.conversations import ConversationsController
from api.resources.errors import ErrorCountsController
from api.resources.exercises import ExercisesController
from api.resources.health import HealthController
from api.resources.insights import InsightsController
from api.resources.learning import LearningController
from api.resources.users import UsersController
from api.resources.utterances import UtterancesController
from api.services import Services, lifespan, services_of
from runtime.logs import configure_logging
from runtime.settings import Settings

API_VERSION = "1.0.0"


def _services(request: Request) -> Services:
    return services_of(request.app)


def _principal(request: Request) -> Principal:
    return request.state.principal


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="utterstream",
        version=API_VERSION,
        description="Stream-processing analytics for conversational language-learning data.",
        path="/schema",
        render_plugins=[SwaggerRenderPlugin(path="/swagger"), ScalarRenderPlugin(path="/")],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http", scheme="bearer", description="An utterstream API key"
                )
            }
        ),
        security=[{"bearer": []}],
    )


def create_app(settings: Settings) -> Litestar:
    keyed = Router(
        path="/",
        route_handlers=[
            UsersController,
            ConversationsController,
            UtterancesController,
            ErrorCountsController,
            LearningController,
            ExercisesController,
            InsightsController,
        ],
        response_headers=RATE_LIMIT_HEADERS,
    )
    return Litestar(
        route_handlers=[HealthController, MetricsController, keyed],
        response_headers=[
            ResponseHeader(
                name=REQUEST_ID,
                documentation_only=True,
                description="The request's X-Request-ID if it sent one, else a new id; "
                "every log line of the request carries it.",
            )
        ],
        dependencies={
            "services": Provide(_services, sync_to_thread=False),
            "principal": Provide(_principal, sync_to_thread=False),
        },
        middleware=[EdgeMiddleware()],
        exception_handlers=exception_handlers() | {HTTPException: unrouted(handle_http_exception)},
        lifespan=[lifespan],
        openapi_config=openapi_config(),
        request_max_body_size=settings.api.max_body_bytes,
        state=State({"settings": settings}),
        debug=False,
    )


def server_command(port: int, workers: int, host: str = "127.0.0.1") -> list[str]:
    """The command that serves `app_from_env` with granian, as ops/api does:
    what the tests and the benchmark run. granian itself, not `uv run`, so the
    process is granian's main process and its children are the workers."""
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--factory",
        "api.app:app_from_env",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--backlog",
        "2048",
    ]


def app_from_env() -> Litestar:
    configure_logging()
    return create_app(Settings.from_env())
