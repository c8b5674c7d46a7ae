"""Named hyper-parameter presets for ``bench run --preset``: one table, applied through the methods' config fields.

A preset is a set of config values; a method takes those of them that are fields of
its ``Config`` and skips the rest (``n_controls`` means nothing to ERM), so one
preset serves every method. Where the reference trains one family of methods
differently, the preset also holds values for the configs of one class and its
subclasses, which win over its common values. ``paper`` is the reference setting of
the study (DESIGN.md §2): ResNet-50, 256 px crops with flips, Adam at a constant lr 1e-3 (no weight
average), up to 200 epochs with early stopping after 20, one-plate batches of 64 treated + 128 DMSO
images with gradient accumulation 8; ERM's mixed batches of 64 (ERM, AdaBN and the
test-time methods that start from ERM's model: every config of class ``ERMConfig``)
take a step after every batch. It is meant for a GPU: on CUDA the ResNet methods run
with bf16 mixed precision, channels-last, pinned memory and loader workers (see
:mod:`benchmark.core.training.accel`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UnknownNameError


def class_path(cls: type) -> str:
    """``module.QualifiedName`` of a class: how a preset names the configs some of its values are for."""
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class Preset:
    """A named set of config values, and values for the configs of given classes (and their subclasses)."""

    name: str
    description: str
    values: Mapping[str, Any]
    for_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """By :func:`class_path` of a config class: values over ``values`` for that class and its subclasses."""

    def values_for(self, config_cls: type) -> dict[str, Any]:
        """The values that apply to ``config_cls``, restricted to its fields (the others are skipped)."""
        lineage = {class_path(cls) for cls in config_cls.__mro__}
        values = dict(self.values)
        for path, specific in self.for_configs.items():
            if path in lineage:
                values.update(specific)
        fields = {f.name for f in dataclasses.fields(config_cls)}
        return {key: value for key, value in values.items() if key in fields}


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("paper", "reference setting of Sanchez-Fernandez et al. 2026 (GPU): ResNet-50, 256 px crops, "
                    "Adam 1e-3, <=200 epochs, patience 20, 64 treated + 128 DMSO per one-plate batch with "
                    "grad. accumulation 8; ERM-trained methods step after every batch of 64",
           {"backbone": "resnet50", "crop": 256, "eval_crop": 256, "lr": 1e-3, "schedule": "constant", "max_epochs": 200, "patience": 20,
            "augment": "flips", "weight_average": 0.0,
            "grad_accum": 8,
            "n_treated": 64, "batch_size": 64, "n_controls": 128, "eval_batch_size": 256},
           for_configs={"benchmark.methods.erm.ERMConfig": {"grad_accum": 1}}),  # ERM, AdaBN, TENT, DeYO, ROID
]}
"""Every preset by name (the one table)."""


def get_preset(name: str) -> Preset:
    """The preset called ``name``; unknown names list the valid ones."""
    if name not in PRESETS:
        raise UnknownNameError("preset", name, PRESETS)
    return PRESETS[name]


def preset_values(name: str, config_cls: type) -> dict[str, Any]:
    """The values of preset ``name`` for ``config_cls`` (:meth:`Preset.values_for`)."""
    return get_preset(name).values_for(config_cls)
