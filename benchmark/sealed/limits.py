"""Per-run limits of a sealed worker (a module of its own: the CLI reads its defaults without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TIME_LIMIT_S = 24 * 3600.0
"""Per-run wall-clock limit of ``bench run`` (generous: a full GPU run of the reference setting takes hours)."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits of a sealed worker: wall time (s) and data memory (GB); None = no limit."""

    time_s: float | None = DEFAULT_TIME_LIMIT_S
    memory_gb: float | None = None
