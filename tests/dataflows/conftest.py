"""Fixtures of the dataflow tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime.settings import Settings
from tests.dataflow_helpers import PatientApiProcess


@pytest.fixture(scope="module")
def api(migrated: Settings) -> Iterator[PatientApiProcess]:
    """A real API process for the module's end-to-end tests to send utterances through."""
    proc = PatientApiProcess(migrated)
    yield proc
    proc.stop()
