"""Comparing run records across executors: the same record apart from its timings."""

from __future__ import annotations


def untimed(value):
    """``value`` without its timings (keys ending in ``_s``, e.g. a plate's ``adapt_predict_s``)."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if not k.endswith("_s")}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value
