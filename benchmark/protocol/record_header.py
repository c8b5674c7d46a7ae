"""The header of a run record: what ran, on what, how (everything before ``status``).

:func:`record_header` is the one builder of it; :func:`benchmark.protocol.loop.run_protocol` adds the
run's outcome (status, metrics, scenario blocks, fit report, timings, worker) and
:func:`benchmark.records.write_record` writes the whole. The keys come in a fixed order, which is
the order of the record's JSON: ``record_format, profile, created, method, split, seed, dataset,
class_names, device, environment, orders``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ..datasets import Dataset
from ..method_info import MethodInfo
from ..records import FULL, QUICK, RECORD_FORMAT, json_safe
from ..splits import Fold
from .orders import orders_header


def split_header(dataset: Dataset, fold: Fold, n_folds: int, split_seed: int) -> dict[str, Any]:
    """The record's ``split``: the fold, what it holds out, its validation batches and image counts."""
    val_batches = dataset.index[fold.val_ids]["batch"].unique().sort().to_list()
    return {"name": fold.split, "fold": fold.index, "n_folds": n_folds, "split_seed": split_seed,
            "held_out": list(fold.held_out),
            "held_out_kind": "source" if fold.split == "source_out" else "batch",
            "validation_batches": val_batches, "description": fold.describe(),
            "n_images": {"train": len(fold.train_ids), "val": len(fold.val_ids),
                         "in_domain": len(fold.in_domain_ids), "target": len(fold.target_ids)}}


def record_header(info: MethodInfo, dataset: Dataset, fold: Fold, seed: int, *, n_folds: int, split_seed: int,
                  argument: str, quick: bool, overrides: Mapping[str, Any] | None, preset: str | None, device: str,
                  environment: dict[str, Any], order_scheme: str) -> dict[str, Any]:
    """The header of the record of one (fold, seed) run of ``info``'s method, dated now.

    ``argument``: the dataset as the run was asked for (a name or a folder); ``quick``: the smoke profile
    (its ``quick_overrides`` are recorded); ``overrides``: the ``--set`` values; ``environment``:
    :func:`benchmark.records.environment_info`; ``order_scheme``: :mod:`benchmark.protocol.orders`.
    """
    return {"record_format": RECORD_FORMAT, "profile": QUICK if quick else FULL,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "method": {"name": info.name, "access": str(info.access),
                       "description": info.description, "origin": info.origin,
                       "config": info.config, "overrides": json_safe(dict(overrides or {})),
                       "preset": preset,
                       "quick_overrides": info.quick_overrides if quick else {}},
            "split": split_header(dataset, fold, n_folds, split_seed), "seed": seed,
            "dataset": {"name": dataset.name, "argument": str(argument),
                        "version": dataset.meta.version, "fingerprint": dataset.fingerprint,
                        "settings": json_safe(dict(dataset.meta.settings)),
                        "image_shape": list(dataset.image_shape)},
            "class_names": list(dataset.meta.class_names), "device": device, "environment": environment,
            "orders": orders_header(order_scheme)}


__all__ = ["record_header", "split_header"]
