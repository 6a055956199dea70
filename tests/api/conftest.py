"""Fixtures of the API tests that read the served tables."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant
from tests.served_seed import Seeder


@pytest.fixture
def seed(db, tenant: Tenant) -> Seeder:
    """Writes the served rows of this test's tenant straight into Cassandra."""
    return Seeder(db, tenant.name)
