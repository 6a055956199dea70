"""What a dataflow process sets up once: its settings and logging, and one
Cassandra connection shared by its partitions.

Bytewax builds every source and sink partition separately, on its worker
thread (one per feed shard, one sink per worker), but a Cluster is heavy: its
own connection pools and threads. So partitions take the process's one `Db`
here when they are built and give it back when they close; the last one out
shuts it down. A run that aborts never closes its partitions, and the
process exit takes the connection with it.
"""

from __future__ import annotations

import threading

from cql.session import Db
from runtime import pauses
from runtime.logs import configure_logging
from runtime.settings import CassandraSettings, Settings

_lock = threading.Lock()
_open: dict[CassandraSettings, tuple[Db, int]] = {}


def flow_settings(settings: Settings | None) -> Settings:
    """The settings a flow's factory was given (tests, replay), else those of
    the environment, for a flow started by `python -m bytewax.run`: then this
    process is new, so it sets up its logging and its collector here too."""
    if settings is not None:
        return settings
    settings = Settings.from_env()
    configure_logging(settings.log)
    pauses.spaced()
    return settings


def acquire_db(settings: CassandraSettings) -> Db:
    with _lock:
        db, users = _open.get(settings) or (Db.open(settings), 0)
        _open[settings] = (db, users + 1)
        return db


def release_db(settings: CassandraSettings) -> None:
    with _lock:
        db, users = _open[settings]
        if users > 1:
            _open[settings] = (db, users - 1)
            return
        del _open[settings]
    db.close()
