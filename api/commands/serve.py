"""`python -m api serve [--host H] [--port P] [--workers N] [--state FILE]`:
the API server, supervised. What ops/api, the image, the tests and the
benchmark all run (api.app.server_command builds the command line).

The supervisor, the server's processes and the state file live in
api/server/ (its docstring says what restarts what).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from api.server.processes import children_of
from api.server.state import describe
from api.server.supervisor import Supervisor
from runtime.logs import configure_logging
from runtime.settings import Settings

# bench/common.py finds the server's workers through this module.
__all__ = ["children_of", "main", "server_args"]


def main(argv: list[str]) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(
        prog="python -m api serve",
        description="Run the API server (granian) under a supervisor that restarts it.",
    )
    parser.add_argument("--host", default=settings.api.host, help="default: api.host")
    parser.add_argument("--port", type=int, default=settings.api.port, help="default: API_PORT")
    parser.add_argument(
        "--workers", type=int, default=settings.api.workers, help="default: api.workers"
    )
    parser.add_argument(
        "--state",
        type=Path,
        help="JSON file where the supervisor keeps its processes and restarts (ops/status)",
    )
    parser.add_argument(
        "--show", action="store_true", help="print what the --state file says, and exit"
    )
    args = parser.parse_args(argv)
    if args.show:
        if args.state is None:
            parser.error("--show needs --state")
        sys.stdout.write("".join(f"{line}\n" for line in describe(args.state)))
        return 0
    configure_logging(settings.log)
    # Imported once, here: every server and worker is forked with it loaded.
    import api.app  # noqa: F401

    return Supervisor(args.host, args.port, args.workers, args.state).run()


def server_args(host: str, port: int, workers: int, state: Path | None = None) -> list[str]:
    """The arguments of `python -m api serve` (api.app.server_command)."""
    args = ["--host", host, "--port", str(port), "--workers", str(workers)]
    return args if state is None else [*args, "--state", str(state)]
