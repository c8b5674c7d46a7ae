"""FM + TVN — frozen foundation-model embeddings with Typical Variation Normalization
(Ando et al. 2017, "Improving phenotypic measurements in high-content imaging screens";
as the embedding baseline of Sanchez-Fernandez et al. 2026).

Access: ``controls``. A frozen pretrained encoder embeds every image (treated and
DMSO). TVN, fitted on the training plates' DMSO embeddings, standardises, projects
on DMSO principal axes and, per plate, whitens with that plate's DMSO covariance and
re-colours with the pooled training DMSO covariance. A multinomial logistic
regression is trained on the transformed training embeddings (its regularisation
chosen by validation loss). At test time the target plate's TVN uses only its DMSO
images.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from ..config_bounds import at_least
from ..constants import N_CLASSES
from ..core.encoders.loading import Encoder
from ..core.profiles.embedding_cache import EmbeddingCache
from ..core.profiles.featurisers import EncoderFeaturiser
from ..core.training.model_cache import current_fold
from ..core.training.loop import SELECTION_RULE
from ..core.profiles.tvn import apply_tvn, fit_tvn, plate_tvn
from ..datasets.dataset import LabelledImages, PlateView
from ..errors import MethodError
from ..registry import register_method
from .base import AccessLevel, Method, MethodConfig


@dataclasses.dataclass(frozen=True)
class FMTVNConfig(MethodConfig):
    """FM + TVN hyper-parameters."""

    encoder: str = "platebench-ssl"  # encoder spec: "<backend>" or "<backend>:<argument>"
    n_components: int = 0            # PCA components kept by TVN; 0 keeps all
    ridge: float = 0.5               # added to every TVN covariance's diagonal (reference: 0.5)
    c_grid: str = "0.01,0.1,1,10"    # inverse regularisation strengths tried; the lowest val loss wins
    embed_batch_size: int = 256      # images per encoder forward pass

    bounds = {"n_components": at_least(0), "ridge": at_least(0), "embed_batch_size": at_least(1)}


@register_method
class FMTVN(Method):
    """Frozen encoder, per-plate TVN on DMSO embeddings, linear classifier."""

    name = "fm_tvn"
    access = AccessLevel.CONTROLS
    description = "frozen pretrained encoder + per-plate Typical Variation Normalization on DMSO + linear classifier"
    Config = FMTVNConfig
    config: FMTVNConfig
    quick_overrides = {"c_grid": "1"}

    def _encoder(self) -> Encoder:
        return self._featuriser().encoder

    def _featuriser(self) -> EncoderFeaturiser:
        """The frozen encoder and, inside a fold, its embedding cache (shared with the ``profile_*`` methods)."""
        if not hasattr(self, "featuriser_"):
            self.featuriser_ = EncoderFeaturiser(self.config.encoder, self.device, self.config.embed_batch_size)
            fold = current_fold()
            self.cache_ = EmbeddingCache(fold.folder if fold is not None else None, self.featuriser_.cache_key())
        return self.featuriser_

    def _embed(self, images: np.ndarray) -> np.ndarray:
        return self.cache_.embed(np.asarray(images), self._featuriser().embed)

    def _transformed(self, data: LabelledImages) -> tuple[np.ndarray, np.ndarray]:
        """TVN-transformed treated embeddings of every plate of ``data`` (each with its own DMSO) and labels."""
        xs, ys = [], []
        for plate in data.plates:
            treated, controls = data.treated_ids(plate), data.control_ids(plate)
            if len(treated) == 0:
                continue
            if len(controls) < 2:
                raise MethodError(f"plate {plate} has {len(controls)} DMSO images; {self.name} needs at least 2")
            state = plate_tvn(self.tvn_, self._embed(data.read(controls)))
            xs.append(apply_tvn(self.tvn_, state, self._embed(data.read(treated))))
            ys.append(data.labels(treated))
        return np.concatenate(xs), np.concatenate(ys)

    def fit(self, train: LabelledImages, val: LabelledImages, seed: int) -> FMTVN:
        from sklearn.linear_model import LogisticRegression  # imported here: sklearn takes seconds to load
        from sklearn.metrics import log_loss

        start = time.perf_counter()
        for attr in ("featuriser_", "cache_"):  # a new fit opens the cache of the fold it runs in
            self.__dict__.pop(attr, None)
        self._featuriser()
        controls = train.control_ids()
        dmso = self._embed(train.read(controls))
        plates = train.table.filter(train.table["is_control"])["plate"].to_numpy()
        self.tvn_ = fit_tvn(dmso, plates, self.config.n_components, self.config.ridge)
        x, y = self._transformed(train)
        self.mean_, self.scale_ = x.mean(axis=0), x.std(axis=0) + 1e-6
        x_val, y_val = self._transformed(val) if len(val.treated_ids()) else (x[:0], y[:0])
        best = None
        for c in [float(v) for v in self.config.c_grid.split(",")]:
            clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit((x - self.mean_) / self.scale_, y)
            loss = (log_loss(y_val, clf.predict_proba((x_val - self.mean_) / self.scale_), labels=clf.classes_)
                    if len(y_val) else 0.0)
            if best is None or loss < best[0]:
                best = (loss, c, clf)
        self.best_val_loss_, self.c_, self.classifier_ = best
        seconds = time.perf_counter() - start
        encoder = self._encoder()
        self.fit_report_ = {"encoder": encoder.name, "embedding_dim": encoder.dim,
                            "encoder_weights_sha256": getattr(encoder, "weights_digest", None),
                            "tvn_components": int(self.tvn_.components.shape[0]), "C": self.c_,
                            "epochs_run": None, "best_epoch": None, "best_val_loss": float(self.best_val_loss_),
                            "selection": SELECTION_RULE + " over C in " + self.config.c_grid,
                            "train_seconds": round(seconds, 3),
                            "images_per_second": round((len(x) + len(dmso)) / seconds, 1)}
        return self

    def fit_report(self) -> dict[str, Any]:
        """The fit report, with the embedding cache's counts so far (``adapt``/``predict`` embed too)."""
        report = dict(getattr(self, "fit_report_", {}))
        if hasattr(self, "cache_"):
            report["embedding_cache"] = self.cache_.report()
        return report

    def adapt(self, plate: PlateView) -> FMTVN:
        self._check_fitted("classifier_")
        if len(plate.controls) < 2:
            raise MethodError(f"plate {plate.plate} has {len(plate.controls)} DMSO images; "
                              f"{self.name} needs the plate's DMSO wells (at least 2 images) for TVN")
        self.plate_tvn_ = plate_tvn(self.tvn_, self._embed(plate.controls))
        self.plate_ = plate.plate
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._check_fitted("classifier_")
        self._check_adapted()
        x = apply_tvn(self.tvn_, self.plate_tvn_, self._embed(images))
        probs = np.zeros((len(x), N_CLASSES))
        probs[:, self.classifier_.classes_] = self.classifier_.predict_proba((x - self.mean_) / self.scale_)
        return probs
