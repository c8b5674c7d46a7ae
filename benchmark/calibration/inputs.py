"""What the probes measure from, each computed on first use and kept for the other probes.

- :meth:`Inputs.accuracies`: a method's run records on both splits, run through
  :func:`benchmark.protocol.loop.run_protocol` (sealed, resumable: an ok record of the same
  config and data fingerprint in the results folder is reused, not refitted).
- :meth:`Inputs.label_shift`: a built-in method fitted in this process on source_out
  folds, scored on full and on cut target plates (:mod:`.shift_runs`).
- :meth:`Inputs.lab`: a linear classifier of the lab on channel statistics (:mod:`.lab`).

A failure is kept too: every probe that needs the failed input reports the same error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..datasets import Dataset
from ..errors import BenchError
from ..records import read_record
from .settings import PanelSettings

SPLIT_ORDER = ("batch_out", "source_out")


@dataclass(frozen=True)
class MethodAccuracies:
    """A method's accuracies over its records: in-domain over both splits, out-of-domain per split."""

    method: str
    in_domain: float
    out_of_domain: dict[str, float]
    n_records: int


class Inputs:
    """The panel's shared inputs on one dataset (see module docstring)."""

    def __init__(self, dataset: Dataset, settings: PanelSettings = PanelSettings(),
                 log: Callable[[str], None] | None = None, progress: bool = False):
        self.dataset, self.settings, self.progress = dataset, settings, progress
        self.say = log or (lambda _line: None)
        self.counts: Counter[str] = Counter()
        self._memo: dict[Any, tuple[bool, Any]] = {}

    def _once(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            try:
                self._memo[key] = (True, compute())
            except Exception as exc:  # noqa: BLE001 - kept, and raised to every probe that needs it
                self._memo[key] = (False, exc)
        ok, value = self._memo[key]
        if not ok:
            raise value
        return value

    # -- run records -----------------------------------------------------------------------
    def accuracies(self, method: str) -> MethodAccuracies:
        """``method``'s accuracies from its records of both splits (run or reused)."""
        return self._once(("records", method), lambda: self._accuracies(method))

    def _accuracies(self, method: str) -> MethodAccuracies:
        from ..protocol.loop import run_protocol

        s = self.settings
        in_domain, out_of_domain = [], {}
        for split in SPLIT_ORDER:
            outcomes = run_protocol(method, split, self.dataset, seeds=s.seeds, folds=s.folds,
                                    split_seed=s.split_seed, device=s.device, results_dir=s.results,
                                    quick=s.smoke, log=self.say)
            self.counts.update(f"records_{o.status}" for o in outcomes)
            failed = [o for o in outcomes if o.status == "failed"]
            if failed:
                first = failed[0]
                raise BenchError(f"{len(failed)} of {len(outcomes)} {method} {split} runs failed (first: fold "
                                 f"{first.fold} seed {first.seed}: {first.error}); see {first.path}, rerun to retry")
            metrics = [read_record(o.path)["metrics"] for o in outcomes]
            in_domain += [m["in_domain"]["accuracy"] for m in metrics]
            out_of_domain[split] = float(np.mean([m["out_of_domain"]["accuracy"] for m in metrics]))
        return MethodAccuracies(method, float(np.mean(in_domain)), out_of_domain, len(in_domain))

    # -- label shift -----------------------------------------------------------------------
    def label_shift(self, method: str):
        """``method`` fitted on source_out folds (seed 0), scored on full and on cut target plates."""
        from .shift_runs import label_shift

        return self._once(("label_shift", method),
                          lambda: label_shift(self.dataset, self.settings, method, self.say, self.counts))

    # -- the lab classifier ----------------------------------------------------------------
    def lab(self, severity_zero: bool = False):
        """How well a linear classifier tells the lab from channel statistics (this dataset or its severity-0 twin)."""
        from ..datasets.synthetic.twin import severity_twin
        from .lab import lab_separability

        def compute():
            data = self._once("twin", lambda: severity_twin(self.dataset, 0.0, self.progress)) \
                if severity_zero else self.dataset
            return lab_separability(data, seed=self.settings.split_seed)

        return self._once(("lab", severity_zero), compute)
