"""The probe panel: one table of probes, each a name, a target and a function measuring it.

A probe's ``measure`` takes the panel's :class:`~benchmark.calibration.inputs.Inputs`
(run records, label-shift fits, the lab classifier; each computed on first use and
shared between probes) and returns a :class:`Measurement`. Adding a probe is one entry
in :data:`PROBES`. Targets are those of the simulator's calibration (issue 11; the
reference study is Sanchez-Fernandez et al. 2026, DESIGN.md §1); boundaries count as met.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BenchError, UnknownNameError

if TYPE_CHECKING:
    from .inputs import Inputs

TOLERANCE = 1e-9
"""A measured value this close to a bound meets it (float rounding of differences)."""
BN_METHODS = ("adabn", "arm_bn", "cs_arm_bn")
"""The BN-adaptation methods of the two 'best BN method' probes."""
UNITS = ("accuracy", "difference", "share")


@dataclass(frozen=True)
class Target:
    """The range a measured value should fall in (``None``: open on that side; bounds included)."""

    low: float | None = None
    high: float | None = None

    def passes(self, value: float) -> bool:
        """Whether ``value`` is in range (within :data:`TOLERANCE` of a bound counts as in)."""
        if not math.isfinite(value):
            return False
        return ((self.low is None or value >= self.low - TOLERANCE)
                and (self.high is None or value <= self.high + TOLERANCE))

    def text(self, unit: str = "accuracy") -> str:
        """``0.90 – 0.96``, ``≥ 70 %``, ``≤ 0.05``, ``within ± 0.02``."""
        fmt = (lambda v: f"{100 * v:.0f} %") if unit == "share" else (lambda v: f"{v:.2f}")
        if self.low is not None and self.high is not None:
            if math.isclose(self.low, -self.high):
                return f"within ± {fmt(self.high)}"
            return f"{fmt(self.low)} – {fmt(self.high)}"
        if self.low is not None:
            return f"≥ {fmt(self.low)}"
        if self.high is not None:
            return f"≤ {fmt(self.high)}"
        return "any"


@dataclass(frozen=True)
class Measurement:
    """A probe's measured value and a line saying what it was computed from."""

    value: float
    detail: str = ""


@dataclass(frozen=True)
class Probe:
    """One entry of the panel."""

    name: str
    title: str
    target: Target
    measure: Callable[[Inputs], Measurement]
    unit: str = "accuracy"  # accuracy (in [0, 1]), difference (of accuracies) or share (a ratio)
    reference: str = ""     # the reference study's value, where there is one


# ----------------------------------------------------------------------------- measurements

def _erm_in_domain(inputs: Inputs) -> Measurement:
    erm = inputs.accuracies("erm")
    return Measurement(erm.in_domain, f"mean of {erm.n_records} records (both splits)")


def _erm_gap(split: str) -> Callable[[Inputs], Measurement]:
    def measure(inputs: Inputs) -> Measurement:
        erm = inputs.accuracies("erm")
        return Measurement(erm.in_domain - erm.out_of_domain[split],
                           f"in-domain {erm.in_domain:.3f}, {split} {erm.out_of_domain[split]:.3f}")
    return measure


def _best_bn(inputs: Inputs, split: str):
    """The BN-adaptation method with the highest out-of-domain accuracy on ``split``, and its accuracies."""
    found = {name: inputs.accuracies(name) for name in BN_METHODS}
    best = max(found, key=lambda name: found[name].out_of_domain[split])
    return best, found[best]


def _bn_batch_gap(inputs: Inputs) -> Measurement:
    name, acc = _best_bn(inputs, "batch_out")
    return Measurement(acc.in_domain - acc.out_of_domain["batch_out"],
                       f"{name}: in-domain {acc.in_domain:.3f}, batch_out {acc.out_of_domain['batch_out']:.3f}")


def _bn_source_recovery(inputs: Inputs) -> Measurement:
    erm = inputs.accuracies("erm")
    name, acc = _best_bn(inputs, "source_out")
    gap = erm.in_domain - erm.out_of_domain["source_out"]
    if gap <= 0:
        raise BenchError(f"ERM has no source-out gap to recover (in-domain {erm.in_domain:.3f}, "
                         f"source_out {erm.out_of_domain['source_out']:.3f})")
    recovered = acc.out_of_domain["source_out"] - erm.out_of_domain["source_out"]
    return Measurement(recovered / gap, f"{name} source_out {acc.out_of_domain['source_out']:.3f}; ERM in-domain "
                                        f"{erm.in_domain:.3f}, source_out {erm.out_of_domain['source_out']:.3f}")


def _intensity_margin(inputs: Inputs) -> Measurement:
    erm, base = inputs.accuracies("erm"), inputs.accuracies("intensity_stats")
    return Measurement(erm.in_domain - base.in_domain,
                       f"ERM in-domain {erm.in_domain:.3f}, intensity_stats in-domain {base.in_domain:.3f}")


def _lab(severity_zero: bool) -> Callable[[Inputs], Measurement]:
    def measure(inputs: Inputs) -> Measurement:
        lab = inputs.lab(severity_zero)
        severity = "" if lab.severity is None else f", severity {lab.severity:g}"
        detail = (f"accuracy {lab.accuracy:.3f}, chance {lab.chance:.3f}; {lab.n_images} images, "
                  f"{lab.n_folds}-fold CV grouped by plate{severity}")
        return Measurement(lab.accuracy - lab.chance if severity_zero else lab.accuracy, detail)
    return measure


def _label_shift(method: str) -> Callable[[Inputs], Measurement]:
    def measure(inputs: Inputs) -> Measurement:
        shift = inputs.label_shift(method)
        return Measurement(shift.loss, f"full plates {shift.full:.3f}, cut plates {shift.cut:.3f} "
                                       f"(source_out, {shift.n_folds} fold(s), seed 0)")
    return measure


# ----------------------------------------------------------------------------- the panel

PROBES: tuple[Probe, ...] = (
    Probe("erm_in_domain", "ERM in-domain accuracy", Target(0.90, 0.96), _erm_in_domain,
          reference="0.939 ± 0.005"),
    Probe("erm_batch_gap", "ERM in-domain − leave-batch-out", Target(0.04, 0.12), _erm_gap("batch_out"),
          "difference", "0.077"),
    Probe("erm_source_gap", "ERM in-domain − leave-source-out", Target(0.08, 0.25), _erm_gap("source_out"),
          "difference", "larger than batch-out"),
    Probe("bn_batch_gap", "best BN adaptation (AdaBN / ARM-BN / CS-ARM-BN): in-domain − leave-batch-out",
          Target(-0.02, 0.02), _bn_batch_gap, "difference", "0.939 vs 0.935"),
    Probe("bn_source_recovery", "best BN adaptation on leave-source-out: share of ERM's gap recovered",
          Target(low=0.70), _bn_source_recovery, "share"),
    Probe("intensity_margin", "ERM in-domain − intensity-statistics baseline in-domain", Target(low=0.10),
          _intensity_margin, "difference", "morphology must matter"),
    Probe("lab_severity1", "lab from per-image channel statistics (linear), this dataset", Target(low=0.95),
          _lab(False)),
    Probe("lab_severity0", "lab from channel statistics at severity 0: accuracy − chance", Target(high=0.10),
          _lab(True), "difference"),
    Probe("label_shift_arm_bn", "label shift (2 classes per target plate): ARM-BN accuracy loss",
          Target(low=0.30), _label_shift("arm_bn"), "difference", "earlier meta-learning 0.939 → 0.228"),
    Probe("label_shift_ben", "label shift (2 classes per target plate): BEN accuracy loss", Target(high=0.05),
          _label_shift("ben"), "difference"),
    Probe("label_shift_erm", "label shift (2 classes per target plate): ERM accuracy loss", Target(high=0.05),
          _label_shift("erm"), "difference"),
)
"""Every probe, in table order."""


def _check_table(probes: tuple[Probe, ...]) -> None:
    names = [p.name for p in probes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BenchError(f"probe name(s) {', '.join(twice)} appear twice in the probe table; rename one")
    bad = [p.name for p in probes if p.unit not in UNITS]
    if bad:
        raise BenchError(f"probe(s) {', '.join(bad)} have an unknown unit; valid: {', '.join(UNITS)}")


_check_table(PROBES)


def select_probes(names: list[str] | None = None) -> list[Probe]:
    """The probes called ``names`` in table order (all when ``names`` is empty); unknown names list the valid ones."""
    if not names:
        return list(PROBES)
    by_name = {p.name: p for p in PROBES}
    for name in names:
        if name not in by_name:
            raise UnknownNameError("probe", name, by_name)
    return [p for p in PROBES if p.name in set(names)]
