"""`python -m api COMMAND ...`: the API package's operator commands.

    keys create|revoke|list  API keys (ops/keys)
    openapi [PATH]           write the served OpenAPI document
    serve [--port P] ...     the API server (ops/api)

The server runs under granian, supervised (api.commands.serve: what
api.app.server_command runs)."""

from runtime.commands import dispatch

if __name__ == "__main__":
    dispatch("api", ("keys", "openapi", "serve"), __doc__)
