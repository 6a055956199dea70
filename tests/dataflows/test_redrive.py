"""`python -m dataflows redrive`: failed insights analysed again, through
the flow's own path, once the model answers; idempotent after that.

The insights flow runs in this process over utterances of a fresh tenant
(see tests/dataflows/test_insights_flow.py) against a fake model that fails until
the test lets it answer."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from cql.clock import DAY, floor_to, utc_now
from cql.insights import FAILED_INSIGHTS, FailedInsightRow
from cql.session import Db
from dataflows.commands import redrive
from runtime.settings import Settings
from tests.conftest import ROOT, settings_env
from tests.dataflows.test_insights_flow import (
    assert_consistent,
    in_process_settings,
    run_in_process,
    seed,
    stored,
)
from tests.fakes.openai_server import VALID, Behaviour, FakeOpenAI

pytestmark = pytest.mark.timeout(300)


class Model:
    """A fake model that fails (unparsable replies and 503s, alternately)
    until `recover()`."""

    def __init__(self) -> None:
        self.failing = True
        self.server = FakeOpenAI(policy=self._behaviour)

    def _behaviour(self, index: int, _body: dict[str, Any]) -> Behaviour:
        if not self.failing:
            return VALID
        return Behaviour("prose" if index % 2 else "unavailable")

    def recover(self) -> None:
        self.failing = False


@pytest.fixture
def model() -> Iterator[Model]:
    model = Model()
    with model.server:
        yield model


@pytest.fixture
def llm_settings(migrated: Settings, model: Model, redis_client: Any) -> Iterator[Settings]:
    prefix = f"test:redrive:{uuid.uuid4().hex}:"
    yield in_process_settings(
        migrated,
        base_url=model.server.base_url,
        model="fake-model",
        timeout_s=2.0,
        max_attempts=2,
        rate_per_s=50.0,
        limiter_prefix=prefix,
    )
    for key in redis_client.scan_iter(match=f"{prefix}*"):
        redis_client.delete(key)


def test_failed_insights_complete_once_the_model_answers_and_a_second_run_changes_nothing(
    db: Db, llm_settings: Settings, model: Model
) -> None:
    settings = llm_settings
    began = utc_now()
    seeded = seed(db, settings, 12, rng_seed=21)
    run_in_process(settings, seeded, workers=1)
    failed = stored(db, settings, seeded, began)
    assert_consistent(failed, seeded)
    assert failed.outcome_counts() == {"failed": 12}

    # Still failing: each failure is recorded afresh, and listed once.
    counts = asyncio.run(redrive.redrive(db, settings, began, tenant=seeded.tenant))
    assert counts == Counter(failed=12)
    again = stored(db, settings, seeded, began)
    assert_consistent(again, seeded)
    assert {r.analyzed_at for r in again.insights.values()}.isdisjoint(
        r.analyzed_at for r in failed.insights.values()
    )

    model.recover()
    counts = asyncio.run(redrive.redrive(db, settings, began, tenant=seeded.tenant))
    assert counts == Counter(completed=12)
    fixed = stored(db, settings, seeded, began)
    assert_consistent(fixed, seeded)
    assert fixed.outcome_counts() == {"strict": 12}
    assert fixed.failures == []

    # A failure row a crash left behind for an utterance analysed since is
    # only removed; the rest stays as it is, and the model is not called.
    leftover = FailedInsightRow(
        floor_to(began, DAY), began, seeded.tenant, seeded.ids[0], "503 after 2 attempts"
    )
    db.session.execute(db.prepare(FAILED_INSIGHTS.insert()), FAILED_INSIGHTS.values(leftover))
    calls = len(model.server.arrivals)
    done = subprocess.run(
        [sys.executable, "-m", "dataflows.commands.redrive", "--since", began.isoformat() + "Z",
         "--tenant", seeded.tenant],
        cwd=ROOT, env=_env(settings), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"stale": 1' in done.stderr and '"completed": 0' in done.stderr, done.stderr
    assert len(model.server.arrivals) == calls
    assert stored(db, settings, seeded, began) == fixed


def test_since_must_carry_an_offset() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="offset"):
        redrive._instant("2026-01-01T00:00:00")
    assert redrive._instant("2026-01-01T05:30:00+05:30") == redrive._instant("2026-01-01T00:00:00Z")


def _env(settings: Settings) -> dict[str, str]:
    llm = settings.llm
    return settings_env(settings) | {
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_MODEL": llm.model,
        "UTTERSTREAM_LLM_LIMITER_PREFIX": llm.limiter_prefix,
        "UTTERSTREAM_LLM_MAX_ATTEMPTS": str(llm.max_attempts),
        "UTTERSTREAM_LOG_FORMAT": "json",
    }
