"""The application factory: `create_app(settings)` wires routes,
dependencies, middleware and the error table; `app_from_env()` is what each
server worker runs (under `python -m api serve`: `server_command`)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Router, get
from litestar.datastructures import ResponseHeader, State
from litestar.di import Provide
from litestar.enums import MediaType
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, Schema, SecurityScheme
from litestar.plugins import OpenAPISchemaPlugin
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar.types import Scope
from litestar.typing import FieldDefinition
from swagger_ui_bundle import swagger_ui_path

from api.commands.serve import server_args
from api.edge.auth import Principal
from api.edge.limits import RATE_LIMIT_HEADERS
from api.edge.metrics import MetricsController
from api.edge.middleware import REQUEST_ID, EdgeMiddleware, unrouted
from api.edge.problems import exception_handlers, handle_http_exception
from api.resources.ask import AskController
from api.resources.conversations import ConversationsController
from api.resources.errors import ErrorCountsController
from api.resources.exercises import ExercisesController
from api.resources.health import HealthController
from api.resources.insights import InsightsController
from api.resources.learner import LearnerController
from api.resources.learning import LearningController
from api.resources.listings import ListingsController
from api.resources.live import LiveController, live_socket
from api.resources.users import UsersController
from api.resources.utterances import UtterancesController
from api.services import Services, lifespan, services_of
from api.ui.pages import dashboard_handlers
from runtime.logs import configure_logging
from runtime.settings import Settings

API_VERSION = "1.0.0"


# From the scope, so HTTP and WebSocket handlers alike receive them.
def _services(scope: Scope) -> Services:
    return services_of(scope["app"])


def _principal(scope: Scope) -> Principal:
    return scope["state"]["principal"]


BEARER = [{"bearer": []}]
DOCS_PATH = "/swagger"
# Swagger UI's files, from the pinned swagger-ui-bundle-v2 package, served by
# the API itself: the docs page loads nothing from another host.
SWAGGER_UI_PATH = "/schema/swagger-ui"
SWAGGER = SwaggerRenderPlugin(
    path=DOCS_PATH,
    js_url=f"{SWAGGER_UI_PATH}/swagger-ui-bundle.js",
    css_url=f"{SWAGGER_UI_PATH}/swagger-ui.css",
    standalone_preset_js_url=f"{SWAGGER_UI_PATH}/swagger-ui-standalone-preset.js",
    favicon=f"<link rel='icon' type='image/png' href='{SWAGGER_UI_PATH}/favicon-32x32.png'>",
)


def openapi_config() -> OpenAPIConfig:
    """The document at /schema/openapi.json. Only the keyed routes (/v1/...)
    declare the bearer requirement: /health and /ready are public."""
    return OpenAPIConfig(
        title="utterstream",
        version=API_VERSION,
        description="Stream-processing analytics for conversational language-learning data.",
        path="/schema",
        render_plugins=[SWAGGER, ScalarRenderPlugin(path="/")],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http", scheme="bearer", description="An utterstream API key"
                )
            }
        ),
    )


@get(DOCS_PATH, include_in_schema=False, media_type=MediaType.HTML, sync_to_thread=False)
def swagger_page(request: Request) -> bytes:
    """Swagger UI at the address the README gives (also at /schema/swagger)."""
    return SWAGGER.render(request, request.app.openapi_schema.to_schema())


def docs_handlers() -> list[Any]:
    """The docs page and the Swagger UI files it loads; no key needed."""
    assets = create_static_files_router(
        SWAGGER_UI_PATH, directories=[swagger_ui_path], name="swagger-ui"
    )
    return [swagger_page, assets]


class ClosedRequestBodies(OpenAPISchemaPlugin):
    """Request bodies are decoded with msgspec, which refuses any field a
    Struct that forbids unknown fields does not declare: the schemas of those
    Structs, in a request body or nested in one, say so with
    `additionalProperties: false`. Shapes only ever sent stay open, so adding
    a field to an answer breaks no client."""

    def __init__(self) -> None:
        self.closed: frozenset[type] = frozenset()

    def close_request_bodies(self, app: Litestar) -> None:
        bodies = [
            data.type_
            for route in app.routes
            if isinstance(route, HTTPRoute)
            for handler in route.route_handlers
            if isinstance(handler, HTTPRouteHandler)
            and (data := handler.parsed_fn_signature.parameters.get("data")) is not None
        ]
        self.closed = frozenset(_strict_structs(bodies))

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return isinstance(field_definition.type_, type) and field_definition.type_ in self.closed

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        # The schema Litestar's own Struct plugin makes, closed.
        struct = next(
            plugin
            for plugin in schema_creator.plugins
            if plugin is not self and schema_creator.plugin_supports_field(plugin, field_definition)
        )
        schema = struct.to_openapi_schema(field_definition, schema_creator)
        schema.additional_properties = False
        return schema


def _strict_structs(types: Iterable[Any]) -> set[type]:
    """The Structs that forbid unknown fields among `types` and inside them."""
    seen: set[type] = set()
    strict: set[type] = set()

    def visit(t: msgspec.inspect.Type) -> None:
        if isinstance(t, msgspec.inspect.StructType):
            if t.cls in seen:
                return
            seen.add(t.cls)
            if t.forbid_unknown_fields:
                strict.add(t.cls)
            for field in t.fields:
                visit(field.type)
        elif isinstance(t, msgspec.inspect.UnionType):
            for member in t.types:
                visit(member)
        elif isinstance(t, msgspec.inspect.CollectionType):
            visit(t.item_type)
        elif isinstance(t, msgspec.inspect.TupleType):
            for item in t.item_types:
                visit(item)
        elif isinstance(t, msgspec.inspect.DictType):
            visit(t.value_type)

    for t in msgspec.inspect.multi_type_info(list(types)):
        visit(t)
    return strict


# Every answer carries it (set by EdgeMiddleware); documented once, here.
REQUEST_ID_HEADER = ResponseHeader(
    name=REQUEST_ID,
    documentation_only=True,
    description="The request's X-Request-ID if it sent one, else a new id; "
    "every log line of the request carries it.",
)


def keyed_routes() -> Router:
    """The /v1 resources: each needs an API key and is rate limited."""
    return Router(
        path="/",
        route_handlers=[
            UsersController,
            ListingsController,
            LearnerController,
            ConversationsController,
            UtterancesController,
            ErrorCountsController,
            LearningController,
            ExercisesController,
            InsightsController,
            LiveController,
            live_socket,
            AskController,
        ],
        response_headers=RATE_LIMIT_HEADERS,
        security=BEARER,
    )


def create_app(settings: Settings) -> Litestar:
    closed_bodies = ClosedRequestBodies()
    app = Litestar(
        route_handlers=[
            HealthController,
            MetricsController,
            keyed_routes(),
            *docs_handlers(),
            *dashboard_handlers(),
        ],
        response_headers=[REQUEST_ID_HEADER],
        dependencies={
            "services": Provide(_services, sync_to_thread=False),
            "principal": Provide(_principal, sync_to_thread=False),
        },
        middleware=[EdgeMiddleware()],
        exception_handlers=exception_handlers() | {HTTPException: unrouted(handle_http_exception)},
        lifespan=[lifespan],
        openapi_config=openapi_config(),
        plugins=[closed_bodies],
        request_max_body_size=settings.api.max_body_bytes,
        state=State({"settings": settings}),
        debug=False,
    )
    closed_bodies.close_request_bodies(app)
    return app


def server_command(
    port: int, workers: int, host: str = "127.0.0.1", state: Path | None = None
) -> list[str]:
    """The one command line of the API server: `python -m api serve`, which
    runs granian (`workers` worker processes, respawned when one dies) under
    a supervisor that restarts the server when it dies (api/commands/serve.py).
    ops/api, the image, the tests and the benchmark all run it. The
    interpreter itself, not `uv run`, so the process is the supervisor."""
    return [sys.executable, "-m", "api", "serve", *server_args(host, port, workers, state)]


def app_from_env() -> Litestar:
    settings = Settings.from_env()
    configure_logging(settings.log)
    return create_app(settings)
