"""A tiny local mirror of the Cell Painting Gallery (cpg0016-jump) for offline tests.

Layout and names follow the real bucket: Phenix plate folders with a space in
their name and ``r01c01f01p01-ch1sk1fk1fl1.tiff`` files (source_3), ImageXpress
``HTS_{well}_s{site}_w{n}{GUID}.tif`` files (source_8), numeric plate ids (one
with a leading zero), both load-data column forms, extra columns, a dropped
reference batch, a library compound well, and a plate with a deviating layout.
"""

from __future__ import annotations

import gzip
import io
import os
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import tifffile

from benchmark.constants import CHANNELS, DMSO_ID, POSCONS, PLATE_ROWS, dmso_wells

BUCKET_URL = "s3://cellpainting-gallery"
LIBRARY_ID = "JCP2022_000001"


@dataclass
class MirrorPlate:
    source: str
    batch: str
    plate: str
    layout: dict[str, str]                      # well -> JCP2022 id
    url_form: bool = True                       # URL_Orig* (True) or FileName/PathName (False)
    image_keys: dict[tuple[str, int, str], str] = field(default_factory=dict)  # (well, site, channel) -> key

    @property
    def plate_id(self) -> str:
        return f"{self.source}_{self.batch}_{self.plate}"


@dataclass
class Mirror:
    root: Path
    metadata: Path
    plates: list[MirrorPlate]

    def plate(self, plate_id: str) -> MirrorPlate:
        return next(p for p in self.plates if p.plate_id == plate_id)

    def path(self, key: str) -> Path:
        return self.root / key

    def load_data_path(self, plate: MirrorPlate) -> Path:
        return self.root / f"cpg0016-jump/{plate.source}/workspace/load_data_csv/{plate.batch}/{plate.plate}/load_data.csv"


def standard_layout(library_wells: tuple[str, ...] = ("C05", "D06")) -> dict[str, str]:
    layout = {w: jcp for _, _, jcp, _, wells in POSCONS for w in wells}
    layout |= {w: DMSO_ID for w in dmso_wells()}
    layout |= {w: LIBRARY_ID for w in library_wells}
    return layout


def deviating_layout() -> dict[str, str]:
    """AMG900 moved to unusual wells, quinidine missing (the reference filter must drop them)."""
    layout = {w: c for w, c in standard_layout().items() if c not in (POSCONS[0][2], POSCONS[5][2])}
    layout |= {"B03": POSCONS[0][2], "F03": POSCONS[0][2]}
    return layout


def _phenix_key(p: MirrorPlate, well: str, site: int, ch: int) -> str:
    row, col = PLATE_ROWS.index(well[0]) + 1, int(well[1:])
    folder = f"{p.plate}__2021-08-14T10_00_00-Measurement 1"
    return (f"cpg0016-jump/{p.source}/images/{p.batch}/images/{folder}/Images/"
            f"r{row:02d}c{col:02d}f{site:02d}p01-ch{ch}sk1fk1fl1.tiff")


def _imagexpress_key(p: MirrorPlate, well: str, site: int, ch: int) -> str:
    guid = str(uuid.UUID(int=zlib.crc32(f'{p.plate}{well}{site}{ch}'.encode()) * 7919 ** 6 % 2**128)).upper()
    return f"cpg0016-jump/{p.source}/images/{p.batch}/images/{p.plate}/Images/HTS_{well}_s{site}_w{ch}{guid}.tif"


def _write_load_data(mirror: Mirror, p: MirrorPlate, sites: int) -> None:
    rows = []
    for well in sorted(p.layout):
        for site in range(1, sites + 1):
            row = {"Metadata_Source": p.source, "Metadata_Batch": p.batch, "Metadata_Plate": p.plate,
                   "Metadata_Well": well, "Metadata_Site": str(site), "Metadata_Extra": "x"}
            for ch in CHANNELS:
                key = p.image_keys[(well, site, ch)]
                if p.url_form:
                    row[f"URL_Orig{ch}"] = f"{BUCKET_URL}/{key}"
                else:
                    folder, _, name = key.rpartition("/")
                    row[f"PathName_Orig{ch}"] = f"{BUCKET_URL}/{folder}/"
                    row[f"FileName_Orig{ch}"] = name
            if p.url_form:
                row["URL_OrigBrightfield"] = f"{BUCKET_URL}/cpg0016-jump/none.tiff"
            rows.append(row)
    path = mirror.load_data_path(p)
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_csv(path)


def _tiff_bytes(cache: dict, variant: int, size: int, rng: np.random.Generator) -> bytes:
    """One of a few cached 16-bit TIFFs per (variant, size): writing bytes keeps the build fast."""
    key = (variant, size, int(rng.integers(3)))
    if key not in cache:
        base = rng.integers(200, 4000, size=(size, size)).astype(np.float64)
        base[: size // 8 * (1 + variant % 5)] *= 1.5 + 0.1 * (variant % 3)
        buf = io.BytesIO()
        tifffile.imwrite(buf, np.clip(base, 0, 65535).astype(np.uint16))
        cache[key] = buf.getvalue()
    return cache[key]


def write_metadata(folder: Path, plates: list[MirrorPlate], extra_plates: list[tuple[str, str, str, str]] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    prow = [(p.source, p.batch, p.plate, "COMPOUND") for p in plates] + list(extra_plates)
    plate_table = pl.DataFrame(prow, schema=["Metadata_Source", "Metadata_Batch", "Metadata_Plate",
                                             "Metadata_PlateType"], orient="row")
    wrow = [(p.source, p.plate, well, jcp) for p in plates for well, jcp in p.layout.items()]
    well_table = pl.DataFrame(wrow, schema=["Metadata_Source", "Metadata_Plate", "Metadata_Well",
                                            "Metadata_JCP2022"], orient="row")
    for name, table in (("plate.csv.gz", plate_table), ("well.csv.gz", well_table)):
        buf = io.BytesIO()
        table.write_csv(buf)
        (folder / name).write_bytes(gzip.compress(buf.getvalue()))
    (folder / "microscope_config.csv").write_text(
        "Metadata_Source,Metadata_Microscope_Name,Metadata_Sites_Per_Well\n"
        "source_3,Opera Phenix,9\nsource_8,ImageXpress Micro Confocal,9\n")


def build_mirror(base: Path, sites: int = 2, small: bool = False, seed: int = 0) -> Mirror:
    """Write the mirror under ``base`` (``base/bucket`` and ``base/metadata``).

    ``small`` builds one plate per source (for error-path tests).
    """
    rng = np.random.default_rng(seed)
    root, meta = base / "bucket", base / "metadata"
    s3 = [("CP_59_all_Phenix1", "1053601756"), ("CP_59_all_Phenix1", "0053601757"),
          ("CP_60_all_Phenix1", "1053601800"), ("CP_60_all_Phenix1", "1053601801"),
          ("CP_33_all_Phenix1", "1053600001")]
    s8 = [("J1_Batch_1", "A1170383"), ("J1_Batch_1", "110000295851"),
          ("J1_Batch_2", "A1170400"), ("J1_Batch_2", "A1170401")]
    if small:
        s3, s8 = s3[:1], s8[:1]
    plates = [MirrorPlate("source_3", b, p, standard_layout()) for b, p in s3]
    plates += [MirrorPlate("source_8", b, p, standard_layout(), url_form=(i != 1)) for i, (b, p) in enumerate(s8)]
    if not small:
        plates[-1].layout = deviating_layout()
    mirror = Mirror(root, meta, plates)
    _write_plates(mirror, sites, {"source_3": 104, "source_8": 96}, rng)
    write_metadata(meta, plates, extra_plates=[("source_3", "CP_59_all_Phenix1", "ORF0001", "ORF")])
    return mirror


def _write_plates(mirror: Mirror, sites: int, sizes: dict[str, int], rng: np.random.Generator) -> None:
    """Every plate's TIFFs (``sizes[source]`` pixels square, uncompressed) and its load data."""
    blobs: dict = {}
    for p in mirror.plates:
        key_fn = _phenix_key if p.source == "source_3" else _imagexpress_key
        for well, jcp in p.layout.items():
            label_seed = zlib.crc32(jcp.encode()) % 7
            for site in range(1, sites + 1):
                for n, ch in enumerate(CHANNELS, 1):
                    key = key_fn(p, well, site, n)
                    p.image_keys[(well, site, ch)] = key
                    path = mirror.root / key
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(_tiff_bytes(blobs, label_seed * 5 + n, sizes[p.source], rng))
        _write_load_data(mirror, p, sites)


# -- a mirror of a few REAL plates of cpg0016, with the real metadata tables ----------------------------------

REAL_METADATA = Path(os.environ.get("PLATEBENCH_JUMP_METADATA",
                                    Path(__file__).resolve().parent / "fixtures" / "jump-metadata"))
"""The real plate and well tables (a copy of the workplace's ``../shared/jump-metadata``, 1 MB, with its README:
jump-cellpainting/datasets, BSD-3-Clause, data CC0), so every checkout tests the plan on the real tables."""
needs_real_metadata = pytest.mark.skipif(
    not (REAL_METADATA / "plate.csv.gz").is_file(),
    reason=f"the real JUMP metadata is not at {REAL_METADATA} (set PLATEBENCH_JUMP_METADATA)")
REAL_FILES = {"plate.csv.gz": "plate.csv.gz", "well.csv.gz": "well_source_3_8.csv.gz",
              "microscope_config.csv": "microscope_config.csv"}
REAL_TIFF_SIZE = {"source_3": 56, "source_8": 52}
"""Pixels per side of the fake TIFFs of the real-plate mirror (uncompressed: one byte size per source)."""


def real_metadata(folder: Path) -> Path:
    """``folder`` holding the real tables under the names the preparation reads (links, not copies)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, real in REAL_FILES.items():
        (folder / name).symlink_to(REAL_METADATA / real)
    return folder


def real_layouts(plates: list[tuple[str, str]], library_wells: int = 2) -> dict[tuple[str, str], dict[str, str]]:
    """The well -> compound layout of real (source, plate)s from the real well table: every poscon and DMSO
    well and the first ``library_wells`` library wells."""
    keep = {jcp for _, _, jcp, _, _ in POSCONS} | {DMSO_ID}
    wells = pl.read_csv(REAL_METADATA / REAL_FILES["well.csv.gz"], infer_schema=False)
    wells = wells.filter(pl.col("Metadata_Plate").is_in([p for _, p in plates]))
    layouts: dict[tuple[str, str], dict[str, str]] = {}
    for (source, plate), group in wells.group_by("Metadata_Source", "Metadata_Plate", maintain_order=True):
        ours = group.filter(pl.col("Metadata_JCP2022").is_in(list(keep)))
        chosen = pl.concat([ours, group.join(ours, on="Metadata_Well", how="anti").head(library_wells)])
        layouts[(source, plate)] = dict(zip(chosen["Metadata_Well"].to_list(), chosen["Metadata_JCP2022"].to_list()))
    return layouts


def build_real_mirror(base: Path, plates: list[tuple[str, str, str]], sites: int = 1, seed: int = 0) -> Mirror:
    """A mirror under ``base`` with the real metadata and fake load data + TIFFs for the real
    ``(source, batch, plate)``s given (their real well layouts, ``sites`` sites per well)."""
    layouts = real_layouts([(s, p) for s, _, p in plates])
    chosen = [MirrorPlate(s, b, p, layouts[(s, p)]) for s, b, p in plates]
    mirror = Mirror(base / "bucket", real_metadata(base / "metadata"), chosen)
    _write_plates(mirror, sites, REAL_TIFF_SIZE, np.random.default_rng(seed))
    return mirror


if __name__ == "__main__":  # build a mirror for trying the CLI by hand
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "jump-mirror")
    m = build_mirror(target)
    print(f"mirror in {m.root}; try:\n  bench data prepare jump --root {m.root} --metadata {m.metadata} "
          f"--out {target / 'prepared'} --min-sites 4 --crop 48 --yes")
