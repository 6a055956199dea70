"""`python -m PACKAGE COMMAND ...`: each package's operator commands live in
PACKAGE/commands/COMMAND.py, each with a `main(argv)`."""

from __future__ import annotations

import importlib
import sys


def dispatch(package: str, names: tuple[str, ...], usage: str) -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        sys.exit(f"usage: python -m {package} {{{'|'.join(names)}}} [--help]\n{usage}")
    command = importlib.import_module(f"{package}.commands.{sys.argv[1]}")
    sys.exit(command.main(sys.argv[2:]))
