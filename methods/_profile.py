"""What every profile method shares (a base class, not a method): the profile pipeline of
:mod:`benchmark.core.profiles.pipeline` around the method's :meth:`ProfileMethod.correction`.

``fit`` embeds the training, validation and (for a transductive method) target images with a frozen
featuriser, fits the correction, then one logistic regression on the corrected profiles (``C`` by
validation log loss); ``adapt`` builds the target plate's transform from its DMSO images; ``predict``
embeds, corrects and classifies each image on its own. The featuriser is a pretrained encoder
(:func:`~benchmark.core.profiles.featurisers.load_featuriser`) or, for ``featuriser="erm"``, the
penultimate layer of the fold's ERM model (:class:`ERMFeaturiser`, trained here or read from the model cache).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from abc import abstractmethod
from typing import Any

import numpy as np
import polars as pl
import torch

from ..config_bounds import at_least
from ..constants import DMSO_LABEL
from ..core.profiles.corrections import Correction, Transform
from ..core.profiles.data import TARGET, UNKNOWN, Profiles, concat, profiles_of
from ..core.profiles.embedding_cache import EmbeddingCache
from ..core.profiles.featurisers import ERM_SPEC, Featuriser, code_digest, load_featuriser, state_digest
from ..core.profiles.pipeline import ProfileClassifier, correct, metrics_before_after, parse_grid
from ..core.recipe.features import classifier_head
from ..core.training.loop import SELECTION_RULE
from ..core.training.model_cache import current_fold
from ..datasets.dataset import LabelledImages, PlateView
from ..errors import MethodError
from .base import Method, MethodConfig


class ERMFeaturiser:
    """The classifier head's input of a fitted ERM model (``erm``), each image on its own (BN running statistics)."""

    def __init__(self, erm: Any, batch_size: int = 256):
        self.erm, self.batch_size = erm, batch_size
        self.net = erm.net
        self.name = ERM_SPEC
        self.dim = int(classifier_head(self.net.model).in_features)

    @functools.cached_property
    def weights_digest(self) -> str:
        return state_digest(self.net.model)

    @torch.no_grad()
    def embed(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        head = classifier_head(self.net.model)
        seen: list[torch.Tensor] = []
        handle = head.register_forward_pre_hook(lambda layer, args: seen.append(args[0]))
        self.net.model.eval()
        try:
            for start in range(0, len(images), self.batch_size):
                seen.clear()
                self.net.model(self.net.tensor(images[start:start + self.batch_size]))
                out[start:start + len(seen[0])] = seen[0].float().cpu().numpy()
        finally:
            handle.remove()
        return out

    def cache_key(self) -> dict[str, Any] | None:
        return {"featuriser": self.name, "weights_sha256": self.weights_digest, "code": code_digest(),
                "device": str(self.erm.device)}


def fold_featuriser(spec: str, device: str, train: LabelledImages, val: LabelledImages, seed: int,
                    batch_size: int = 256, verbose: bool = False) -> Featuriser:
    """The featuriser named by ``spec``: a frozen encoder, or for ``erm`` the fold's ERM model fitted (or loaded) here."""
    if spec != ERM_SPEC:
        return load_featuriser(spec, device, batch_size)
    from .erm import ERM  # imported here: ERM's module loads the whole training stack

    erm = ERM(device=device, verbose=verbose)
    if len(train.treated_ids()) == 0:
        raise MethodError("featuriser 'erm' needs labelled treated training images to train ERM on")
    erm.fit(train, val, seed)
    return ERMFeaturiser(erm, batch_size)


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
        self.featuriser_: Featuriser = fold_featuriser(self.config.featuriser, self.device, train, val, seed,
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
