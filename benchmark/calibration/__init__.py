"""The probe panel that calibrates a dataset (``bench data calibrate``).

A fixed table of probes (:mod:`.probes`), each a target and a function measuring it
from shared inputs (:mod:`.inputs`): ordinary run records of the reference methods
(run through the protocol, reused when already there), in-process label-shift fits
(:mod:`.shift_runs`) and a lab classifier on channel statistics (:mod:`.lab`);
:func:`.panel.run_panel` measures them, :mod:`.report` prints them.

Importing this package loads only the probe table; the protocol (torch) loads with
:mod:`.panel`.
"""

from __future__ import annotations

from .probes import PROBES, Measurement, Probe, Target, select_probes

__all__ = ["PROBES", "Measurement", "Probe", "Target", "select_probes"]
