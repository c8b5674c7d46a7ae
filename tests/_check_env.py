"""The conformance check fold for tests: generated once per session into the session's temporary cache."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def check_cache(tmp_path_factory):
    """Point PLATEBENCH_CACHE at the session's temporary cache while the module's tests run, and start (once a
    session) the zygote of that cache that also reads tests/: it serves the built-in methods, the toy methods
    and the test modules' own classes alike, so the modules checking methods here share one zygote instead of
    starting one per set of folders (each imports torch and every built-in method: ~10 s of CPU)."""
    from benchmark.paths import cache_dir
    from benchmark.sealed.runs import _zygote_reads, zygote_for
    from benchmark.sealed.sandbox import choose, module_folder

    mp = pytest.MonkeyPatch()
    mp.setenv("PLATEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    zygote_for(choose()[0], _zygote_reads(cache_dir(), (module_folder("_toy_methods"),)))
    yield
    mp.undo()
