"""Helpers shared by the performance suite: subsets of the suite's datasets."""

from __future__ import annotations

import polars as pl

from benchmark.datasets.dataset import Dataset, LabelledImages


def subset(dataset: Dataset, plates: list[str]) -> LabelledImages:
    """The labelled images of ``plates``."""
    return dataset.labelled(dataset.index.filter(pl.col("plate").is_in(plates)))


def plates_of(dataset: Dataset) -> list[str]:
    """The dataset's plates in index order."""
    return dataset.index["plate"].unique(maintain_order=True).to_list()
