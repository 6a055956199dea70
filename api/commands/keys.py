"""`ops/keys create --tenant NAME [--rate N --burst N]`: issue an API key.

Prints the key once; only its hash is stored."""

from __future__ import annotations

import argparse
import sys

from api.edge.auth import key_hash, new_key
from cql.api_keys import API_KEYS, ApiKeyRow
from cql.clock import utc_now
from cql.session import Db
from runtime.settings import Settings


def create(db: Db, tenant: str, rate: float, burst: int) -> tuple[str, str]:
    key_id, key = new_key()
    row = ApiKeyRow(key_hash(key), key_id, tenant, rate, burst, utc_now(), False)
    db.session.execute(db.prepare(API_KEYS.insert()), API_KEYS.values(row))
    return key_id, key


def revoke(db: Db, key: str) -> None:
    db.session.execute(db.prepare(API_KEYS.update(["revoked"])), (True, key_hash(key)))


def main(argv: list[str] | None = None) -> None:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="ops/keys")
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("create", help="issue a key for a tenant")
    made.add_argument("--tenant", required=True)
    made.add_argument(
        "--rate", type=float, default=settings.api.default_rate, help="requests per second"
    )
    made.add_argument("--burst", type=int, default=settings.api.default_burst)
    gone = commands.add_parser("revoke", help="revoke a key")
    gone.add_argument("key")
    args = parser.parse_args(argv)
    db = Db.open(settings.cassandra)
    try:
        if args.command == "create":
            _key_id, key = create(db, args.tenant, args.rate, args.burst)
            sys.stdout.write(key + "\n")
        else:
            revoke(db, args.key)
    finally:
        db.close()


if __name__ == "__main__":
    main()
