"""`python -m dataflows COMMAND ...`: run and operate the dataflows.

run FLOW --recovery DIR   one flow under Bytewax's runner (ops/dataflow)
replay FLOW [--from T]    rebuild a flow's tables from the change feed (ops/replay)
redrive [--since T]       analyse failed insights again (ops/redrive)
status [FLOW ...]         each flow's position and lag per shard (ops/status)"""

from __future__ import annotations

import importlib
import sys

COMMANDS = ("run", "replay", "redrive", "status")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        names = "|".join(COMMANDS)
        sys.exit(f"usage: python -m dataflows {{{names}}} [--help]\n" + __doc__)
    command = importlib.import_module(f"dataflows.commands.{sys.argv[1]}")
    sys.exit(command.main(sys.argv[2:]))


if __name__ == "__main__":
    main()
