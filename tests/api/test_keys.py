"""`ops/keys`: create (with optional expiry), revoke (refusing a key that
does not exist, writing nothing), list (never a secret), and the API's 401
for an expired key."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from api.commands import keys
from api.edge.auth import key_hash
from cql.api_keys import API_KEYS
from cql.session import Db
from runtime.settings import Settings
from tests.conftest import new_tenant


def prefix(key: str) -> str:
    """`us_<key_id>` (the secret may itself contain `_`)."""
    return "_".join(key.split("_")[:2])


@pytest.fixture
def env(migrated: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """`keys.main` reads its settings from the environment: the tests' keyspace."""
    monkeypatch.setenv("UTTERSTREAM_CASSANDRA_KEYSPACE", migrated.cassandra.keyspace)


def test_revoking_a_key_that_does_not_exist_says_so_and_writes_nothing(
    db: Db, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ghost = f"us_000000000000_{uuid.uuid4().hex}"
    assert keys.main(["revoke", ghost]) == 1
    assert "no such key" in capsys.readouterr().err
    assert db.session.execute(db.prepare(API_KEYS.select()), (key_hash(ghost),)).one() is None


def test_revoke_marks_the_key_in_both_tables(
    db: Db, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = new_tenant(db)
    assert keys.main(["revoke", tenant.key]) == 0
    row = API_KEYS.from_row(
        tuple(db.session.execute(db.prepare(API_KEYS.select()), (key_hash(tenant.key),)).one())
    )
    assert row.revoked
    [listed] = keys.listing(db, tenant.name)
    assert listed.revoked and listed.prefix == prefix(tenant.key)


def test_create_with_expiry_and_list_shows_no_secret(
    db: Db, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"t-{uuid.uuid4().hex[:12]}"
    assert keys.main(["create", "--tenant", name, "--rate", "5", "--expires-in", "30d"]) == 0
    key = capsys.readouterr().out.strip()
    assert keys.main(["create", "--tenant", name, "--expires-at", "2099-01-02T03:04:05Z"]) == 0
    other = capsys.readouterr().out.strip()
    listed = {r.prefix: r for r in keys.listing(db, name)}
    first, second = listed[prefix(key)], listed[prefix(other)]
    in_30d = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=30)
    assert first.expires_at is not None and abs(first.expires_at - in_30d) < timedelta(minutes=1)
    assert first.rate == 5 and not first.revoked
    assert second.expires_at == datetime(2099, 1, 2, 3, 4, 5)
    assert keys.main(["list", "--tenant", name]) == 0
    out = capsys.readouterr().out
    assert name in out and "2099-01-02T03:04:05Z" in out
    for secret in (key, other):
        assert secret not in out and secret[len(prefix(secret)) + 1 :] not in out
    assert keys.main(["list"]) == 0  # every tenant's, from api_keys itself
    everything = capsys.readouterr().out
    assert prefix(key) in everything and key not in everything


def test_bad_arguments_are_refused(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["create", "--tenant", "x", "--expires-in", "soon"],
        ["create", "--tenant", "x", "--expires-at", "2099-01-01"],  # no offset
        ["create", "--tenant", "x", "--expires-in", "1d", "--expires-at", "2099-01-01T00:00Z"],
        ["revoke"],
        ["list", "--bogus"],
        ["rotate"],
    ):
        with pytest.raises(SystemExit) as exit_:
            keys.main(argv)
        assert exit_.value.code == 2, argv
    assert keys.main(["create", "--tenant", "x", "--expires-at", "2001-01-01T00:00:00Z"]) == 2
    assert "past" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        keys.main(["--help"])
    assert exit_.value.code == 0 and "list" in capsys.readouterr().out


def test_parse_duration() -> None:
    assert keys.parse_duration("30d") == timedelta(days=30)
    assert keys.parse_duration("90m") == timedelta(minutes=90)
    with pytest.raises(argparse.ArgumentTypeError):
        keys.parse_duration("0d")


async def test_an_expired_key_is_401_like_a_revoked_one(client: httpx.AsyncClient, db: Db) -> None:
    name = f"t-{uuid.uuid4().hex[:12]}"
    _id, expired = keys.create(db, name, 1e6, 1_000_000, datetime.now(UTC) - timedelta(seconds=1))
    _id, live = keys.create(db, name, 1e6, 1_000_000, datetime.now(UTC) + timedelta(days=1))
    r = await client.get("/v1/utterances/x", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "expired" in r.json()["detail"]
    r = await client.get("/v1/utterances/x", headers={"Authorization": f"Bearer {live}"})
    assert r.status_code == 404


async def test_a_cached_key_stops_working_when_it_expires(
    client: httpx.AsyncClient, db: Db
) -> None:
    name = f"t-{uuid.uuid4().hex[:12]}"
    _id, key = keys.create(db, name, 1e6, 1_000_000, datetime.now(UTC) + timedelta(seconds=2))
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/v1/utterances/x", headers=headers)).status_code == 404
    await asyncio.sleep(2.2)
    assert (await client.get("/v1/utterances/x", headers=headers)).status_code == 401
