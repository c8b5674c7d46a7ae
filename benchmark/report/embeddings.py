"""A profile method's embeddings before and after its correction, re-fitted from one run record.

For the record's fold and seed, :func:`profile_embeddings` reopens the dataset (checked against
the record's fingerprint), builds the fold (:func:`benchmark.splits.make_folds`) and the method
with the record's config, fits it in this process through the trusted harness
(:class:`benchmark.protocol.evaluation.LocalHost`), then takes a subsample of images, the same number
from every (plate, DMSO or treated) of the training and target plates, and returns for each its
raw embedding (``method._embed``) and its corrected one (``adapt`` on the plate's view, cut to
the method's access level as the evaluator cuts it, then ``method.transform_``).

**Trust.** The re-fit runs unsealed in a process that holds every label, so only built-in
profile methods (``profile_*``, subclasses of :class:`~benchmark.methods._profile.ProfileMethod`
registered by platebench itself) are re-fitted; a profile method from a plugin is refused with
an error (its figure can not be drawn without running untrusted code outside the sealed worker).

**Cost.** The fit runs inside the fold's :func:`~benchmark.core.training.model_cache.fold_scope`, so its
embeddings come from the fold's models folder that ``bench run`` filled (every target plate's
treated and DMSO images are embedded as whole sets, the sets the run embedded). The re-fit also
checks itself: the share of the target plates' treated images it predicts as the record did
(:attr:`Embeddings.agreement`) is 1.0 when it reproduced the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ..errors import BenchError, DataError, MethodError
from ..records import Record

if TYPE_CHECKING:
    from ..methods._profile import ProfileMethod
    from ..datasets.dataset import Dataset, PlateView
    from ..splits import Fold

MAX_IMAGES = 1500
"""Default size of the subsample drawn in the embedding figure."""
META_COLUMNS = ("image_id", "source", "batch", "plate", "label", "is_control")


@dataclass
class Embeddings:
    """Raw and corrected embeddings of a subsample of one run's images."""

    meta: pl.DataFrame     # one row per image: image_id, source, batch, plate, label, is_control, role (train/target)
    before: np.ndarray     # (n, d) the featuriser's embeddings
    after: np.ndarray      # (n, d') after the plate's correction
    agreement: float       # share of the target plates' treated images predicted as in the record
    record: Record


def embeddable(method: str) -> tuple[type[ProfileMethod] | None, str | None]:
    """The class of ``method`` if its embeddings can be drawn, else None and a one-line reason to skip them.

    Raises :class:`BenchError` for a profile method registered locally from outside platebench: it is
    never run unsealed. An entry-point plugin is skipped without being imported.
    """
    from ..methods._profile import ProfileMethod
    from ..registry import BUILTIN, get_method, method_entries

    entry = method_entries().get(method)
    if entry is None:
        return None, f"method '{method}' is not registered here; the embedding figure is skipped"
    if entry.plugin:  # never imported in this process: whether it is a profile method is not even asked
        return None, (f"method '{method}' comes from the plugin '{entry.origin}', whose code runs only in a sealed "
                      "worker; the embedding figure (a re-fit in this process) is skipped")
    cls = get_method(method)
    if not issubclass(cls, ProfileMethod):
        return None, (f"{method} is not a profile method (profile_*): it has no embeddings to correct; "
                      "the embedding figure is skipped")
    origin = entry.origin
    if origin != BUILTIN:
        raise BenchError(f"method '{method}' comes from the plugin '{origin}': drawing its embeddings would run "
                         "it unsealed in a process holding every label, which bench report does only for the "
                         "built-in profile methods; rerun with --no-embeddings for the prediction figures")
    return cls, None


def open_record_dataset(record: Record, dataset: str | None = None) -> Dataset:
    """The dataset of ``record`` (``dataset``, else the name or folder it was run on), checked by fingerprint."""
    from ..datasets import load_dataset

    argument = dataset or str(record.data["dataset"].get("argument") or record.dataset)
    try:
        opened = load_dataset(argument)
    except BenchError as exc:
        raise DataError(f"record {record.path} was computed on dataset '{argument}', which can not be opened here "
                        f"({exc}); pass --dataset NAME|FOLDER holding {record.dataset}-{record.fingerprint}, "
                        "or --no-embeddings") from None
    if (opened.name, opened.fingerprint) != (record.dataset, record.fingerprint):
        raise DataError(f"record {record.path} was computed on {record.dataset} fingerprint {record.fingerprint}, "
                        f"but '{argument}' is {opened.name} fingerprint {opened.fingerprint}: a re-fit would not "
                        "show that run; pass --dataset with the record's data version, or --no-embeddings")
    return opened


def record_fold(record: Record, dataset: Dataset) -> Fold:
    """The fold the record ran on, rebuilt from the dataset and the record's split seed."""
    from ..splits import make_folds

    folds = make_folds(dataset.index, record.split, int(record.data["split"].get("split_seed", 0)))
    if record.fold >= len(folds) or list(folds[record.fold].held_out) != list(record.data["split"]["held_out"]):
        raise DataError(f"record {record.path}: fold {record.fold} of {record.split} does not hold out "
                        f"{record.data['split']['held_out']} here; the folds changed since the run")
    return folds[record.fold]


def sample_rows(rows: pl.DataFrame, max_images: int, seed: int = 0) -> pl.DataFrame:
    """Up to ``max_images`` rows, the same number drawn from every (plate, ``is_control``) group (all of a
    smaller group), in image-id order."""
    groups = rows.partition_by("plate", "is_control", maintain_order=True)
    per_group = max(1, max_images // max(1, len(groups)))
    rng = np.random.default_rng([seed, 23])
    picked = [g[np.sort(rng.choice(len(g), min(per_group, len(g)), replace=False))] for g in groups]
    return pl.concat(picked).sort("image_id") if picked else rows.head(0)


def fold_rows(dataset: Dataset, fold: Fold) -> pl.DataFrame:
    """The training and target images of ``fold`` (treated and DMSO) with their ``role``."""
    parts = [dataset.index[np.asarray(ids, dtype=np.int64)].select(*META_COLUMNS).with_columns(role=pl.lit(role))
             for ids, role in ((fold.train_ids, "train"), (fold.target_ids, "target"))]
    return pl.concat(parts)


def _fitted(cls: type[ProfileMethod], record: Record, dataset: Dataset, fold: Fold, device: str) -> ProfileMethod:
    """The record's method and config fitted on ``fold`` with the record's seed, in the fold's cache scope."""
    from ..core.training.model_cache import FoldIdentity, fold_scope
    from ..protocol.evaluation import LocalHost, target_views
    from ..protocol.method_calls import StageError
    from ..protocol.loop import resolve_config
    from ..sealed.foldstore import fold_digest, models_path, sealed_path

    split_seed = int(record.data["split"].get("split_seed", 0))
    method = cls(resolve_config(cls, record.data["method"]["config"]), device=device)
    folder = models_path(sealed_path(dataset, fold, split_seed))
    identity = None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        identity = FoldIdentity(dataset.name, dataset.fingerprint, fold.split, split_seed, fold.index,
                                fold_digest(fold), str(folder))
    from ..protocol.orders import record_scheme

    targets = (target_views(dataset, fold, record.seed, split_seed, order_scheme=record_scheme(record.data))
               if cls.access.sees_targets_in_fit else [])
    try:
        with fold_scope(identity):
            LocalHost(method, dataset, fold).fit(record.seed, targets)
    except StageError as exc:
        raise MethodError(f"re-fitting {record.label()} for its embeddings failed: {exc}") from None
    return method


def _view(method: ProfileMethod, dataset: Dataset, plate: str, treated: np.ndarray, controls: np.ndarray
          ) -> PlateView:
    """The plate's view cut to the method's access level, as the evaluator hands it."""
    from ..datasets.dataset import PlateView
    from ..protocol.access import handed

    return PlateView(plate, *map(dataset.image_array, handed(method.access, treated, controls)))


def _plate_embeddings(method: ProfileMethod, dataset: Dataset, rows: pl.DataFrame, shown: pl.DataFrame,
                      predicted: dict[int, int]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Raw and corrected embeddings of ``shown`` (one plate's sampled images, ``rows``: all of them) and, on a
    target plate, how many of its treated images the re-fit predicts as the record did (of how many)."""
    ids = {c: rows.filter(pl.col("is_control") == c)["image_id"].to_numpy() for c in (False, True)}
    method.adapt(_view(method, dataset, shown["plate"][0], ids[False], ids[True]))
    raw, after = {}, {}
    for is_control, all_ids in ids.items():  # whole sets: the ones the run embedded (cached in the fold folder)
        pixels = dataset.read(all_ids)
        raw[is_control] = method._embed(pixels)
        after[is_control] = method.transform_(raw[is_control])
    same = total = 0
    if shown["role"][0] == "target" and len(ids[False]):
        again = method.predict(dataset.read(ids[False])).argmax(axis=1)
        recorded = np.array([predicted.get(int(i), -1) for i in ids[False]])
        same, total = int((again == recorded).sum()), len(again)
    pos = {c: {int(i): k for k, i in enumerate(all_ids)} for c, all_ids in ids.items()}
    order = [(c, pos[c][int(i)]) for c, i in shown.select("is_control", "image_id").iter_rows()]
    before = np.stack([raw[c][k] for c, k in order])
    return before, np.stack([after[c][k] for c, k in order]), same, total


def profile_embeddings(record: Record, predictions: pl.DataFrame, *, dataset: str | None = None,
                       max_images: int = MAX_IMAGES, device: str = "cpu") -> Embeddings:
    """Re-fit the built-in profile method of ``record`` and embed a subsample of its fold's images.

    ``predictions``: the record's predictions table (for :attr:`Embeddings.agreement`). Raises
    :class:`BenchError` for a method that is not a built-in profile method, a dataset that is not
    the record's, or a failed re-fit.
    """
    cls, why = embeddable(record.method)
    if cls is None:
        raise BenchError(why)
    opened = open_record_dataset(record, dataset)
    fold = record_fold(record, opened)
    method = _fitted(cls, record, opened, fold, device)
    rows = fold_rows(opened, fold)
    shown = sample_rows(rows, max_images, record.seed)
    predicted = dict(predictions.filter(pl.col("part") == "out_of_domain").select("image_id", "predicted")
                     .iter_rows())
    metas, befores, afters, same, total = [], [], [], 0, 0
    for (plate, role), part in shown.group_by("plate", "role", maintain_order=True):
        all_rows = rows.filter((pl.col("plate") == plate) & (pl.col("role") == role))
        before, after, s, t = _plate_embeddings(method, opened, all_rows, part, predicted)
        metas.append(part)
        befores.append(before)
        afters.append(after)
        same, total = same + s, total + t
    return Embeddings(pl.concat(metas), np.concatenate(befores), np.concatenate(afters),
                      same / total if total else float("nan"), record)


def embedding_figure_of(record: Record, predictions: pl.DataFrame, out: Path, *, dataset: str | None = None,
                        max_images: int = MAX_IMAGES, device: str = "cpu") -> tuple[Path, Embeddings]:
    """Draw :func:`benchmark.report.figures.embedding_figure` of ``record`` to ``out / "embeddings.png"``; return its path
    and the embeddings."""
    from ..leaderboard.figure import save_figure
    from .figures import DPI, embedding_figure

    emb = profile_embeddings(record, predictions, dataset=dataset, max_images=max_images, device=device)
    n_target = int((emb.meta["role"] == "target").sum())
    title = (f"{record.method} · {record.label().split(' ', 1)[1]}: {len(emb.meta)} images "
             f"({len(emb.meta) - n_target} of training plates, {n_target} of target plates held out "
             f"{', '.join(record.data['split']['held_out'])}); PCA fitted per panel\n"
             f"re-fit predicts {emb.agreement:.1%} of the target plates' treated images as the record did")
    fig = embedding_figure(emb.meta, emb.before, emb.after, record.data["class_names"], title,
                           after_label=f"after correction ({record.method})")
    return save_figure(fig, Path(out) / "embeddings.png", DPI), emb
