"""How the probe panel runs: folds, seeds, method settings, where records go."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..paths import cache_dir


@dataclass(frozen=True)
class PanelSettings:
    """How the panel runs: which folds and seeds, which method settings, where records go."""

    quick: bool = False
    """Seed 0 and fold 0 of each split only (the method settings stay the full ones)."""
    smoke: bool = False
    """The methods' ``quick_overrides`` (records marked ``quick``): a smoke test, the numbers mean nothing."""
    device: str = "auto"
    results_dir: Path | None = None
    """Folder of the run records (default: :func:`default_results_dir`)."""
    split_seed: int = 0

    @property
    def seeds(self) -> tuple[int, ...]:
        from ..protocol.loop import DEFAULT_SEEDS

        return (0,) if self.quick else tuple(DEFAULT_SEEDS)

    @property
    def folds(self) -> list[int] | None:
        """Fold indices of every split (None: all)."""
        return [0] if self.quick else None

    @property
    def results(self) -> Path:
        return Path(self.results_dir) if self.results_dir is not None else default_results_dir()


def default_results_dir() -> Path:
    """``<cache>/calibration``: records land in ``<dataset>-<fingerprint>/`` below it, as ``bench run`` writes them."""
    return cache_dir() / "calibration"
