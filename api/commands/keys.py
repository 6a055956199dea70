"""`ops/keys`: API keys.

    create --tenant NAME [--rate N] [--burst N] [--expires-in 30d | --expires-at TIME]
        issue a key; prints it once (only its hash is stored)
    revoke KEY
        revoke a key; "no such key" and exit 1 when it does not exist
    list [--tenant NAME]
        tenant, prefix (`us_<key_id>`), rate, burst, created, expires, revoked;
        never a secret or a hash

Keys are written to api_keys (by hash, what the API reads) and to
api_keys_by_tenant (cql/schema/009_key_expiry.cql). `list --tenant` reads
that tenant's partition. `list` without --tenant pages through the whole of
api_keys: a full-table scan, acceptable only because this is an operator
command over a small table (one row per key); it is also the way to see keys
issued before api_keys_by_tenant existed. An API process caches each key
lookup for up to 30 s, so a revocation takes effect within 30 s; expiry is
checked on every request."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta

from api.edge.auth import key_hash, key_prefix, new_key
from cql.api_keys import API_KEYS, API_KEYS_BY_TENANT, ApiKeyRow, TenantKeyRow
from cql.clock import to_stored_time, utc_now
from cql.session import Db
from runtime.settings import Settings

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class NoSuchKey(LookupError):
    pass


def _by_tenant(row: ApiKeyRow) -> TenantKeyRow:
    return TenantKeyRow(
        row.tenant,
        row.key_id,
        key_prefix(row.key_id),
        row.rate,
        row.burst,
        row.created_at,
        row.expires_at,
        row.revoked,
    )


def create(
    db: Db,
    tenant: str,
    rate: float,
    burst: int,
    expires_at: datetime | None = None,
    live_connections: int | None = None,
) -> tuple[str, str]:
    key_id, key = new_key()
    expires = to_stored_time(expires_at) if expires_at is not None else None
    row = ApiKeyRow(
        key_hash(key), key_id, tenant, rate, burst, utc_now(), False, expires, live_connections
    )
    db.session.execute(db.prepare(API_KEYS.insert()), API_KEYS.values(row))
    listed = _by_tenant(row)
    db.session.execute(db.prepare(API_KEYS_BY_TENANT.insert()), API_KEYS_BY_TENANT.values(listed))
    return key_id, key


def revoke(db: Db, key: str) -> TenantKeyRow:
    """Revoke an existing key; NoSuchKey when there is none (nothing written)."""
    digest = key_hash(key)
    found = db.session.execute(db.prepare(API_KEYS.select()), (digest,)).one()
    if found is None:
        raise NoSuchKey(key)
    row = API_KEYS.from_row(tuple(found))
    # Keys are never deleted, so the row just read is still there to update.
    db.session.execute(db.prepare(API_KEYS.update(["revoked"])), (True, digest))
    row.revoked = True
    listed = _by_tenant(row)
    # The whole row: a key issued before api_keys_by_tenant existed gets one.
    db.session.execute(db.prepare(API_KEYS_BY_TENANT.insert()), API_KEYS_BY_TENANT.values(listed))
    return listed


def listing(db: Db, tenant: str | None = None) -> list[TenantKeyRow]:
    if tenant is not None:
        rows = db.session.execute(db.prepare(API_KEYS_BY_TENANT.select()), (tenant,))
        return [API_KEYS_BY_TENANT.from_row(tuple(r)) for r in rows]
    # Full-table scan, paged by the driver: operator use only (see the module doc).
    scan = f"SELECT {', '.join(API_KEYS.columns)} FROM {API_KEYS.name}"
    found = [_by_tenant(API_KEYS.from_row(tuple(r))) for r in db.session.execute(db.prepare(scan))]
    return sorted(found, key=lambda r: (r.tenant, r.created_at, r.key_id))


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `45s`, `2w`."""
    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if not match or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration like 30d, 12h, 90m, 45s or 2w"
        )
    return timedelta(**{UNITS[match[2]]: int(match[1])})


def parse_time(text: str) -> datetime:
    """RFC 3339 with an offset, e.g. 2026-12-31T23:59:59Z."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 time with an offset, e.g. 2026-12-31T23:59:59Z"
        )
    return moment


def _show(moment: datetime | None) -> str:
    return "-" if moment is None else moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _table(rows: list[TenantKeyRow]) -> str:
    head = ("TENANT", "PREFIX", "RATE", "BURST", "CREATED", "EXPIRES", "REVOKED")
    lines = [head] + [
        (
            r.tenant,
            r.prefix,
            f"{r.rate:g}",
            str(r.burst),
            _show(r.created_at),
            _show(r.expires_at),
            "yes" if r.revoked else "no",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() + "\n"
        for line in lines
    )


def parser(settings: Settings) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ops/keys", description="API keys.")
    commands = top.add_subparsers(dest="command", required=True)
    made = commands.add_parser("create", help="issue a key for a tenant; prints it once")
    made.add_argument("--tenant", required=True)
    made.add_argument(
        "--rate", type=float, default=settings.api.default_rate, help="requests per second"
    )
    made.add_argument("--burst", type=int, default=settings.api.default_burst)
    made.add_argument(
        "--live-connections",
        type=int,
        help=f"live connections at once (default: {settings.live.max_connections})",
    )
    until = made.add_mutually_exclusive_group()
    until.add_argument(
        "--expires-in", type=parse_duration, metavar="DURATION", help="e.g. 30d, 12h, 90m, 2w"
    )
    until.add_argument(
        "--expires-at", type=parse_time, metavar="TIME", help="RFC 3339, e.g. 2026-12-31T00:00:00Z"
    )
    gone = commands.add_parser("revoke", help="revoke a key (within 30 s on every API process)")
    gone.add_argument("key")
    shown = commands.add_parser(
        "list", help="list keys (never their secrets); every tenant's without --tenant"
    )
    shown.add_argument("--tenant")
    return top


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    args = parser(settings).parse_args(argv)
    expires_at: datetime | None = None
    if args.command == "create":
        if args.expires_in is not None:
            expires_at = datetime.now(UTC) + args.expires_in
        elif args.expires_at is not None:
            expires_at = args.expires_at
        if expires_at is not None and expires_at <= datetime.now(UTC):
            sys.stderr.write("ops/keys: error: the expiry is in the past\n")
            return 2
    db = Db.open(settings.cassandra)
    try:
        if args.command == "create":
            _key_id, key = create(
                db, args.tenant, args.rate, args.burst, expires_at, args.live_connections
            )
            sys.stdout.write(key + "\n")
        elif args.command == "revoke":
            try:
                row = revoke(db, args.key)
            except NoSuchKey:
                sys.stderr.write("ops/keys: no such key\n")
                return 1
            sys.stderr.write(f"revoked {row.prefix} of tenant {row.tenant}\n")
        else:
            sys.stdout.write(_table(listing(db, args.tenant)))
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
