"""Sealed runs on one dataset: each fold's store built once, a policy and a worker per run.

:class:`SealedRuns` is what the protocol runner and the conformance check use: it starts
the forkserver early (:func:`~benchmark.sealed.executor.warm_up`), builds or reuses the
sealed fold stores (:mod:`benchmark.sealed.foldstore`), walks the dataset folder and the
cache to know what to protect (:mod:`benchmark.sealed.policy`), and hands out one
:class:`~benchmark.sealed.executor.SealedHost` per (method, fold, seed) run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..datasets.dataset import Dataset
from ..methods.base import Method, MethodConfig
from ..paths import cache_dir
from ..splits import Fold
from .executor import SealedHost
from .forkserver import forkserver_facts, warm_up
from .foldstore import SealedFold, ensure_sealed_fold
from .limits import Limits
from .policy import ProtectedFiles, check_environment, protected_files, run_policy


class SealedRuns:
    """Sealed runs of one dataset and split seed (see module docstring)."""

    def __init__(self, dataset: Dataset, split_seed: int = 0, limits: Limits = Limits(), cache: Path | None = None,
                 log: Callable[[str], None] | None = None):
        warm_up()
        self.dataset, self.split_seed, self.limits = dataset, split_seed, limits
        self.cache = Path(cache) if cache is not None else cache_dir()
        self._say = log or (lambda _line: None)
        self._stores: dict[tuple[str, int], SealedFold] = {}
        self._protected: ProtectedFiles | None = None

    def store(self, fold: Fold) -> SealedFold:
        """The sealed store of ``fold`` (built on first use, then reused)."""
        key = (fold.split, fold.index)
        if key not in self._stores:
            self._stores[key] = ensure_sealed_fold(self.dataset, fold, self.split_seed, self.cache)
            self._say(self._stores[key].describe())
            self._protected = None  # a new store: walk again
        return self._stores[key]

    def host(self, method_cls: type[Method], config: MethodConfig, fold: Fold, device: str = "cpu",
             verbose: bool = False) -> SealedHost:
        """A sealed worker host for one run of ``method_cls`` on ``fold`` (start it with ``with``)."""
        store = self.store(fold)
        if self._protected is None:
            self._protected = protected_files(self.dataset, self.cache)
            check_environment(self._protected, [sys.prefix, *_code_folders()])
        pids, sockets = forkserver_facts()
        policy = run_policy(self._protected, store.root, (os.getpid(), *pids), sockets)
        return SealedHost(method_cls, config, device, verbose, store.root, policy, self.limits)


def _code_folders() -> list[str]:
    """The folders platebench's own code is imported from (harness, methods, datasets)."""
    from .. import datasets, methods

    return [os.path.dirname(os.path.dirname(__file__)), *methods.__path__, *datasets.__path__]
