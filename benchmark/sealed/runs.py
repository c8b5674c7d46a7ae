"""Sealed runs on one dataset: each fold's store built once, one sandboxed zygote, a policy and a worker per run.

:class:`SealedRuns` is what the protocol runner and the conformance check use: it starts the zygote early (in
the strongest sandbox the machine allows, :mod:`benchmark.sealed.sandbox`), builds or reuses the sealed fold
stores (:mod:`benchmark.sealed.foldstore`), and hands out one :class:`~benchmark.sealed.executor.SealedHost`
per (method, fold, seed) run. A method whose package lies outside what the running zygote can read (a plugin
installed elsewhere, a test's module) gets a zygote of its own that can read it.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..datasets.dataset import Dataset
from ..paths import cache_dir
from ..splits import Fold
from .executor import SealedHost
from .foldstore import MODELS_DIR, SEALED_DIR, SealedFold, ensure_sealed_fold, models_path
from .limits import Limits
from .policy import ProtectedFiles, check_environment, protected_files, run_policy
from .sandbox import choose, module_folder, needs_network, readable_code
from .zygote_client import ZygoteProcess

_ZYGOTES: dict[tuple[str, tuple[str, ...], bool], ZygoteProcess] = {}
"""Zygotes of this process by (sandbox kind, what they read, network): started once, reused by every SealedRuns."""


def zygote_for(kind: str, readable: tuple[str, ...]) -> ZygoteProcess:
    """The zygote of this process that reads ``readable`` in sandbox ``kind`` (started on first use); with the
    network only for torchrun ranks (:func:`~benchmark.sealed.sandbox.needs_network`)."""
    network = needs_network()
    key = (kind, readable, network)
    wider = [z for (k, reads, net), z in _ZYGOTES.items()
             if k == kind and net == network and set(readable) <= set(reads) and z.alive()]
    if wider:  # a zygote that reads more serves as well: each worker's own allowlist narrows it
        return wider[0]
    zygote = _ZYGOTES.get(key)
    if zygote is None or not zygote.alive():
        if zygote is not None:
            zygote.stop()
        zygote = ZygoteProcess(kind, readable, network)
        zygote.start()
        _ZYGOTES[key] = zygote
    return zygote


@atexit.register
def stop_zygotes() -> None:
    """Stop every zygote of this process (at exit; tests call it too): all are told first, so they quit side by side."""
    zygotes = list(_ZYGOTES.values())
    for zygote in zygotes:
        zygote.ask_to_quit()
    for zygote in zygotes:
        zygote.stop()
    _ZYGOTES.clear()


def warm_up(cache: Path | None = None) -> None:
    """Start the zygote of the built-in methods now (it imports torch while the caller does other work)."""
    kind, _ = choose()
    zygote_for(kind, _zygote_reads(Path(cache) if cache is not None else cache_dir(), ()))


def _own_folders(info: Any) -> tuple[str, ...]:
    """The folders of a method's own package that Python and platebench's do not cover: a plugin's (from its entry
    point's metadata, not from what its class claims), or a local method's module (a test's)."""
    if info.builtin:
        return ()
    if getattr(info, "plugin", False):
        from ..method_info import plugin_folders

        return tuple(plugin_folders(info.name))
    folder = module_folder(str(info.module))
    return (folder,) if folder else ()


def _local_folders() -> tuple[str, ...]:
    """The folders of the methods registered in this process that are neither built in nor plugins (a test's or
    a script's), so that one zygote serves them and the built-ins alike."""
    from ..registry import available_methods

    folders = {module_folder(cls.__module__) for cls in available_methods().values()
               if not cls.__module__.startswith("benchmark.")}
    return tuple(sorted(f for f in folders if f))


def _zygote_reads(cache: Path, folders: tuple[str, ...]) -> tuple[str, ...]:
    """What a zygote binds read-only: the code (``folders`` and those of the methods registered here), and the
    cache's sealed stores and models (each worker then narrows this to its own code and fold with Landlock)."""
    roots = []
    for sub in (SEALED_DIR, MODELS_DIR):
        folder = cache / sub
        folder.mkdir(parents=True, exist_ok=True)
        roots.append(os.path.realpath(folder))
    return tuple(sorted({*readable_code(), *folders, *_local_folders(), *roots}))


class SealedRuns:
    """Sealed runs of one dataset and split seed (see module docstring)."""

    def __init__(self, dataset: Dataset, split_seed: int = 0, limits: Limits = Limits(), cache: Path | None = None,
                 log: Callable[[str], None] | None = None):
        self.dataset, self.split_seed, self.limits = dataset, split_seed, limits
        self.cache = Path(cache) if cache is not None else cache_dir()
        self.kind, self.why = choose()
        zygote_for(self.kind, _zygote_reads(self.cache, ()))
        self._say = log or (lambda _line: None)
        self._stores: dict[tuple[str, int], SealedFold] = {}
        self._protected: ProtectedFiles | None = None

    def store(self, fold: Fold) -> SealedFold:
        """The sealed store of ``fold`` (built on first use, then reused)."""
        key = (fold.split, fold.index)
        if key not in self._stores:
            self._stores[key] = ensure_sealed_fold(self.dataset, fold, self.split_seed, self.cache)
            self._say(self._stores[key].describe())
        return self._stores[key]

    def host(self, info: Any, fold: Fold, device: str = "cpu", verbose: bool = False) -> SealedHost:
        """A sealed worker host for one run of the method ``info`` (a MethodInfo) on ``fold`` (start it with ``with``)."""
        store = self.store(fold)
        if self._protected is None:
            self._protected = protected_files(self.dataset, self.cache)
            check_environment(self._protected, [sys.prefix, *readable_code()])
        models = models_path(store.root) if info.builtin else None
        if models is not None:
            models.mkdir(parents=True, exist_ok=True)  # the evaluator's: the worker only reads it
        own = _own_folders(info)
        zygote = zygote_for(self.kind, _zygote_reads(self.cache, own))
        readable = [*readable_code(), *own]
        policy = run_policy(self._protected, store.root, models, readable, (os.getpid(),))
        return SealedHost(info, device, verbose, store.root, models, policy, zygote, self.kind, self.limits)


__all__ = ["SealedRuns", "stop_zygotes", "warm_up", "zygote_for"]
