"""What the probes measure from, each computed on first use and kept for the other probes.

- :meth:`Inputs.accuracies`: a method's run records on both splits, run through
  :func:`benchmark.protocol.loop.run_protocol` (sealed, resumable: an ok record of the same
  config and data fingerprint in the results folder is reused, not refitted). The runs of
  :data:`SCENARIO_RUNS` also score a scenario (an ok record without its block is re-run
  to add it; one that holds it is reused).
- :meth:`Inputs.scenario_accuracy`: a method's mean accuracy at one level of a scenario,
  read from the blocks of those records.
- :meth:`Inputs.label_shift`: a built-in method fitted in this process on source_out
  folds, scored on full and on cut target plates (:mod:`.shift_runs`).
- :meth:`Inputs.lab`: a linear classifier of the lab on channel statistics (:mod:`.lab`).

A failure is kept too: every probe that needs the failed input reports the same error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..datasets import Dataset
from ..errors import BenchError
from ..records import read_record
from .settings import PanelSettings

SPLIT_ORDER = ("batch_out", "source_out")
SCENARIO_RUNS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("arm_bn", "batch_out"): ("label_shift",),
    ("cs_arm_bn", "batch_out"): ("label_shift",),
}
"""(method, split) -> the scenarios its panel runs score besides the plain evaluation: the label-shift
probes at Dirichlet α = 0.01 read ARM-BN's and CS-ARM-BN's leave-batch-out records."""


@dataclass(frozen=True)
class MethodAccuracies:
    """A method's accuracies over its records: in-domain over both splits, out-of-domain per split."""

    method: str
    in_domain: float
    out_of_domain: dict[str, float]
    n_records: int


@dataclass(frozen=True)
class ScenarioAccuracy:
    """A method's mean accuracy at one level of a scenario over its records of one split."""

    method: str
    split: str
    scenario: str
    level: str
    accuracy: float
    n_records: int


def method_accuracies(method: str, records: Mapping[str, Sequence[dict[str, Any]]]) -> MethodAccuracies:
    """Accuracies from ``method``'s ok records per split: in-domain over every record, out-of-domain per split."""
    in_domain = [r["metrics"]["in_domain"]["accuracy"] for split in SPLIT_ORDER for r in records[split]]
    out_of_domain = {split: float(np.mean([r["metrics"]["out_of_domain"]["accuracy"] for r in records[split]]))
                     for split in SPLIT_ORDER}
    return MethodAccuracies(method, float(np.mean(in_domain)), out_of_domain, len(in_domain))


def level_accuracy(records: Sequence[dict[str, Any]], scenario: str, level: str) -> float:
    """Mean accuracy at ``level`` of ``scenario`` over ``records`` (``record["scenarios"][scenario]["levels"]``).

    Raises :class:`BenchError` naming the first record that lacks the block or level, or where it did not score.
    """
    if not records:
        raise BenchError(f"no records to read scenario {scenario} level {level} from")
    values = []
    for record in records:
        where = f"{record.get('method', {}).get('name', '?')} {record.get('split', {}).get('name', '?')} " \
                f"fold {record.get('split', {}).get('fold', '?')} seed {record.get('seed', '?')}"
        block = (record.get("scenarios") or {}).get(scenario)
        if block is None:
            raise BenchError(f"the record of {where} has no {scenario} scenario block; rerun the panel to add it")
        found = (block.get("levels") or {}).get(level)
        if found is None:
            raise BenchError(f"the {scenario} block of {where} has no level {level} "
                             f"(levels: {', '.join(block.get('levels') or {}) or 'none'})")
        if found.get("status") == "failed" or "metrics" not in found:
            raise BenchError(f"{scenario} level {level} of {where} did not score "
                             f"({found.get('status')}: {found.get('error') or 'no error given'})")
        values.append(found["metrics"]["accuracy"])
    return float(np.mean(values))


class Inputs:
    """The panel's shared inputs on one dataset (see module docstring)."""

    def __init__(self, dataset: Dataset, settings: PanelSettings = PanelSettings(),
                 log: Callable[[str], None] | None = None, progress: bool = False,
                 scenario_runs: Mapping[tuple[str, str], tuple[str, ...]] = SCENARIO_RUNS):
        self.dataset, self.settings, self.progress = dataset, settings, progress
        self.scenario_runs = scenario_runs
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
    def records(self, method: str) -> dict[str, list[dict[str, Any]]]:
        """``method``'s ok records per split (run or reused), scoring the scenarios :data:`SCENARIO_RUNS` names."""
        return self._once(("records", method), lambda: self._records(method))

    def accuracies(self, method: str) -> MethodAccuracies:
        """``method``'s accuracies from its records of both splits (run or reused)."""
        return method_accuracies(method, self.records(method))

    def scenario_accuracy(self, method: str, scenario: str, level: str, split: str = "batch_out") -> ScenarioAccuracy:
        """``method``'s mean accuracy at ``level`` of ``scenario`` over its ``split`` records."""
        if scenario not in self.scenario_runs.get((method, split), ()):
            raise BenchError(f"the panel's {method} {split} runs do not score scenario {scenario}; "
                             f"add it to SCENARIO_RUNS in {__name__}")
        found = self.records(method)[split]
        return ScenarioAccuracy(method, split, scenario, level, level_accuracy(found, scenario, level), len(found))

    def _records(self, method: str) -> dict[str, list[dict[str, Any]]]:
        from ..protocol.loop import run_protocol

        s, found = self.settings, {}
        for split in SPLIT_ORDER:
            outcomes = run_protocol(method, split, self.dataset, seeds=s.seeds, folds=s.folds,
                                    split_seed=s.split_seed, device=s.device, results_dir=s.results,
                                    quick=s.smoke, log=self.say,
                                    scenarios=self.scenario_runs.get((method, split), ()))
            self.counts.update(f"records_{o.status}" for o in outcomes)
            failed = [o for o in outcomes if o.status == "failed"]
            if failed:
                first = failed[0]
                raise BenchError(f"{len(failed)} of {len(outcomes)} {method} {split} runs failed (first: fold "
                                 f"{first.fold} seed {first.seed}: {first.error}); see {first.path}, rerun to retry")
            found[split] = [read_record(o.path) for o in outcomes]
        return found

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
