"""The method adapter API: ``fit`` on labelled training plates, ``adapt`` to one target plate, ``predict``.

A method is a class with a ``name``, an ``access`` level, a one-line
``description`` and a frozen dataclass ``Config`` of hyper-parameters, every field
with a default. Like a scikit-learn estimator, the constructor only stores its
config; ``fit`` and ``adapt`` learn (state ends in ``_``) and return ``self``;
``predict`` changes nothing.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from enum import Enum
from typing import Any, ClassVar

import numpy as np

from ..config_bounds import Bound, check_bounds
from ..datasets.dataset import LabelledImages, PlateView
from ..errors import BenchError, MethodError


class AccessLevel(str, Enum):
    """How much of the target plates a method may see (labels never: they stay with the evaluator)."""

    NONE = "none"                  # nothing: predictions depend on each image alone
    CONTROLS = "controls"          # the plate's DMSO images (plus each image itself)
    UNLABELED = "unlabeled"        # the plate's treated images without labels, and its DMSO images
    TRANSDUCTIVE = "transductive"  # as unlabeled, and already in fit: train.targets, one label-free
    #                                view per out-of-domain target plate (Deep CORAL, DANN, Harmony)

    def __str__(self) -> str:
        return self.value

    @property
    def sees_controls(self) -> bool:
        """Whether ``adapt`` gets the target plate's DMSO images."""
        return self is not AccessLevel.NONE

    @property
    def sees_treated(self) -> bool:
        """Whether ``adapt`` gets the target plate's treated images (unlabelled)."""
        return self in (AccessLevel.UNLABELED, AccessLevel.TRANSDUCTIVE)

    @property
    def sees_targets_in_fit(self) -> bool:
        """Whether ``fit`` gets label-free views of the target plates (``train.targets``)."""
        return self is AccessLevel.TRANSDUCTIVE


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Base of every method's hyper-parameter dataclass (frozen, every field defaulted).

    ``bounds`` maps numeric fields to their valid range (:mod:`benchmark.config_bounds`); a subclass
    declares its own fields' bounds and inherits its parents'. They are checked on construction,
    so a nonsensical value fails before any run starts (a subclass's ``__post_init__`` calls this one).
    """

    bounds: ClassVar[Mapping[str, Bound]] = {}

    def __post_init__(self) -> None:
        check_bounds(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MethodConfig:
        """Build a config from (string or typed) values; unknown keys are an error that lists valid ones."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise BenchError(f"unknown hyper-parameter(s) {', '.join(unknown)} for {cls.__qualname__}; "
                             f"valid: {', '.join(fields)}")
        typed = {}
        for key, value in values.items():
            default = getattr(cls(), key)
            typed[key] = _coerce(key, value, default)
        return cls(**typed)

    def replace(self, **changes: Any) -> MethodConfig:
        return dataclasses.replace(self, **changes)


def _coerce(key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes"):
                return True
            if value.lower() in ("0", "false", "no"):
                return False
            raise ValueError(value)
        return type(default)(value)
    except ValueError:
        raise BenchError(f"hyper-parameter {key}={value!r} is not a valid {type(default).__name__}") from None


class Method(ABC):
    """Base class of all batch-correction methods."""

    name: ClassVar[str]
    access: ClassVar[AccessLevel]
    description: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    deterministic: ClassVar[bool] = True  # same seed, same device -> same predictions
    needs_gpu: ClassVar[bool] = False
    quick_overrides: ClassVar[dict[str, Any]] = {}
    """Config changes of the ``--quick`` smoke profile (e.g. fewer epochs)."""
    min_controls: ClassVar[int] = 0
    seeds_share_fold_work: ClassVar[bool] = False
    """Whether the costly part of ``fit`` (per-image features) is cached per fold and the same for every seed:
    then ``bench sweep`` runs seed 0 of a fold before its other seeds, which read the cache instead of
    computing the same features side by side."""
    """Fewest DMSO images per target plate ``adapt`` can work with (the ``controls`` scenario refuses fewer)."""

    def __init__(self, config: MethodConfig | None = None, *, device: str = "cpu", verbose: bool = False):
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise MethodError(f"{type(self).__name__} takes a {self.Config.__qualname__}, "
                              f"got {type(self.config).__qualname__}")
        self.device = device
        self.verbose = verbose

    @abstractmethod
    def fit(self, train: LabelledImages, val: LabelledImages, seed: int) -> Method:
        """Learn from labelled training plates; select with ``val`` (training-domain plates).

        A method of access ``transductive`` also finds label-free views of the fold's
        out-of-domain target plates in ``train.targets`` (empty for the other levels).
        """

    @abstractmethod
    def adapt(self, plate: PlateView) -> Method:
        """Prepare for one target plate from its label-free view; forget any previous plate."""

    @abstractmethod
    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, n_classes)`` for treated images of the adapted plate."""

    def fit_report(self) -> dict[str, Any]:
        """What training did (epochs, selection rule, best validation loss...), for the run record."""
        return dict(getattr(self, "fit_report_", {}))

    def _check_fitted(self, attr: str = "model_") -> None:
        if not hasattr(self, attr):
            raise MethodError(f"{type(self).__name__} is not fitted yet: call fit() before adapt()/predict()")

    def _check_adapted(self, attr: str = "plate_") -> None:
        if not hasattr(self, attr):
            raise MethodError(f"{type(self).__name__} has no target plate: call adapt(plate) before predict()")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
