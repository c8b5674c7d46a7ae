"""Run the probe panel on a dataset: every selected probe measured, a failing one reported, never fatal."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..datasets import Dataset
from ..errors import BenchError
from ..protocol.method_calls import StageError
from .inputs import Inputs
from .probes import Probe, select_probes
from .settings import PanelSettings


@dataclass(frozen=True)
class ProbeResult:
    """One row of the panel: the measured value and whether it meets the target, or why it could not be measured."""

    probe: Probe
    measured: float | None = None
    detail: str = ""
    error: str | None = None

    @property
    def passed(self) -> bool | None:
        """True / False against the target; None when the probe could not be measured or has no target (a
        finding, reported beside the panel)."""
        if self.measured is None or self.probe.reported:
            return None
        return self.probe.target.passes(self.measured)


@dataclass
class PanelResult:
    """The panel's rows and how they were computed."""

    dataset: Dataset
    settings: PanelSettings
    rows: list[ProbeResult]
    counts: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    created: str = ""


def _describe(exc: Exception) -> str:
    if isinstance(exc, (BenchError, StageError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def run_panel(dataset: Dataset, settings: PanelSettings = PanelSettings(), probes: Sequence[str] | None = None,
              log: Callable[[str], None] | None = None, progress: bool = False) -> PanelResult:
    """Measure the probes called ``probes`` (default: all, :data:`~.probes.PROBES`) on ``dataset``.

    Parameters
    ----------
    dataset
        An opened dataset (the severity-0 twin of the lab probe is generated from its settings).
    settings
        Folds, seeds, method settings and results folder (:class:`~.inputs.PanelSettings`).
    probes
        Names of the probes to run, in any order (rows come in table order); unknown names are an error.
    log
        Called with one progress line per step (``None``: silent).
    progress
        Show a progress bar when a dataset is generated.

    Returns
    -------
    PanelResult
        One :class:`ProbeResult` per probe; a probe whose inputs failed carries the error instead of a value.
    """
    chosen = select_probes(list(probes or []))
    say = log or (lambda _line: None)
    start = time.perf_counter()
    inputs = Inputs(dataset, settings, say, progress)
    rows = []
    for probe in chosen:
        try:
            m = probe.measure(inputs)
        except Exception as exc:  # noqa: BLE001 - a probe's failure is its row, not the panel's end
            if not isinstance(exc, (BenchError, StageError)):
                say(f"[{probe.name}] failed:\n{''.join(traceback.format_exception(exc))}")
            rows.append(ProbeResult(probe, error=_describe(exc)))
            continue
        rows.append(ProbeResult(probe, float(m.value), m.detail))
        say(f"[{probe.name}] measured {m.value:.4f} (target {probe.target.text(probe.unit)}): {m.detail}")
    counts = {k: int(inputs.counts.get(k, 0)) for k in ("records_ok", "records_skipped", "records_failed",
                                                         "label_shift_fitted", "label_shift_reused")}
    return PanelResult(dataset, settings, rows, counts, time.perf_counter() - start,
                       datetime.now(timezone.utc).isoformat(timespec="seconds"))


def panel_json(result: PanelResult) -> dict[str, Any]:
    """The panel as plain JSON-ready data (``bench data calibrate --json``)."""
    s, ds = result.settings, result.dataset
    rows = [{"name": r.probe.name, "title": r.probe.title, "unit": r.probe.unit,
             "target": {"low": r.probe.target.low, "high": r.probe.target.high,
                        "text": r.probe.target.text(r.probe.unit)},
             "reference": r.probe.reference or None, "measured": r.measured, "passed": r.passed,
             "reported": r.probe.reported,
             "detail": r.detail or None, "error": r.error} for r in result.rows]
    return {"dataset": {"name": ds.name, "version": ds.meta.version, "fingerprint": ds.fingerprint,
                        "root": str(ds.root)},
            "profile": {"quick": s.quick, "smoke": s.smoke, "seeds": list(s.seeds),
                        "folds": "all" if s.folds is None else list(s.folds), "split_seed": s.split_seed,
                        "device": s.device},
            "results_dir": str(s.results), "created": result.created, "probes": rows,
            "summary": {"passed": sum(r.passed is True for r in result.rows),
                        "failed": sum(r.passed is False for r in result.rows),
                        "reported": sum(r.probe.reported and r.measured is not None for r in result.rows),
                        "errors": sum(r.error is not None for r in result.rows)},
            "fits": dict(result.counts), "wall_s": round(result.wall_s, 1)}
