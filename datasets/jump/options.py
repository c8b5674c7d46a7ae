"""The options of a JUMP-CP preparation run: what the prepared data depends on, where it is read and written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...constants import CHANNELS
from ...paths import cache_dir
from .fetch import DEFAULT_ROOT
from .metadata import REFERENCE_DROPPED_BATCHES
from .preprocess import CLIP_QUANTILE, PREPROCESSING_VERSION


def default_out() -> Path:
    """Where ``bench data prepare jump`` writes and the ``jump`` loader reads by default."""
    return cache_dir() / "jump"


@dataclass(frozen=True)
class PrepareOptions:
    """Everything a preparation run depends on (see ``bench data prepare jump --help``)."""

    root: str = DEFAULT_ROOT
    sources: tuple[str, ...] = ("source_3", "source_8")
    drop_reference_batches: bool = True
    min_sites: int = 36
    out: Path | None = None
    workers: int = 16
    max_plates: int | None = None
    metadata: Path | None = None
    crop: int = 512
    attempts: int = 3
    backoff_s: float = 1.0

    @property
    def out_dir(self) -> Path:
        return Path(self.out).expanduser() if self.out is not None else default_out()

    @property
    def dropped_batches(self) -> dict[str, tuple[str, ...]]:
        return dict(REFERENCE_DROPPED_BATCHES) if self.drop_reference_batches else {}

    def settings(self) -> dict:
        """What determines the prepared data (not where it is read from, nor how fast)."""
        return {"sources": list(self.sources),
                "dropped_batches": {k: list(v) for k, v in self.dropped_batches.items()},
                "min_sites": self.min_sites, "crop": self.crop, "clip_quantile": CLIP_QUANTILE,
                "channels": list(CHANNELS), "preprocessing": PREPROCESSING_VERSION}
