"""Fixtures of the POST /v1/ask tests: the app in this process, and one
tenant's seeded world (tests/ask/world.py), answered as of world.NOW."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from cql.session import Db
from runtime.settings import Settings
from tests.ask.world import own_watermarks, seed_world
from tests.conftest import Tenant


class World(NamedTuple):
    client: Any
    tenant: Tenant
    services: Any


@pytest.fixture
async def world(client: Any, db: Db, migrated: Settings, tenant: Tenant) -> World:
    await seed_world(db, migrated, tenant, client)
    own_watermarks(client, db)
    return World(client, tenant, client.app.state.services)
