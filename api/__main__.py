"""`python -m api COMMAND ...`: the API package's operator commands.

    keys create|revoke ...   API keys (ops/keys)
    load FILE ...            bulk import through the batch endpoint (ops/load)
    openapi [PATH]           write the served OpenAPI document

The server itself runs under granian (api.app.server_command)."""

from __future__ import annotations

import importlib
import sys

COMMANDS = ("keys", "load", "openapi")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        names = "|".join(COMMANDS)
        sys.exit(f"usage: python -m api {{{names}}} [--help]\n" + __doc__)
    command = importlib.import_module(f"api.commands.{sys.argv[1]}")
    sys.exit(command.main(sys.argv[2:]))


if __name__ == "__main__":
    main()
