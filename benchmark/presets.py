"""Named hyper-parameter presets for ``bench run --preset``: one table, applied through the methods' config fields.

A preset is a set of config values; a method takes those of them that are fields of
its ``Config`` and skips the rest (``n_controls`` means nothing to ERM), so one
preset serves every method. ``paper`` is the reference setting of the study
(DESIGN.md §2): ResNet-50, 256 px crops, Adam at a constant lr 1e-3, up to 200 epochs with early
stopping after 20, gradient accumulation 8, one-plate batches of 64 treated + 128
DMSO images. It is meant for a GPU: on CUDA the ResNet methods run with bf16 mixed
precision, channels-last, pinned memory and loader workers (see
:mod:`benchmark.core.accel`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import UnknownNameError


@dataclass(frozen=True)
class Preset:
    """A named set of config values."""

    name: str
    description: str
    values: Mapping[str, Any]


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("paper", "reference setting of Sanchez-Fernandez et al. 2026 (GPU): ResNet-50, 256 px crops, "
                    "Adam 1e-3, <=200 epochs, patience 20, grad. accumulation 8, 64 treated + 128 DMSO per batch",
           {"backbone": "resnet50", "crop": 256, "lr": 1e-3, "schedule": "constant", "max_epochs": 200, "patience": 20,
            "grad_accum": 8,
            "n_treated": 64, "batch_size": 64, "n_controls": 128}),
]}
"""Every preset by name (the one table)."""


def get_preset(name: str) -> Preset:
    """The preset called ``name``; unknown names list the valid ones."""
    if name not in PRESETS:
        raise UnknownNameError("preset", name, PRESETS)
    return PRESETS[name]


def preset_values(name: str, config_cls: type) -> dict[str, Any]:
    """The values of preset ``name`` that are fields of ``config_cls`` (the others are skipped)."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    return {key: value for key, value in get_preset(name).values.items() if key in fields}
