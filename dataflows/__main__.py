"""`python -m dataflows COMMAND ...`: run and operate the dataflows.

run FLOW --recovery DIR   one flow under Bytewax's runner (ops/dataflow)
replay FLOW [--from T]    rebuild a flow's tables from the change feed (ops/replay)
redrive [--since T]       analyse failed insights again (ops/redrive)
status [FLOW ...]         each flow's position and lag per shard (ops/status)"""

from runtime.commands import dispatch

if __name__ == "__main__":
    dispatch("dataflows", ("run", "replay", "redrive", "status"), __doc__)
