"""A dataset: an index table (one row per site image) and a packed store of its pixels.

On disk::

    <root>/dataset.json     name, version, settings, channels, classes, shard manifest, fingerprint
    <root>/index.parquet    one row per site image (schema: INDEX_SCHEMA)
    <root>/shards/*.npy     one (N, C, H, W) uint8 array per plate

``dataset.json`` is written last and atomically: a folder without it is not a dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ..constants import CHANNELS, CLASS_NAMES, DMSO_LABEL
from ..errors import CorruptCacheError, DataError, LeakageError
from .store import ArrayImages, ImageArray, PackedStore, ShardInfo, verify_shard

FORMAT_VERSION = 1
META_FILE = "dataset.json"
INDEX_FILE = "index.parquet"

INDEX_SCHEMA: dict[str, pl.DataType] = {
    "image_id": pl.Int64,   # row number, 0..N-1
    "source": pl.Utf8,      # lab / microscope
    "batch": pl.Utf8,       # unique over the dataset
    "plate": pl.Utf8,       # unique over the dataset (JUMP: {source}_{batch}_{plate})
    "well": pl.Utf8,        # e.g. "A01"
    "site": pl.Int32,
    "compound": pl.Utf8,    # JCP2022 id
    "label": pl.Int8,       # class index 0..7, or -1 for DMSO
    "is_control": pl.Boolean,
    "shard": pl.Int32,      # position of the plate's shard in the manifest
    "offset": pl.Int32,     # position of the image within its shard
}


@dataclass(frozen=True)
class DatasetMeta:
    """Everything ``dataset.json`` says about a dataset."""

    name: str
    version: str
    settings: Mapping
    shards: tuple[ShardInfo, ...]
    fingerprint: str
    channels: tuple[str, ...] = CHANNELS
    class_names: tuple[str, ...] = CLASS_NAMES
    description: str = ""
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        return {
            "format_version": self.format_version, "name": self.name, "version": self.version,
            "description": self.description, "fingerprint": self.fingerprint,
            "channels": list(self.channels), "class_names": list(self.class_names),
            "settings": dict(self.settings), "shards": [s.to_json() for s in self.shards],
        }

    @classmethod
    def from_json(cls, d: dict) -> DatasetMeta:
        return cls(name=d["name"], version=d["version"], settings=d["settings"],
                   shards=tuple(ShardInfo.from_json(s) for s in d["shards"]),
                   fingerprint=d["fingerprint"], channels=tuple(d["channels"]),
                   class_names=tuple(d["class_names"]), description=d.get("description", ""),
                   format_version=int(d["format_version"]))


def compute_fingerprint(settings: Mapping, index: pl.DataFrame, shards: Sequence[ShardInfo]) -> str:
    """Hash of generator settings, the index and the shard checksums (12 hex digits)."""
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(index.select(list(INDEX_SCHEMA)).write_csv().encode())
    for s in shards:
        h.update(s.sha256.encode())
    return h.hexdigest()[:12]


def validate_index(index: pl.DataFrame, where: str) -> pl.DataFrame:
    """Check and cast an index table to :data:`INDEX_SCHEMA`; raise :class:`DataError` naming ``where``."""
    missing = [c for c in INDEX_SCHEMA if c not in index.columns]
    if missing:
        raise DataError(f"{where}: index lacks column(s) {', '.join(missing)}")
    index = index.select([pl.col(c).cast(t) for c, t in INDEX_SCHEMA.items()])
    if not np.array_equal(index["image_id"].to_numpy(), np.arange(len(index))):
        raise DataError(f"{where}: column image_id must be 0..N-1 in row order")
    bad = index.filter((pl.col("label") == DMSO_LABEL) != pl.col("is_control"))
    if len(bad):
        raise DataError(f"{where}: {len(bad)} rows where label -1 and is_control disagree "
                        f"(first: plate {bad['plate'][0]}, well {bad['well'][0]})")
    return index


def write_dataset(root: Path, name: str, version: str, settings: Mapping, index: pl.DataFrame,
                  shards: Sequence[ShardInfo], description: str = "") -> DatasetMeta:
    """Write ``index.parquet`` and then, atomically, ``dataset.json`` (the completion marker)."""
    root = Path(root)
    index = validate_index(index, str(root / INDEX_FILE))
    meta = DatasetMeta(name=name, version=version, settings=dict(settings), shards=tuple(shards),
                       fingerprint=compute_fingerprint(settings, index, shards), description=description)
    tmp_index = root / f".{INDEX_FILE}.tmp-{os.getpid()}"
    index.write_parquet(tmp_index)
    os.replace(tmp_index, root / INDEX_FILE)
    tmp_meta = root / f".{META_FILE}.tmp-{os.getpid()}"
    tmp_meta.write_text(json.dumps(meta.to_json(), indent=1))
    os.replace(tmp_meta, root / META_FILE)
    return meta


@dataclass
class PlateView:
    """What a method may see of one target plate: pixels, never labels, wells or ids.

    ``treated`` are the plate's treated images in an order that carries no
    information (shuffled by the evaluator); ``controls`` are its DMSO images.
    Both are read like arrays of shape ``(N, C, H, W)`` uint8 (an :class:`ImageArray`,
    or in the sealed worker an :class:`ArrayImages` holding only these pixels).
    """

    __slots__ = ("plate", "treated", "controls")
    plate: str
    treated: np.ndarray | ImageArray | ArrayImages
    controls: np.ndarray | ImageArray | ArrayImages

    def __getattr__(self, name: str):  # only called for names that do not exist
        raise AttributeError(f"PlateView has no attribute '{name}': a target plate's view holds only "
                             "plate (its name), treated and controls (pixels); labels, wells and image ids "
                             "stay with the evaluator")


class LabelledImages:
    """Labelled treated images and DMSO images of a set of plates: what ``fit`` sees.

    ``table`` has one row per image (columns ``image_id, source, batch, plate, well,
    site, label, is_control``); pixels are read with :meth:`read` by ``image_id``,
    and only ids of this set can be read. ``targets`` holds, for a method of access
    ``transductive`` (and only in the training set), one label-free :class:`PlateView`
    per out-of-domain target plate of the fold; it is empty for every other access level.
    """

    def __init__(self, dataset: Dataset, rows: pl.DataFrame, targets: Sequence[PlateView] = ()):
        self._dataset = dataset
        self.targets: tuple[PlateView, ...] = tuple(targets)
        self.table = rows.select("image_id", "source", "batch", "plate", "well", "site",
                                 "label", "is_control")
        self._allowed = np.zeros(len(dataset.index), dtype=bool)
        self._allowed[self.table["image_id"].to_numpy()] = True

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return (f"LabelledImages({len(self.plates)} plates, {len(self.treated_ids())} treated, "
                f"{len(self.control_ids())} DMSO)")

    @property
    def plates(self) -> list[str]:
        return self.table["plate"].unique(maintain_order=True).to_list()

    def treated_ids(self, plate: str | None = None) -> np.ndarray:
        """Image ids of labelled treated images (of one plate, or all)."""
        return self._ids(~pl.col("is_control"), plate)

    def control_ids(self, plate: str | None = None) -> np.ndarray:
        """Image ids of DMSO images (of one plate, or all)."""
        return self._ids(pl.col("is_control"), plate)

    def _ids(self, cond: pl.Expr, plate: str | None) -> np.ndarray:
        if plate is not None:
            cond = cond & (pl.col("plate") == plate)
        return self.table.filter(cond)["image_id"].to_numpy()

    def _own(self, image_ids: np.ndarray, what: str, error: type[DataError | LeakageError] = LeakageError
             ) -> np.ndarray:
        """``image_ids`` as int64 if all belong to this set, else ``error`` (ids of target plates never do)."""
        ids = np.asarray(image_ids, dtype=np.int64)
        inside = (ids >= 0) & (ids < len(self._allowed))
        foreign = int((~inside).sum() + (~self._allowed[ids[inside]]).sum())
        if foreign:
            raise error(f"LabelledImages.{what}: {foreign} image id(s) are not part of this set; a method "
                        "may only use the ids of its own training/validation set (treated_ids(), control_ids())")
        return ids

    def labels(self, image_ids: np.ndarray) -> np.ndarray:
        """Class index per image id of this set (-1 for DMSO); other ids raise :class:`LeakageError`."""
        return self._dataset.labels[self._own(image_ids, "labels")]

    def read(self, image_ids: np.ndarray) -> np.ndarray:
        """Pixels ``(N, C, H, W)`` uint8 of images of this set."""
        return self._dataset.read(self._own(image_ids, "read", DataError))

    def images(self, image_ids: np.ndarray) -> ImageArray:
        """A lazily read view of images of this set."""
        return self._dataset.image_array(self._own(image_ids, "images"))


@dataclass
class Dataset:
    """An opened dataset: its metadata, index and store."""

    root: Path
    meta: DatasetMeta
    index: pl.DataFrame
    store: PackedStore = field(repr=False)

    def __post_init__(self):
        self._codes = self.index["shard"].to_numpy().astype(np.int64)
        self._offsets = self.index["offset"].to_numpy().astype(np.int64)
        self.labels = self.index["label"].to_numpy().astype(np.int64)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def fingerprint(self) -> str:
        return self.meta.fingerprint

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.store.image_shape

    def read(self, image_ids: np.ndarray) -> np.ndarray:
        """Pixels ``(N, C, H, W)`` uint8 of the given image ids."""
        ids = np.asarray(image_ids, dtype=np.int64)
        return self.store.read(self._codes[ids], self._offsets[ids])

    def image_array(self, image_ids: np.ndarray) -> ImageArray:
        ids = np.asarray(image_ids, dtype=np.int64)
        return ImageArray(self.store, self._codes[ids], self._offsets[ids])

    def labelled(self, rows: pl.DataFrame, targets: Sequence[PlateView] = ()) -> LabelledImages:
        """The labelled images of ``rows`` (with label-free ``targets`` views for a transductive method)."""
        return LabelledImages(self, rows, targets)

    def plate_view(self, plate: str, treated_ids: np.ndarray, rng: np.random.Generator,
                   with_controls: bool = True) -> tuple[PlateView, np.ndarray]:
        """A label-free view of ``plate`` and the permutation of ``treated_ids`` it shows.

        The treated images appear in a random order (so their order reveals nothing);
        element ``i`` of the view is ``treated_ids[order[i]]``.
        """
        order = rng.permutation(len(treated_ids))
        ctrl = self.index.filter((pl.col("plate") == plate) & pl.col("is_control"))["image_id"].to_numpy()
        if with_controls and len(ctrl) == 0:
            raise DataError(f"plate {plate} has no DMSO images; this method needs the plate's controls")
        controls = self.image_array(ctrl if with_controls else ctrl[:0])
        return PlateView(plate, self.image_array(np.asarray(treated_ids)[order]), controls), order

    def plate_table(self) -> pl.DataFrame:
        """One row per plate with source, batch and image counts."""
        return (self.index.group_by("source", "batch", "plate", maintain_order=True)
                .agg(n_treated=(~pl.col("is_control")).sum(), n_controls=pl.col("is_control").sum()))


def open_dataset(root: Path, verify: str = "size") -> Dataset:
    """Open a dataset folder; ``verify`` is ``"size"`` (fast) or ``"full"`` (checksums)."""
    root = Path(root)
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise DataError(f"{root} is not a platebench dataset (no {META_FILE}); "
                        "generate or prepare it first (`bench data synth` / `bench data prepare jump`)")
    try:
        meta = DatasetMeta.from_json(json.loads(meta_path.read_text()))
    except (ValueError, KeyError) as exc:
        raise CorruptCacheError(f"{meta_path} is malformed ({exc})") from None
    if meta.format_version != FORMAT_VERSION:
        raise DataError(f"{meta_path} has format {meta.format_version}, this platebench reads "
                        f"{FORMAT_VERSION}; regenerate or re-prepare the dataset")
    try:
        index = pl.read_parquet(root / INDEX_FILE)
    except Exception as exc:  # noqa: BLE001 - any parquet failure means a corrupt index
        raise CorruptCacheError(f"cannot read {root / INDEX_FILE}: {exc}") from None
    index = validate_index(index, str(root / INDEX_FILE))
    for info in meta.shards:
        verify_shard(root, info, full=(verify == "full"))
    if verify == "full" and compute_fingerprint(meta.settings, index, meta.shards) != meta.fingerprint:
        raise CorruptCacheError(f"{root}: index does not match the fingerprint in {META_FILE}")
    return Dataset(root, meta, index, PackedStore(root, meta.shards))
