"""The conformance check fold for tests: generated once per session into the session's temporary cache."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def check_cache(tmp_path_factory):
    """Point PLATEBENCH_CACHE at the session's temporary cache while the module's tests run."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PLATEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    yield
    mp.undo()
