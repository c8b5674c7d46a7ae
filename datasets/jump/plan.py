"""Which sites to prepare: poscon and DMSO sites of the selected plates, after the reference filter."""

from __future__ import annotations

import polars as pl

from ...constants import CLASS_IDS, COMPOUND_TO_CLASS, DMSO_ID, DMSO_LABEL
from ...errors import DataError
from .loaddata import key_columns

SITE_COLUMNS = ("plate_id", "source", "batch", "plate", "well", "site", "compound", "label", "is_control")


def label_sites(plate: dict, load_data: pl.DataFrame, wells: pl.DataFrame) -> pl.DataFrame:
    """Attach compound, label and is_control to a plate's sites; keep the 8 poscons and DMSO only.

    ``plate`` has keys source, batch, plate, plate_id; ``wells`` is the well table.
    """
    layout = (wells.filter((pl.col("Metadata_Source") == plate["source"]) & (pl.col("Metadata_Plate") == plate["plate"]))
              .select(pl.col("Metadata_Well").alias("well"), pl.col("Metadata_JCP2022").alias("compound"))
              .unique("well", keep="first"))
    keep = [*CLASS_IDS, DMSO_ID]
    sites = load_data.join(layout, on="well", how="inner").filter(pl.col("compound").is_in(keep))
    return sites.with_columns(
        plate_id=pl.lit(plate["plate_id"]), source=pl.lit(plate["source"]), batch=pl.lit(plate["batch"]),
        plate=pl.lit(plate["plate"]),
        label=pl.col("compound").replace_strict({**COMPOUND_TO_CLASS, DMSO_ID: DMSO_LABEL}, return_dtype=pl.Int8),
    ).with_columns(is_control=pl.col("label") == DMSO_LABEL).select(*SITE_COLUMNS, *key_columns())


def reference_filter(sites: pl.DataFrame, min_sites: int) -> pl.DataFrame:
    """Drop every (source, compound, well position) with ``min_sites`` or fewer sites over its source.

    This removes plates' deviating layouts (a poscon in an unusual well, a
    compound missing from most plates), as the reference pipeline does.
    """
    counts = sites.group_by("source", "compound", "well").agg(n=pl.len())
    kept = counts.filter(pl.col("n") > min_sites).select("source", "compound", "well")
    return sites.join(kept, on=["source", "compound", "well"], how="semi")


def order_plates(plates: pl.DataFrame, max_plates: int | None) -> pl.DataFrame:
    """Plates in preparation order; with ``max_plates`` the first N of a round robin over batches.

    The round robin alternates sources and batches, so a small first try already
    holds several sources and batches (what the splits need).
    """
    by_source: dict[str, list[list[dict]]] = {}
    for (source, _batch), group in plates.group_by("source", "batch", maintain_order=True):
        by_source.setdefault(source, []).append(group.to_dicts())
    batch_order: list[list[dict]] = []
    queues = [list(b) for b in by_source.values()]
    while any(queues):
        for q in queues:
            if q:
                batch_order.append(q.pop(0))
    ordered: list[dict] = []
    depth = max((len(b) for b in batch_order), default=0)
    for i in range(depth):
        ordered.extend(b[i] for b in batch_order if i < len(b))
    if max_plates is not None:
        if max_plates < 1:
            raise DataError(f"--max-plates must be >= 1, got {max_plates}")
        ordered = ordered[:max_plates]
    return pl.DataFrame(ordered, schema=plates.schema)
