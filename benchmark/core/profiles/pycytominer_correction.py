"""pycytominer's profile processing as a correction: per-plate ``mad_robustize`` on DMSO, then ``feature_select``.

The steps of JUMP's profiling recipe (Arevalo et al. 2024; pycytominer, Serrano et al. 2025) on
image profiles:

1. **Normalise** every plate on its own DMSO images, feature by feature,
   ``(x - median_DMSO) / (1.4826 MAD_DMSO + epsilon)``: pycytominer's
   ``normalize(method="mad_robustize", samples=<DMSO>)``, through :class:`~.corrections.PlateMAD`
   (pycytominer's ``RobustMAD``, the scaler ``normalize`` uses). Features whose DMSO MAD is 0 on a
   plate ``fit`` sees are dropped there (pycytominer would blow them up to ~1e18 and
   ``drop_outliers`` would drop them after).
2. **Select features** with pycytominer's ``feature_select``, by default its operations
   ``variance_threshold`` (variance under 1e-6), ``correlation_threshold`` (of every pair correlated
   above 0.9, the one more correlated with the others goes) and ``drop_outliers`` (any value
   beyond 500 MADs), with pycytominer's default cut-offs, **fitted on the normalised images of the training-domain plates only** (training
   and validation, treated and DMSO; never a target plate, even for a transductive method), then
   applied to every plate as a fixed column selection.

pycytominer is imported when a correction is fitted (it takes seconds to import).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import MethodError
from .corrections import Correction, PlateMAD, Transform, require
from .data import TARGET, Profiles
from .pipeline import correct

OPERATIONS = ("variance_threshold", "correlation_threshold", "drop_outliers")
"""pycytominer ``feature_select`` operations applied by default (JUMP's recipe, without its blocklist)."""


def select_features(x: np.ndarray, names: Sequence[str], operations: Sequence[str] = OPERATIONS, *,
                    corr_threshold: float = 0.9, min_variance: float = 1e-6, outlier_cutoff: float = 500.0) -> np.ndarray:
    """The columns of ``x`` ``(n, d)`` that pycytominer's ``feature_select`` keeps, as a boolean mask ``(d,)``."""
    import pandas as pd

    feature_select = require("pycytominer", "pycytominer>=1.7", "feature selection").feature_select
    names = list(names)
    if len(set(names)) != len(names) or len(names) != np.shape(x)[1]:
        raise ValueError(f"{len(names)} feature names for {np.shape(x)[1]} columns, or names repeated")
    frame = pd.DataFrame(np.asarray(x, dtype=np.float64), columns=names)
    kept = feature_select(frame, features=names, samples="all", operation=list(operations),
                          corr_threshold=corr_threshold, min_variance=min_variance, outlier_cutoff=outlier_cutoff)
    return np.isin(np.asarray(names), np.asarray(kept.columns))


class PycytominerCorrection(Correction):
    """Per-plate ``mad_robustize`` on DMSO, then ``feature_select`` fitted on the training-domain plates.

    ``names``: the featuriser's feature names (default ``f0, f1, ...``), for the fit report's
    counts of kept features per ``<Compartment>_<Category>`` prefix.
    """

    name = "pycytominer: mad_robustize on the plate's DMSO + feature_select"

    def __init__(self, epsilon: float = 1e-18, operations: Sequence[str] = OPERATIONS, corr_threshold: float = 0.9,
                 min_variance: float = 1e-6, outlier_cutoff: float = 500.0, names: Sequence[str] | None = None):
        self.epsilon, self.operations = epsilon, tuple(operations)
        self.corr_threshold, self.min_variance, self.outlier_cutoff = corr_threshold, min_variance, outlier_cutoff
        self.names = list(names) if names is not None else None

    def fit(self, profiles: Profiles) -> Correction:
        own = np.asarray(profiles.source) != TARGET
        if not own.any():
            raise MethodError("feature selection needs the training plates' images; fit saw none")
        self.normalise_ = PlateMAD(self.epsilon).fit(profiles)
        normalised = correct(self.normalise_, profiles.select(own))
        names = np.asarray(self.names if self.names is not None else [f"f{i}" for i in range(profiles.x.shape[1])])
        if len(names) != profiles.x.shape[1]:
            raise MethodError(f"{len(names)} feature names for {profiles.x.shape[1]} features")
        self.names_ = names[self.normalise_.features_]
        self.selected_ = (select_features(normalised.x, self.names_, self.operations,
                                          corr_threshold=self.corr_threshold, min_variance=self.min_variance,
                                          outlier_cutoff=self.outlier_cutoff)
                          if self.operations else np.ones(len(self.names_), dtype=bool))
        if not self.selected_.any():
            raise MethodError(f"pycytominer feature_select ({', '.join(self.operations)}) kept no feature")
        self.n_fitted_images_ = int(own.sum())
        return self

    def plate(self, plate: str, controls: np.ndarray) -> Transform:
        if not hasattr(self, "selected_"):
            raise MethodError(f"{self.name} is not fitted yet: call fit() first")
        normalise, keep = self.normalise_.plate(plate, controls), self.selected_
        return lambda x: normalise(x)[:, keep]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"correction": self.name, "epsilon": self.epsilon, "operations": list(self.operations),
                               "corr_threshold": self.corr_threshold, "min_variance": self.min_variance,
                               "outlier_cutoff": self.outlier_cutoff}
        if hasattr(self, "selected_"):
            kept = self.names_[self.selected_]
            out.update({"features_in": int(len(self.normalise_.features_)),
                        "features_zero_dmso_mad": int((~self.normalise_.features_).sum()),
                        "features_selected": int(len(kept)), "selection_fitted_on_images": self.n_fitted_images_})
            if self.names is not None:
                out["selected_by_category"] = dict(sorted(Counter("_".join(n.split("_")[:2]) for n in kept).items()))
        return out
