"""The benchmark splits: leave-source-out and leave-batch-out, each with in-domain held-out wells.

Every fold has four disjoint parts (image ids of the dataset index):

- ``train`` — labelled treated images and DMSO images of the training plates, minus
  the in-domain held-out wells;
- ``val`` — whole held-out *training-domain* batches, for model selection (never target data);
- ``in_domain`` — one well per compound per training plate (~25 % of treated wells),
  all its sites; evaluated on those plates (their DMSO images are context);
- ``target`` — every image of the held-out plates (sources or batches).

Folds are deterministic given the dataset index and ``split_seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from .errors import DataError, UnknownNameError

VAL_FRACTION = 0.2
"""Share of the training batches held out for validation (at least one)."""
MAX_BATCH_FOLDS = 5


@dataclass(frozen=True)
class Fold:
    """One fold of a split (see module docstring)."""

    split: str
    index: int
    held_out: tuple[str, ...]  # the held-out sources (source_out) or batches (batch_out)
    train_ids: np.ndarray
    val_ids: np.ndarray
    in_domain_ids: np.ndarray
    target_ids: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.split}/{self.index}"

    def describe(self) -> str:
        return (f"{self.name}: held out {', '.join(self.held_out)}; train {len(self.train_ids)}, "
                f"val {len(self.val_ids)}, in-domain {len(self.in_domain_ids)}, target {len(self.target_ids)} images")


def _rng(split_seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([split_seed, *keys])


def _batches_by_source(index: pl.DataFrame) -> dict[str, list[str]]:
    table = index.select("source", "batch").unique().sort("source", "batch")
    out: dict[str, list[str]] = {}
    for source, batch in table.iter_rows():
        out.setdefault(source, []).append(batch)
    return out


def _pick_val_batches(by_source: dict[str, list[str]], rng: np.random.Generator) -> list[str]:
    """Round(20 %) of the training batches, taken in turn from different sources."""
    n_total = sum(len(b) for b in by_source.values())
    n_val = max(1, round(VAL_FRACTION * n_total))
    pools = {s: list(rng.permutation(b)) for s, b in by_source.items()}
    order = list(rng.permutation(sorted(pools)))
    chosen: list[str] = []
    while len(chosen) < n_val:
        progressed = False
        for source in order:
            if pools[source] and len(pools[source]) > 1 and len(chosen) < n_val:
                chosen.append(str(pools[source].pop()))
                progressed = True
        if not progressed:  # only single-batch sources left: take from them
            rest = [b for s in order for b in pools[s]]
            if not rest:
                break
            chosen.append(str(rest[0]))
            pools = {s: [b for b in p if b != rest[0]] for s, p in pools.items()}
    if n_val >= n_total:
        raise DataError("too few training batches to hold out a validation batch; the dataset needs "
                        "at least two batches outside the target")
    return chosen


def _split_in_domain(index: pl.DataFrame, plates: list[str], rng: np.random.Generator) -> np.ndarray:
    """Image ids of one treated well per (plate, compound), chosen at random."""
    wells = (index.filter(pl.col("plate").is_in(plates) & ~pl.col("is_control"))
             .select("plate", "label", "well").unique().sort("plate", "label", "well"))
    held: list[tuple[str, str]] = []
    for (plate, _label), group in wells.group_by("plate", "label", maintain_order=True):
        if len(group) >= 2:
            held.append((plate, group["well"][int(rng.integers(len(group)))]))
    if not held:
        return np.empty(0, dtype=np.int64)
    keys = pl.DataFrame(held, schema=["plate", "well"], orient="row")
    return index.join(keys, on=["plate", "well"], how="semi")["image_id"].to_numpy()


def _make_fold(index: pl.DataFrame, split: str, k: int, held_out: list[str], target_col: str,
               split_seed: int) -> Fold:
    rng = _rng(split_seed, k)
    target_mask = index[target_col].is_in(held_out)
    rest = index.filter(~target_mask)
    val_batches = _pick_val_batches(_batches_by_source(rest), rng)
    train_part = rest.filter(~pl.col("batch").is_in(val_batches))
    in_domain = _split_in_domain(train_part, train_part["plate"].unique().sort().to_list(), rng)
    train_ids = np.setdiff1d(train_part["image_id"].to_numpy(), in_domain)
    return Fold(split=split, index=k, held_out=tuple(held_out), train_ids=train_ids,
                val_ids=rest.filter(pl.col("batch").is_in(val_batches))["image_id"].to_numpy(),
                in_domain_ids=np.sort(in_domain), target_ids=index.filter(target_mask)["image_id"].to_numpy())


def source_out(index: pl.DataFrame, split_seed: int = 0) -> list[Fold]:
    """Leave one source (lab) out: one fold per source."""
    sources = index["source"].unique().sort().to_list()
    if len(sources) < 2:
        raise DataError(f"source_out needs at least 2 sources, the dataset has {len(sources)}")
    return [_make_fold(index, "source_out", k, [s], "source", split_seed) for k, s in enumerate(sources)]


def batch_out(index: pl.DataFrame, split_seed: int = 0) -> list[Fold]:
    """Hold out whole batches in min(5, #batches) folds; every source keeps training batches."""
    by_source = _batches_by_source(index)
    n_batches = sum(len(b) for b in by_source.values())
    k = min(MAX_BATCH_FOLDS, n_batches)
    rng = _rng(split_seed, 10_000)
    assignment: dict[int, list[str]] = {i: [] for i in range(k)}
    counter = int(rng.integers(k))
    for source in sorted(by_source):
        batches = list(rng.permutation(by_source[source]))
        if len(batches) < 2:
            continue  # a single-batch source always stays in training
        for b in batches:
            assignment[counter % k].append(str(b))
            counter += 1
    folds = [held for held in assignment.values() if held]
    if not folds:
        raise DataError("batch_out needs a source with at least 2 batches")
    return [_make_fold(index, "batch_out", i, sorted(held), "batch", split_seed) for i, held in enumerate(folds)]


SPLITS = {"source_out": source_out, "batch_out": batch_out}


def make_folds(index: pl.DataFrame, split: str, split_seed: int = 0) -> list[Fold]:
    """The folds of ``split`` (``source_out`` or ``batch_out``) for a dataset index."""
    if split not in SPLITS:
        raise UnknownNameError("split", split, SPLITS)
    return SPLITS[split](index, split_seed)
