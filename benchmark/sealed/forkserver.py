"""The forkserver sealed workers are forked from: a fresh interpreter that holds only label-free code.

``multiprocessing``'s ``forkserver`` start method execs a new interpreter once, which
imports :mod:`benchmark.sealed.preload` (numpy, polars, torch, timm, scikit-learn, the
harness, the built-in methods) and then forks a worker per run in a few tens of
milliseconds. It never sees a dataset: it is started before one is loaded, from the
evaluator's ``sys.path`` alone. :func:`warm_up` starts it early, so its imports overlap
the evaluator's own set-up.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import Any

PRELOAD = ["benchmark.sealed.preload"]
WORKER_PREFIX = "sealed-"
"""Name prefix of worker processes (their preparation data leaves out the evaluator's ``__main__``)."""

_context_lock = threading.Lock()
_context: Any = None


def context() -> Any:
    """The ``forkserver`` multiprocessing context, with :data:`PRELOAD` set (once per process)."""
    global _context
    with _context_lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            _keep_main_out()
            _context = ctx
    return _context


def _keep_main_out() -> None:
    """Never run the evaluator's ``__main__`` in a worker.

    multiprocessing re-imports the parent's main script (or module) in every child; a
    script that loads a dataset at module level would put its labels in the worker,
    before the audit hook. Workers (named ``sealed-*``) get the preparation data without it.
    """
    from multiprocessing import spawn

    original = spawn.get_preparation_data
    if getattr(original, "_platebench", False):
        return

    def get_preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        if str(name).startswith(WORKER_PREFIX):
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
        return data

    get_preparation_data._platebench = True  # type: ignore[attr-defined]
    spawn.get_preparation_data = get_preparation_data


def warm_up() -> None:
    """Start the forkserver now (it imports torch and friends while the caller does other work)."""
    context()
    from multiprocessing import forkserver

    forkserver.ensure_running()


def forkserver_facts() -> tuple[tuple[int, ...], tuple[str, ...]]:
    """(pids, socket addresses) of this process's forkserver, for the audit policy."""
    from multiprocessing import forkserver

    server = forkserver._forkserver  # noqa: SLF001 - the stdlib keeps these private
    pid = getattr(server, "_forkserver_pid", None)
    address = getattr(server, "_forkserver_address", None)
    return ((pid,) if pid else ()), ((os.fsdecode(address),) if address else ())
