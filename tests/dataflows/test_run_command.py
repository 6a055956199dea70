"""`python -m dataflows run`'s command line: one process, or one member of a
Bytewax cluster of several (ops/dataflow --processes)."""

from __future__ import annotations

from pathlib import Path

from dataflows.commands.run import bytewax_command


def test_one_process_runs_alone() -> None:
    command = bytewax_command("learning", Path("/r"), workers=2)
    assert "-i" not in command and "-a" not in command
    assert command[command.index("-w") + 1] == "2"


def test_a_member_names_itself_and_every_address() -> None:
    addresses = ["127.0.0.1:4001", "127.0.0.1:4002"]
    command = bytewax_command("learning", Path("/r"), workers=2, member=(1, addresses))
    assert command[command.index("-i") + 1] == "1"
    assert command[command.index("-a") + 1] == "127.0.0.1:4001;127.0.0.1:4002"
    assert command[command.index("-r") + 1] == "/r"
