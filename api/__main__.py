"""`python -m api COMMAND ...`: the API package's operator commands.

    assets                   fetch the dashboard's pinned npm packages (ops/sync)
    keys create|revoke|list  API keys (ops/keys)
    openapi [PATH]           write the served OpenAPI document
    serve [--port P] ...     the API server (ops/api)

The server runs under granian, supervised (api.commands.serve: what
api.app.server_command runs)."""

from runtime.commands import dispatch

if __name__ == "__main__":
    dispatch("api", ("assets", "keys", "openapi", "serve"), __doc__)
