"""What a cluster's nodes say about each other (ops/cluster status):

    python -m cql.nodes 127.0.0.1,127.0.0.2,127.0.0.3

One line per node as the gossip of the first node that answers sees it
(`system_views.gossip_info`: state and load), and whether the driver holds
a connection to it.
"""

from __future__ import annotations

import sys

import structlog

from cql.session import connect
from runtime.logs import configure_logging
from runtime.settings import CassandraSettings, Settings

GOSSIP = "SELECT address, status_with_port, load, dc, rack, release_version FROM system_views.gossip_info"
log = structlog.get_logger("nodes")


def rows(hosts: tuple[str, ...]) -> list[tuple[str, ...]]:
    """(address, gossip status, load, dc, rack, version, driver's view) per node."""
    cluster, session = connect(CassandraSettings(hosts=hosts, connect_timeout_s=2.0))
    try:
        up = {str(h.address): h.is_up for h in cluster.metadata.all_hosts()}
        gossip = sorted(session.execute(session.prepare(GOSSIP)), key=lambda r: r[0])
        return [
            (
                str(r[0]),
                (r[1] or "-").split(",")[0],
                _size(r[2]),
                r[3] or "-",
                r[4] or "-",
                r[5] or "-",
                "up" if up.get(str(r[0])) else "down",
            )
            for r in gossip
        ]
    finally:
        cluster.shutdown()


def _size(load: str | None) -> str:
    if not load:
        return "-"
    return f"{float(load) / 2**20:.1f}MiB"


def main(argv: list[str]) -> None:
    configure_logging(Settings.from_env().log)
    hosts = tuple(h for h in argv[0].split(",") if h)
    header = ("address", "gossip", "load", "dc", "rack", "version", "driver")
    for line in (header, *rows(hosts)):
        sys.stdout.write("{:<11} {:<10} {:>10} {:<12} {:<6} {:<8} {}\n".format(*line))


if __name__ == "__main__":
    main(sys.argv[1:])
