"""Profile corrections: learned once from the profiles ``fit`` sees, then one transform per plate.

A :class:`Correction` has two steps, like TVN (:mod:`benchmark.core.profiles.tvn`):

1. :meth:`Correction.fit` on :class:`~benchmark.core.profiles.data.Profiles` (image embeddings with
   plate, source and control flag; a transductive method's include the target plates, which
   come without labels and wells). Per-plate corrections learn nothing here.
2. :meth:`Correction.plate` from a plate's name and its DMSO embeddings: a function that
   corrects embeddings of that plate's images, each image on its own.

The numerics are the field's libraries: pycytominer's ``RobustMAD`` and ``Spherize``
(``ZCA-cor``), harmonypy's ``run_harmony`` and inmoose's ``pycombat_norm``. Harmony and
ComBat correct the images they were fitted on; for an image they did not see (the held-out
wells of a training plate) :class:`Harmony` moves it by the distance-weighted mean
correction of its nearest fitted images of the same batch, and :class:`ComBat` applies its
batch's per-feature affine map (ComBat without covariates is exactly affine within a batch),
recovered from the fitted images by least squares.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import MethodError
from .data import Profiles

Transform = Callable[[np.ndarray], np.ndarray]
BATCH_KEYS = ("plate", "source")
MIN_CONTROLS = 2


def require(module: str, package: str, method: str) -> Any:
    """Import ``module`` or raise a :class:`MethodError` saying which package ``method`` needs."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MethodError(f"{method} needs {package} ({exc}); install it: pip install '{package}' "
                          "(or pip install -e '.[profiles]')") from None


def check_batch_key(key: str) -> str:
    """``key`` if it is a valid batch key for Harmony and ComBat; else a :class:`MethodError` listing the valid ones."""
    if key not in BATCH_KEYS:
        raise MethodError(f"batch_key {key!r} is not valid; use one of {', '.join(BATCH_KEYS)}")
    return key


def check_controls(plate: str, controls: np.ndarray, what: str) -> np.ndarray:
    """The plate's DMSO embeddings as float64, or a :class:`MethodError` when there are fewer than 2."""
    controls = np.asarray(controls, dtype=np.float64)
    if controls.ndim != 2 or len(controls) < MIN_CONTROLS:
        raise MethodError(f"plate {plate} has {len(controls)} DMSO images; {what} needs the plate's DMSO wells "
                          f"(at least {MIN_CONTROLS} images)")
    return controls


# ----------------------------------------------------------------------------- pure functions

def centre_scale(centre: np.ndarray, scale: np.ndarray) -> Transform:
    """``x -> (x - centre) / scale`` per feature, computed in float64 and returned as float32."""
    return lambda x: ((np.asarray(x, dtype=np.float64) - centre) / scale).astype(np.float32)


def robust_mad(controls: np.ndarray, epsilon: float = 1e-18) -> Transform:
    """pycytominer's ``RobustMAD`` fitted on ``controls``: ``x -> (x - median) / (1.4826 MAD + epsilon)``."""
    import pandas as pd

    transform = require("pycytominer.operations.transform", "pycytominer>=1.7", "robust MAD normalisation")
    fitted = transform.RobustMAD(epsilon=epsilon).fit(pd.DataFrame(np.asarray(controls, dtype=np.float64)))
    return centre_scale(fitted.median.to_numpy(), fitted.mad.to_numpy() + epsilon)


def zca_cor(controls: np.ndarray, epsilon: float = 1e-6) -> Transform:
    """pycytominer's ``Spherize(method="ZCA-cor")`` fitted on ``controls``: standardise, then ZCA-whiten."""
    import pandas as pd

    transform = require("pycytominer.operations.transform", "pycytominer>=1.7", "ZCA-cor sphering")
    try:
        fitted = transform.Spherize(epsilon=epsilon, method="ZCA-cor", return_numpy=True).fit(
            pd.DataFrame(np.asarray(controls, dtype=np.float64)))
    except ValueError as exc:  # a constant feature, or a rank-deficient reference
        raise MethodError(f"ZCA-cor sphering cannot be fitted on these {len(controls)} DMSO embeddings: {exc}") from None
    return lambda x: fitted.transform(pd.DataFrame(np.asarray(x, dtype=np.float64))).astype(np.float32)


def harmony_embeddings(x: np.ndarray, batches: np.ndarray, *, theta: float, sigma: float, n_clusters: int,
                       max_iter: int, seed: int, threads: int = 1, verbose: bool = False) -> np.ndarray:
    """harmonypy's corrected embeddings of ``x`` ``(n, d)`` for ``batches`` ``(n,)``, as ``(n, d)``.

    harmonypy >= 2 returns ``Z_corr`` as ``n x d``, earlier versions as ``d x n``; both are accepted.
    """
    harmonypy = require("harmonypy", "harmonypy>=2.0", "Harmony")
    x = np.asarray(x, dtype=np.float64)
    result = harmonypy.run_harmony(x, {"batch": np.asarray(batches)}, "batch", theta=theta, sigma=sigma,
                                   nclust=n_clusters or None, max_iter_harmony=max_iter, random_state=seed,
                                   verbose=verbose, **({"ncores": threads} if threads > 0 else {}))
    z = np.asarray(result.Z_corr, dtype=np.float64)
    if z.shape == x.shape:
        return z
    if z.shape == x.shape[::-1]:
        return z.T
    raise MethodError(f"harmonypy returned corrected embeddings of shape {z.shape} for input {x.shape}; "
                      "expected n x d (harmonypy >= 2) or d x n")


def combat_embeddings(x: np.ndarray, batches: np.ndarray, *, parametric: bool = True,
                      mean_only: bool = False) -> np.ndarray:
    """inmoose's ``pycombat_norm`` of ``x`` ``(n, d)`` for ``batches`` ``(n,)``, as ``(n, d)``.

    ``pycombat_norm`` takes features x samples; the transposes happen here.
    """
    pycombat = require("inmoose.pycombat", "inmoose>=0.9", "ComBat")
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(pycombat.pycombat_norm(x.T, list(np.asarray(batches)), par_prior=parametric,
                                          mean_only=mean_only), dtype=np.float64)
    if z.shape != x.shape[::-1]:
        raise MethodError(f"inmoose pycombat_norm returned shape {z.shape} for features x samples {x.T.shape}")
    return z.T


def affine_per_feature(x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``(slope, intercept)`` per feature with ``z ≈ slope * x + intercept`` (slope 1 where x is constant)."""
    x, z = np.asarray(x, dtype=np.float64), np.asarray(z, dtype=np.float64)
    xm, zm = x.mean(axis=0), z.mean(axis=0)
    var = ((x - xm) ** 2).mean(axis=0)
    cov = ((x - xm) * (z - zm)).mean(axis=0)
    slope = np.where(var > 1e-12, cov / np.where(var > 1e-12, var, 1.0), 1.0)
    return slope, zm - slope * xm


def offset_transfer(fitted: np.ndarray, offsets: np.ndarray, neighbours: int) -> Transform:
    """``x -> x +`` the inverse-distance-weighted mean offset of the ``neighbours`` nearest ``fitted`` rows.

    An image that was fitted is its own nearest row (distance 0) and gets its own offset back.
    """
    from scipy.spatial import cKDTree  # scipy's tree: sklearn's neighbours load native code at run time

    fitted, offsets = np.asarray(fitted, dtype=np.float64), np.asarray(offsets, dtype=np.float64)
    tree, k = cKDTree(fitted), max(1, min(neighbours, len(fitted)))

    def transform(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if len(x) == 0:
            return x.astype(np.float32)
        dist, idx = tree.query(x, k=k)
        dist, idx = dist.reshape(len(x), k), idx.reshape(len(x), k)
        exact = dist[:, 0] <= 1e-9 * (1.0 + np.abs(x).max(axis=1))
        weights = 1.0 / np.maximum(dist, 1e-12)
        weights[exact] = 0.0
        weights[exact, 0] = 1.0
        weights /= weights.sum(axis=1, keepdims=True)
        return (x + np.einsum("nk,nkd->nd", weights, offsets[idx])).astype(np.float32)

    return transform


# ----------------------------------------------------------------------------- corrections

class Correction(ABC):
    """A profile correction (see the module docstring)."""

    name: str = "correction"

    def fit(self, profiles: Profiles) -> Correction:
        """Learn from the profiles ``fit`` sees (default: nothing to learn)."""
        return self

    @abstractmethod
    def plate(self, plate: str, controls: np.ndarray) -> Transform:
        """The transform of the images of ``plate`` (``controls``: its DMSO embeddings, possibly empty)."""

    def describe(self) -> dict[str, Any]:
        """What the correction is and learned, for the fit report."""
        return {"correction": self.name}


class NoCorrection(Correction):
    """The embeddings as they are (the baseline)."""

    name = "none"

    def plate(self, plate: str, controls: np.ndarray) -> Transform:
        return lambda x: np.asarray(x, dtype=np.float32)


class _PerPlate(Correction):
    """A correction fitted on each plate's own DMSO embeddings, on the features every plate fit saw can carry it.

    ``fit`` keeps the features whose DMSO spread (:meth:`spread`) is positive on every plate it
    sees: a frozen network's ReLU features are often zero on most images, and dividing by a zero
    MAD or standard deviation blows them up (JUMP's pipeline drops such features after
    normalising, pycytominer ``feature_select``). A kept feature that is constant on the DMSO of a
    plate ``fit`` did not see is centred on that plate's DMSO and scaled by the median spread
    over the plates ``fit`` saw (:meth:`borrowed`); the others get the plate's own correction.
    Without ``fit`` every feature is kept and nothing is borrowed. ``epsilon`` is the subclass's
    guard against a division by zero in its own correction.
    """

    what = "a per-plate correction"

    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    @staticmethod
    @abstractmethod
    def spread(controls: np.ndarray) -> np.ndarray:
        """The per-feature spread of a plate's DMSO embeddings that the correction divides by."""

    @staticmethod
    @abstractmethod
    def borrowed(controls: np.ndarray, spread: np.ndarray) -> Transform:
        """The transform of features constant on this plate's DMSO, with the spread ``fit`` saw."""

    @abstractmethod
    def _fit_plate(self, controls: np.ndarray) -> Transform:
        """The plate's own transform, fitted on its DMSO embeddings."""

    def fit(self, profiles: Profiles) -> Correction:
        plates = np.asarray(profiles.plate).astype(str)
        spreads = np.stack([self.spread(check_controls(p, profiles.x[(plates == p) & profiles.is_control], self.what))
                            for p in np.unique(plates[profiles.is_control])])
        keep = (spreads > 0).all(axis=0)
        if not keep.any():
            raise MethodError(f"{self.what}: no feature varies over the DMSO images of every plate; "
                              "use another featuriser")
        self.features_, self.reference_spread_ = keep, np.median(spreads[:, keep], axis=0)
        return self

    def plate(self, plate: str, controls: np.ndarray) -> Transform:
        controls = check_controls(plate, controls, self.what)
        keep = getattr(self, "features_", np.ones(controls.shape[1], dtype=bool))
        controls = controls[:, keep]
        flat = self.spread(controls) <= 0 if hasattr(self, "reference_spread_") else np.zeros(keep.sum(), bool)
        if not flat.any():
            own = self._fit_plate(controls)
            return lambda x: own(np.asarray(x)[:, keep])
        other = self.borrowed(controls[:, flat], self.reference_spread_[flat])
        if flat.all():
            return lambda x: other(np.asarray(x)[:, keep])
        own = self._fit_plate(controls[:, ~flat])

        def transform(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x)[:, keep]
            out = np.empty(x.shape, dtype=np.float32)
            out[:, ~flat], out[:, flat] = own(x[:, ~flat]), other(x[:, flat])
            return out

        return transform

    def describe(self) -> dict[str, Any]:
        kept = getattr(self, "features_", None)
        return {"correction": self.name, "features_kept": None if kept is None else int(kept.sum()),
                "features_dropped": None if kept is None else int((~kept).sum()), "epsilon": self.epsilon}


class PlateMAD(_PerPlate):
    """Per plate and feature: ``(x - median_DMSO) / (1.4826 MAD_DMSO + epsilon)`` (pycytominer ``mad_robustize``)."""

    name = "robust MAD on the plate's DMSO"
    what = "robust MAD normalisation"

    def __init__(self, epsilon: float = 1e-18):
        super().__init__(epsilon)

    @staticmethod
    def spread(controls: np.ndarray) -> np.ndarray:
        return np.median(np.abs(controls - np.median(controls, axis=0)), axis=0)

    @staticmethod
    def borrowed(controls: np.ndarray, spread: np.ndarray) -> Transform:
        return centre_scale(np.median(controls, axis=0), 1.4826 * spread)

    def _fit_plate(self, controls: np.ndarray) -> Transform:
        return robust_mad(controls, self.epsilon)


class PlateSphering(_PerPlate):
    """Per plate: ZCA-cor sphering fitted on the plate's DMSO embeddings (pycytominer ``Spherize``)."""

    name = "ZCA-cor sphering on the plate's DMSO"
    what = "ZCA-cor sphering"

    def __init__(self, epsilon: float = 1e-6):
        super().__init__(epsilon)

    @staticmethod
    def spread(controls: np.ndarray) -> np.ndarray:
        return controls.std(axis=0)

    @staticmethod
    def borrowed(controls: np.ndarray, spread: np.ndarray) -> Transform:
        return centre_scale(controls.mean(axis=0), spread)

    def _fit_plate(self, controls: np.ndarray) -> Transform:
        return zca_cor(controls, self.epsilon)


class _Joint(Correction):
    """A correction fitted on all plates jointly, with ``batch_key`` (plate or source) as the batch."""

    def __init__(self, batch_key: str = "plate"):
        self.batch_key = check_batch_key(batch_key)

    def _batches(self, profiles: Profiles) -> np.ndarray:
        return np.asarray(profiles.plate if self.batch_key == "plate" else profiles.source)

    def fit(self, profiles: Profiles) -> Correction:
        batches = self._batches(profiles)
        if len(np.unique(batches)) < 2:
            raise MethodError(f"{self.name} needs at least 2 batches ({self.batch_key}s) to correct; "
                              f"fit saw {len(np.unique(batches))}")
        self.batch_of_ = dict(zip(np.asarray(profiles.plate).tolist(), batches.tolist()))
        self.n_batches_ = int(len(np.unique(batches)))
        self.n_images_ = int(len(batches))
        self._fit(np.asarray(profiles.x, dtype=np.float64), batches)
        return self

    @abstractmethod
    def _fit(self, x: np.ndarray, batches: np.ndarray) -> None:
        """Fit on all images ``x`` with their ``batches``; keep a per-batch transform."""

    def _batch_of(self, plate: str) -> str:
        if not hasattr(self, "batch_of_"):
            raise MethodError(f"{self.name} is not fitted yet: call fit() first")
        if plate not in self.batch_of_:
            raise MethodError(f"plate {plate} was not part of {self.name}'s joint fit, which corrects only the "
                              "plates fit saw (training, validation and train.targets); give the method "
                              "access 'transductive' so that fit gets the target plates")
        return self.batch_of_[plate]

    def describe(self) -> dict[str, Any]:
        return {"correction": self.name, "batch_key": self.batch_key,
                "n_batches": getattr(self, "n_batches_", None), "n_images": getattr(self, "n_images_", None)}


class Harmony(_Joint):
    """Harmony (Korsunsky et al. 2019) on all images jointly; unseen images by offset transfer."""

    name = "Harmony"

    def __init__(self, batch_key: str = "plate", theta: float = 2.0, sigma: float = 0.1, n_clusters: int = 0,
                 max_iter: int = 10, neighbours: int = 10, seed: int = 0, threads: int = 1, verbose: bool = False):
        super().__init__(batch_key)
        self.theta, self.sigma, self.n_clusters, self.max_iter = theta, sigma, n_clusters, max_iter
        self.neighbours, self.seed, self.threads, self.verbose = neighbours, seed, threads, verbose

    def _fit(self, x: np.ndarray, batches: np.ndarray) -> None:
        z = harmony_embeddings(x, batches, theta=self.theta, sigma=self.sigma, n_clusters=self.n_clusters,
                               max_iter=self.max_iter, seed=self.seed, threads=self.threads, verbose=self.verbose)
        self.transforms_ = {b: offset_transfer(x[batches == b], (z - x)[batches == b], self.neighbours)
                            for b in np.unique(batches).tolist()}

    def plate(self, plate: str, controls: np.ndarray) -> Transform:
        batch = self._batch_of(plate)
        return self.transforms_[batch]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "theta": self.theta, "sigma": self.sigma,
                "n_clusters": self.n_clusters or "harmonypy default min(n/30, 100)", "max_iter": self.max_iter,
                "unseen_images": f"mean offset of the {self.neighbours} nearest fitted images of the batch"}


class ComBat(_Joint):
    """ComBat (Johnson et al. 2007) with empirical Bayes priors on all images jointly, no covariates (no labels)."""

    name = "ComBat"

    def __init__(self, batch_key: str = "plate", parametric: bool = True, mean_only: bool = False):
        super().__init__(batch_key)
        self.parametric, self.mean_only = parametric, mean_only

    def _fit(self, x: np.ndarray, batches: np.ndarray) -> None:
        z = combat_embeddings(x, batches, parametric=self.parametric, mean_only=self.mean_only)
        self.affine_ = {b: affine_per_feature(x[batches == b], z[batches == b]) for b in np.unique(batches).tolist()}

    def plate(self, plate: str, controls: np.ndarray) -> Transform:
        batch = self._batch_of(plate)
        slope, intercept = self.affine_[batch]
        return lambda x: (np.asarray(x, dtype=np.float64) * slope + intercept).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "parametric": self.parametric, "mean_only": self.mean_only}
