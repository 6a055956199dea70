"""cql/recipes.cql: every operator recipe runs as written against the live
schema, none needs ALLOW FILTERING, and the tenant's-keys recipe finds a
tenant's keys."""

from __future__ import annotations

import re

import pytest

from cql.migrate import statements
from cql.session import Db
from tests.conftest import ROOT, new_tenant

RECIPES = statements((ROOT / "cql" / "recipes.cql").read_text())


def test_there_are_recipes() -> None:
    assert len(RECIPES) >= 9
    assert all(cql.upper().startswith("SELECT") for cql in RECIPES)


@pytest.mark.parametrize("cql", RECIPES, ids=lambda c: re.search(r"FROM (\w+)", c)[1])
def test_each_recipe_runs_without_allow_filtering(db: Db, cql: str) -> None:
    assert "ALLOW FILTERING" not in " ".join(cql.upper().split())
    # Preparing checks it against the schema (Cassandra refuses a query that
    # would need ALLOW FILTERING); running it, that it executes.
    db.session.execute(db.prepare(cql)).all()


def test_the_tenant_keys_recipe_finds_the_tenants_keys(db: Db) -> None:
    [cql] = [c for c in RECIPES if "api_keys_by_tenant" in c]
    tenant = new_tenant(db)
    rows = db.session.execute(db.prepare(cql.replace("'demo'", f"'{tenant.name}'"))).all()
    assert [r[1] for r in rows] == ["_".join(tenant.key.split("_")[:2])]
    assert all(tenant.key not in str(r) for r in rows)
