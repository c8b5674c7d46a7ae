"""The stages of the GPU check: name -> (report heading, function), the order they run in, and what each gave."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .env import stage_env
from .loader import stage_loader
from .paper import stage_paper, stage_synth
from .training import stage_data_wait, stage_resnet50

STAGES: dict[str, tuple[str, Callable[..., dict[str, Any]]]] = {
    "env": ("Machine", stage_env),
    "synth": ("Simulated dataset for stage 4", stage_synth),
    "loader": ("1. Packed store vs one TIFF per site", stage_loader),
    "resnet50": ("2. ResNet-50 training throughput", stage_resnet50),
    "data_wait": ("3. Data-wait share of a training step (real loader)", stage_data_wait),
    "paper": ("4. `bench run --preset paper` on a small simulated dataset", stage_paper),
}
"""Stage name -> (report heading, function); the functions run in child processes."""

ORDER = ("env", "resnet50", "loader", "data_wait", "synth", "paper")
"""The order the stages run in (``synth`` starts right after ``env`` and runs alongside the next three)."""


@dataclass
class StageResult:
    """What one stage gave: its status, wall time, result, error, and the card's peak memory during it."""

    name: str
    status: str = "not run"
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    card_peak_mib: int | None = None
