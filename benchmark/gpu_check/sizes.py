"""The settings of each mode of the GPU check: the real sizes on a CUDA machine, tiny ones for the CPU smoke test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sizes:
    """The settings of one mode (a real GPU, or the CPU smoke test)."""

    device: str
    loader_images: int
    loader_px: int
    loader_batch: int
    backbone: str
    train_px: int
    train_batch: int
    warmup_steps: int
    timed_steps: int
    wait_plates: int
    wait_sites: int
    wait_stored_px: int
    wait_crop: int
    wait_batch: int
    wait_epochs: int
    synth: dict[str, Any]
    paper_methods: tuple[str, ...]
    paper_set: tuple[str, ...]
    boxes: dict[str, float]
    measure_s: float = 15.0
    """Time box of one loader measurement (it stops early, rating what it read)."""


GPU = Sizes("cuda", loader_images=2048, loader_px=256, loader_batch=64, backbone="resnet50", train_px=256,
            train_batch=64, warmup_steps=5, timed_steps=25, wait_plates=6, wait_sites=4, wait_stored_px=512,
            wait_crop=256, wait_batch=64, wait_epochs=3,
            synth={"size": "tiny", "n_sources": 2, "batches_per_source": 2, "plates_per_batch": 1,
                   "sites_per_well": 1, "image_size": 256},
            paper_methods=("erm", "cs_arm_bn", "ben", "arm_bn"), paper_set=("max_epochs=2",),
            boxes={"env": 60, "synth": 330, "resnet50": 120, "loader": 120, "data_wait": 150, "paper": 300,
                   "paper_run": 110})
SMOKE = Sizes("cpu", loader_images=24, loader_px=32, loader_batch=8, backbone="resnet_micro", train_px=32,
              train_batch=4, warmup_steps=1, timed_steps=2, wait_plates=2, wait_sites=1, wait_stored_px=24,
              wait_crop=16, wait_batch=8, wait_epochs=1,
              synth={"size": "tiny", "n_sources": 2, "batches_per_source": 2, "plates_per_batch": 1,
                     "sites_per_well": 1, "image_size": 16},
              paper_methods=("erm",), paper_set=("max_epochs=1", "backbone=resnet_micro", "crop=16", "eval_crop=16"),
              boxes={"env": 60, "synth": 120, "resnet50": 60, "loader": 60, "data_wait": 60, "paper": 120,
                     "paper_run": 100}, measure_s=2.0)
MODES = {"gpu": GPU, "smoke": SMOKE}
CPU_THREADS = 1
"""torch threads of the CPU smoke test (two threads on a busy 2-core CPU are many times slower than one)."""
