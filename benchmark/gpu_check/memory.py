"""GPU memory of a stage: torch's allocator peaks in the stage's own process, the card's peak from ``nvidia-smi``."""

from __future__ import annotations

import shutil
import subprocess
import threading
from typing import Any


def torch_memory(device: str) -> dict[str, Any]:
    """torch's peak allocated and reserved GPU memory of this process so far (empty on the CPU)."""
    import torch

    if device != "cuda":
        return {}
    return {"torch_max_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "torch_max_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def peak_since_last(device: str) -> dict[str, Any]:
    """``peak allocated GiB`` since the previous call (for one table row), then a fresh count; empty on the CPU."""
    import torch

    if device != "cuda":
        return {}
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return {"peak allocated GiB": round(peak, 2)}


class CardMemory:
    """Polls ``nvidia-smi`` twice a second in a thread; :meth:`peak` is the highest memory use seen (MiB)."""

    def __init__(self) -> None:
        self.smi = shutil.which("nvidia-smi")
        self.value: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> CardMemory:
        if self.smi:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run([self.smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5, check=False).stdout.split()
                used = int(out[0]) if out else None
            except (OSError, ValueError, subprocess.SubprocessError):
                used = None
            if used is not None:
                self.value = max(self.value or 0, used)
            self._stop.wait(0.5)
