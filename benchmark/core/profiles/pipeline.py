"""The profile pipeline shared by every profile method (``profile_*``): featuriser → embeddings → correction →
one logistic regression → per-image probabilities.

1. A frozen **featuriser** (:mod:`~benchmark.core.profiles.featurisers`: the shipped self-supervised
   encoder, any ``fm_tvn`` encoder backend, or ERM's penultimate layer) embeds every image
   ``fit`` sees: the training and validation plates (treated and DMSO) and, for a transductive
   method, the target plates of ``train.targets``. Embeddings are kept by image content in the
   fold's models folder (:mod:`~benchmark.core.profiles.embedding_cache`), so each image of a fold is
   embedded once per featuriser, whatever the seed or the correction.
2. A **correction** (:mod:`~benchmark.core.profiles.corrections`) is fitted on those profiles and
   gives each plate a transform (per-plate ones from the plate's DMSO embeddings).
3. The **classifier** is the same for every correction (:class:`ProfileClassifier`): features
   standardised over the corrected training images, a multinomial logistic regression whose
   ``C`` is chosen by validation log loss.
4. ``adapt`` builds the target plate's transform (from its DMSO images, or from the joint fit);
   ``predict`` embeds, corrects and classifies each image on its own.

The pipeline works on **images**: a target plate's wells never reach a method (its treated
images arrive shuffled, without ids), so corrections are fitted and applied per image. The
well level (mean over sites) is built where wells are known, on the training and validation
plates, and the **correction metrics** (:mod:`benchmark.core.profiles.metrics`) are computed there,
on the uncorrected and the corrected well profiles, with the source (lab) as the batch; they go
into the fit report, hence into every run record (``fit_report.correction_metrics``). The
uncorrected scores, shared by every method of a fold and seed, are kept in the fold's models
folder (:mod:`~benchmark.core.profiles.metrics_cache`).
"""

from __future__ import annotations

import dataclasses
import time
from abc import abstractmethod
from typing import Any

import numpy as np
import polars as pl
import torch

from ...constants import DMSO_LABEL, N_CLASSES
from .metrics import correction_scores
from .metrics_cache import cached_scores
from ...datasets.dataset import LabelledImages, PlateView
from ...errors import MethodError
from ...methods.base import Method, MethodConfig
from .embedding_cache import EmbeddingCache
from .corrections import Correction, Transform
from .data import TARGET, UNKNOWN, Profiles, concat, profiles_of, well_profiles
from .featurisers import Featuriser, load_featuriser
from ...config_bounds import at_least
from ..training.model_cache import current_fold
from ..training.loop import SELECTION_RULE

METRICS_BATCH = "source"
"""The batch of the correction metrics: the lab, which is what a new target domain brings."""


def parse_grid(text: str) -> list[float]:
    """The inverse regularisation strengths of a comma-separated ``c_grid`` (positive numbers)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not np.isfinite(v) or v <= 0 for v in values):
        raise MethodError(f"c_grid {text!r} is not a comma-separated list of positive numbers (e.g. '0.01,0.1,1,10')")
    return values


@dataclasses.dataclass
class ProfileClassifier:
    """Standardisation over the training profiles and a multinomial logistic regression (``C`` by validation loss)."""

    mean: np.ndarray
    scale: np.ndarray
    model: Any
    C: float
    val_loss: float | None

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, c_grid: list[float],
            seed: int) -> ProfileClassifier:
        from sklearn.linear_model import LogisticRegression  # imported here: sklearn takes seconds to load
        from sklearn.metrics import log_loss

        if len(x) == 0:
            raise MethodError("the profile classifier has no labelled treated training images to learn from")
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        best = None
        for c in c_grid:
            model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit((x - mean) / scale, y)
            candidate = cls(mean, scale, model, c, None)
            loss = (float(log_loss(y_val, candidate.probabilities(x_val), labels=range(N_CLASSES)))
                    if len(y_val) else None)
            if best is None or (loss is not None and loss < best.val_loss):
                best = dataclasses.replace(candidate, val_loss=loss)
        return best

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, 8)`` of profiles ``x`` (classes missing from training get 0)."""
        probs = np.zeros((len(x), N_CLASSES))
        if len(x):
            z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
            probs[:, self.model.classes_] = self.model.predict_proba(z)
        return probs


def correct(correction: Correction, profiles: Profiles) -> Profiles:
    """Every plate's rows through that plate's transform (built from its DMSO rows); the width may change."""
    plates = profiles.plate.astype(str)
    out: np.ndarray | None = None
    for plate in np.unique(plates):
        rows = plates == plate
        transform = correction.plate(plate, profiles.x[rows & profiles.is_control])
        corrected = transform(profiles.x[rows])
        if out is None:
            out = np.empty((len(profiles), corrected.shape[1]), dtype=np.float32)
        out[rows] = corrected
    return profiles.with_x(out if out is not None else profiles.x)


def well_scores(wells: Profiles, seed: int) -> dict[str, Any]:
    """The correction metrics of well profiles, with the source as the batch."""
    return correction_scores(wells.x, wells.source.astype(str), wells.label, wells.plate.astype(str),
                             wells.is_control, seed=seed)


def metrics_before_after(raw: Profiles, corrected: Profiles, seed: int, folder: str | None = None) -> dict[str, Any]:
    """Correction metrics of the labelled plates' well profiles, uncorrected and corrected.

    The uncorrected scores, the same for every profile method of a fold, seed and featuriser, are
    kept in ``folder`` (the fold's models folder; :mod:`~benchmark.core.profiles.metrics_cache`) when given.
    """
    out: dict[str, Any] = {"level": "well (mean over sites)", "plates": "training and validation",
                           "batch": METRICS_BATCH, "dmso": "excluded from batch and label scores"}
    before = well_profiles(raw.select(raw.labelled))
    out["before"], out["before_read_from_cache"] = cached_scores(folder, before, seed,
                                                                lambda: well_scores(before, seed))
    if np.array_equal(raw.x, corrected.x):  # no correction: the same scores
        out["after"] = dict(out["before"])
    else:
        out["after"] = well_scores(well_profiles(corrected.select(corrected.labelled)), seed)
    return out


@dataclasses.dataclass(frozen=True)
class ProfileConfig(MethodConfig):
    """Hyper-parameters every profile method shares."""

    featuriser: str = "platebench-ssl"  # an fm_tvn encoder spec ("<backend>[:<argument>]") or "erm"
    c_grid: str = "0.01,0.1,1,10"       # logistic regression C values tried; the lowest validation loss wins
    embed_batch_size: int = 256         # images per featuriser forward pass
    metrics: bool = True                # correction metrics (before/after, well level) in the fit report
    threads: int = 1                    # BLAS and torch threads (1: 2 threads are ~10x slower on a busy 2-core CPU); 0 = default

    bounds = {"embed_batch_size": at_least(1), "threads": at_least(0)}


def limit_threads(threads: int) -> None:
    """Cap BLAS (threadpoolctl) threads process-wide; ``threads <= 0`` leaves the libraries' default.

    On a busy 2-core CPU a multi-threaded OpenBLAS makes scikit-learn's logistic regression about
    10x slower (60 s instead of 0.7 s for the default fold's four fits in a sealed worker).
    threadpoolctl reaches the BLAS libraries through ctypes, which a sealed worker allows only
    while it builds the method: hence this runs in the constructor.
    """
    if threads > 0:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")


class ProfileMethod(Method):
    """Base of the profile methods: the pipeline of the module docstring around :meth:`correction`."""

    Config = ProfileConfig
    config: ProfileConfig
    quick_overrides = {"c_grid": "1"}

    def __init__(self, config: MethodConfig | None = None, *, device: str = "cpu", verbose: bool = False):
        super().__init__(config, device=device, verbose=verbose)
        limit_threads(self.config.threads)

    @abstractmethod
    def correction(self, seed: int) -> Correction:
        """The method's correction, built from its config (``seed``: for a correction with random steps)."""

    # -- the method API ------------------------------------------------------------------------
    def fit(self, train: LabelledImages, val: LabelledImages, seed: int) -> ProfileMethod:
        c_grid = parse_grid(self.config.c_grid)
        start = time.perf_counter()
        if self.config.threads > 0:
            torch.set_num_threads(self.config.threads)
        self.featuriser_: Featuriser = load_featuriser(self.config.featuriser, self.device, train, val, seed,
                                                       self.config.embed_batch_size, self.verbose)
        fold = current_fold()
        self.cache_ = EmbeddingCache(fold.folder if fold is not None else None, self.featuriser_.cache_key())
        loaded = time.perf_counter()
        parts = [self._labelled(train), self._labelled(val), self._targets(train.targets)]
        roles = np.concatenate([np.full(len(p), role) for p, role in zip(parts, ("train", "val", "target"))])
        raw = concat(parts)
        embedded = time.perf_counter()
        self.correction_ = self.correction(seed).fit(raw)
        corrected = correct(self.correction_, raw)
        corrected_at = time.perf_counter()
        treated = ~corrected.is_control & corrected.labelled
        fit_rows, val_rows = treated & (roles == "train"), treated & (roles == "val")
        self.classifier_ = ProfileClassifier.fit(corrected.x[fit_rows], corrected.label[fit_rows],
                                                 corrected.x[val_rows], corrected.label[val_rows], c_grid, seed)
        classified = time.perf_counter()
        metrics = (metrics_before_after(raw, corrected, seed, fold.folder if fold is not None else None)
                   if self.config.metrics else None)
        done = time.perf_counter()
        self.fit_report_ = {
            "featuriser": self.featuriser_.name, "embedding_dim": int(self.featuriser_.dim),
            "featuriser_key": self.featuriser_.cache_key(), **self.correction_.describe(),
            "n_images": {"train": int((roles == "train").sum()), "val": int((roles == "val").sum()),
                         "target": int((roles == "target").sum())},
            "C": self.classifier_.C, "best_val_loss": self.classifier_.val_loss, "epochs_run": None,
            "best_epoch": None, "selection": f"{SELECTION_RULE} over C in {self.config.c_grid}",
            "train_accuracy": float((self.classifier_.probabilities(corrected.x[fit_rows]).argmax(1)
                                     == corrected.label[fit_rows]).mean()),
            "correction_metrics": metrics,
            "seconds": {"featuriser_load": round(loaded - start, 3), "embed": round(embedded - loaded, 3),
                        "correct": round(corrected_at - embedded, 3), "classifier": round(classified - corrected_at, 3),
                        "metrics": round(done - classified, 3)},
            "train_seconds": round(done - start, 3)}
        if hasattr(self.featuriser_, "erm"):
            self.fit_report_["erm_source_model"] = self.featuriser_.erm.fit_report().get("source_model")
        return self

    def adapt(self, plate: PlateView) -> ProfileMethod:
        self._check_fitted("classifier_")
        for attr in ("plate_", "transform_"):  # forget the previous plate, even if this one fails
            self.__dict__.pop(attr, None)
        controls = self._embed(plate.controls[:]) if len(plate.controls) else np.empty((0, self.featuriser_.dim))
        self.transform_: Transform = self.correction_.plate(plate.plate, controls)
        self.plate_ = plate.plate
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._check_fitted("classifier_")
        self._check_adapted()
        return self.classifier_.probabilities(self.transform_(self._embed(images)))

    def fit_report(self) -> dict[str, Any]:
        """The fit report, with the embedding cache's counts so far (``adapt``/``predict`` embed too)."""
        report = dict(getattr(self, "fit_report_", {}))
        if hasattr(self, "cache_"):
            report["embedding_cache"] = self.cache_.report()
        return report

    # -- plumbing ------------------------------------------------------------------------------
    def _embed(self, images: np.ndarray) -> np.ndarray:
        return self.cache_.embed(np.asarray(images), self.featuriser_.embed)

    def _labelled(self, data: LabelledImages) -> Profiles:
        """Profiles of every image of ``data`` (treated and DMSO), embedded plate by plate."""
        parts = []
        for plate in data.plates:
            rows = data.table.filter(pl.col("plate") == plate)
            for is_control in (True, False):
                part = rows.filter(pl.col("is_control") == is_control)
                if len(part) == 0:
                    continue
                x = self._embed(data.read(part["image_id"].to_numpy()))
                parts.append(profiles_of(x, plate, part["source"][0], part["batch"][0], part["well"].to_list(),
                                         part["label"].to_numpy(), is_control))
        return concat(parts) if parts else self._empty()

    def _targets(self, views: tuple[PlateView, ...]) -> Profiles:
        """Profiles of the target plates' images (no labels, no wells; source and batch unknown)."""
        parts = []
        for view in views:
            for images, is_control in ((view.controls, True), (view.treated, False)):
                if len(images) == 0:
                    continue
                x = self._embed(images[:])
                parts.append(profiles_of(x, view.plate, TARGET, TARGET, [""] * len(x),
                                         np.full(len(x), DMSO_LABEL if is_control else UNKNOWN), is_control))
        return concat(parts) if parts else self._empty()

    def _empty(self) -> Profiles:
        return profiles_of(np.empty((0, self.featuriser_.dim)), "", "", "", [], np.empty(0, np.int64), False)
