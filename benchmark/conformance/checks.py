"""Conformance checks any method can run: ``bench methods check NAME`` and the pytest suite.

Like scikit-learn's ``check_estimator``: a list of small ``check_<property>`` functions,
each asserting one property of a method on a tiny synthetic fold and failing with a
message that says what was found and what to change. :func:`iter_checks` runs them
and yields one :class:`CheckResult` each; ``tests/test_conformance_checks.py`` parametrises
the same checks over the registry. The method is fitted once (with its
``quick_overrides``) and deep-copied for every check that needs a fitted method.

The check fold (:func:`check_data`): the ``synthetic`` dataset, preset ``tiny`` with
3 sources × 2 batches × 1 plate, 1 site per well, 48 px images (384 images). Train:
the first batch of the first two sources; validation: the second batch of the first
source; target plates: both plates of the third source.

Most checks call the method in "this process". ``sealed`` runs it end to end in a sealed
worker process, as ``bench run`` does (:mod:`benchmark.sealed`): it fails, naming what
was tried, when the sandbox refused something; when its predictions follow the false labels
of a canary planted where a cheater might look (:mod:`benchmark.conformance.canaries`), naming the place;
and (for a deterministic method) when the sealed predictions differ from the in-process ones,
which happens when a method uses something only the in-process objects lead to.

A plugin's code never runs in the evaluator (:mod:`benchmark.registry`): for a plugin,
"this process" is a sandboxed interpreter (:func:`run_checks_isolated`, started through
:func:`benchmark.sealed.isolated.run_isolated`) that runs every check but ``sealed`` and
returns their results and its in-process predictions as JSON; the evaluator checks that
answer's form and runs ``sealed`` itself. Those results are as trustworthy as the method
(its own process reports them); the ``sealed`` check and the scored runs are what the
evaluator enforces.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from . import canaries
from ..constants import N_CLASSES
from ..datasets import Dataset, load_dataset
from ..datasets.dataset import LabelledImages, PlateView, open_dataset
from ..errors import BenchError
from ..protocol.evaluation import LocalHost, view_for, evaluate, target_views
from ..protocol.method_calls import StageError
from ..protocol.method_calls import check_probabilities as validate_probabilities
from ..method_info import MethodInfo, info_of, method_info, plugin_folders, resolve_config
from ..methods.base import AccessLevel, Method, MethodConfig
from .private_reads import watching
from ..records import json_safe
from ..registry import get_method, method_entry, signature_problems
from ..sealed.executor import WorkerFailure
from ..sealed.runs import warm_up
from ..sealed.limits import Limits
from ..sealed.runs import SealedRuns
from ..splits import Fold

CHECK_DATASET: dict[str, Any] = {"size": "tiny", "n_sources": 3, "batches_per_source": 2, "plates_per_batch": 1,
                                 "sites_per_well": 1, "image_size": 48}
"""Options of ``load_dataset("synthetic", ...)`` for the check fold."""
TOLERANCE = 1e-5
"""Largest absolute difference of two probabilities that still counts as "the same prediction"."""
SEED = 0
SEALED_TIME_LIMIT_S = 600.0
"""Time limit of the ``sealed`` check's worker (a quick fit on the check fold takes seconds), and of a
plugin's sandboxed process running the other checks."""
EVALUATOR_CHECKS = ("sealed",)
"""Checks the evaluator runs itself, also for a plugin (the others run where the method's code may run)."""
MAX_MESSAGE = 1000
"""Longest check message accepted from a plugin's sandboxed process."""


class CheckFailed(AssertionError):
    """A check found a problem; the message says what and how to fix it."""


class CheckSkipped(Exception):
    """A check does not apply (or could not run because an earlier step failed)."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``passed``, ``failed`` or ``skipped``, with a one-line explanation."""

    check: str
    status: str
    message: str
    seconds: float = 0.0


# ----------------------------------------------------------------------------- the check fold

@dataclass
class CheckData:
    """The tiny fold the checks run on: labelled train/val sets and two target plates."""

    dataset: Dataset
    train: LabelledImages
    val: LabelledImages
    targets: dict[str, np.ndarray]  # target plate -> its treated image ids
    fold: Fold | None = None        # the same fold as a Fold, for end-to-end (sealed) runs
    _scrambled: Dataset | None = field(default=None, repr=False)
    _tmp: Any = field(default=None, repr=False)
    _runs: SealedRuns | None = field(default=None, repr=False)

    def view(self, plate: str, dataset: Dataset | None = None) -> PlateView:
        """The full label-free view of a target plate (treated in a fixed shuffled order, controls)."""
        ds = dataset or self.dataset
        return ds.plate_view(plate, self.targets[plate], np.random.default_rng([SEED, 1]))[0]

    def train_for(self, access: AccessLevel) -> LabelledImages:
        """The training set as a method of ``access`` gets it (with ``targets`` views if transductive)."""
        if not access.sees_targets_in_fit or self.fold is None:
            return self.train
        return self.dataset.labelled(self.train.table, target_views(self.dataset, self.fold, SEED))

    def scrambled(self) -> Dataset:
        """A copy of the dataset (same pixels) whose target plates' labels, compounds and wells are permuted."""
        if self._scrambled is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="platebench-check-")
            self._scrambled = scrambled_copy(self.dataset, list(self.targets), Path(self._tmp.name))
        return self._scrambled

    def sealed_runs(self) -> SealedRuns:
        """Sealed runs on the check fold (its store is built in the cache on first use)."""
        if self._runs is None:
            self._runs = SealedRuns(self.dataset, 0, Limits(time_s=SEALED_TIME_LIMIT_S))
        return self._runs


def fold_of(dataset: Dataset) -> CheckData:
    """The check fold of ``dataset``: target = the last source's first two plates (see module docstring)."""
    index = dataset.index
    sources = sorted(index["source"].unique())
    if len(sources) < 2:
        raise BenchError(f"the check fold needs at least 2 sources; dataset {dataset.name} has {len(sources)}")
    target_rows = index.filter(pl.col("source") == sources[-1])
    plates = sorted(target_rows["plate"].unique())[:2]
    rest = index.filter(pl.col("source") != sources[-1])
    firsts = rest.group_by("source").agg(pl.col("batch").min())["batch"].to_list()
    train = rest.filter(pl.col("batch").is_in(firsts))
    val_batch = sorted(rest.filter(pl.col("source") == sources[0])["batch"].unique())[-1]
    val = rest.filter(pl.col("batch") == val_batch) if val_batch not in firsts else rest.clear()
    targets = {p: target_rows.filter((pl.col("plate") == p) & ~pl.col("is_control"))["image_id"].to_numpy()
               for p in plates}
    fold = Fold("check", 0, (sources[-1],), train["image_id"].to_numpy(), val["image_id"].to_numpy(),
                np.empty(0, dtype=np.int64), np.concatenate(list(targets.values())))
    return CheckData(dataset, dataset.labelled(train), dataset.labelled(val), targets, fold)


@lru_cache(maxsize=1)
def check_data() -> CheckData:
    """The standard check fold (generated into the synthetic cache on first use, a few seconds)."""
    return fold_of(load_dataset("synthetic", progress=False, **CHECK_DATASET))


def scrambled_copy(dataset: Dataset, plates: list[str], root: Path) -> Dataset:
    """Write to ``root`` a dataset with the same shards whose treated rows of ``plates`` say another class
    (label ``k`` becomes ``k + 1`` mod 8, with that class's compound and well: :func:`~benchmark.conformance.canaries.relabelled_copy`)."""
    return canaries.relabelled_copy(dataset, plates, root, shift=1)


# ----------------------------------------------------------------------------- the method under check

class CheckContext:
    """One method under check: its class, config, the check fold, and (once) a fitted instance."""

    def __init__(self, method: type[Method], data: CheckData, config: MethodConfig | None = None,
                 device: str = "cpu"):
        self.method, self.data, self.device = method, data, device
        self._config, self._fitted, self._fit_error = config, None, None

    @property
    def config(self) -> MethodConfig:
        """Defaults + ``quick_overrides`` (unless given); a config that cannot be built fails the check."""
        if self._config is None:
            try:
                self._config = resolve_config(self.method, quick=True)
            except Exception as exc:  # noqa: BLE001
                raise CheckFailed(f"the default config cannot be built: {type(exc).__name__}: {exc}; give "
                                  "every hyper-parameter a default and keep quick_overrides to valid fields") from None
        return self._config

    def instance(self) -> Method:
        config = self.config
        try:
            return self.method(config, device=self.device)
        except Exception as exc:  # noqa: BLE001
            raise CheckFailed(first_line(StageError("__init__", None, exc))) from None

    def fit(self) -> Method:
        """A new instance fitted on the check fold (raises :class:`CheckFailed` naming the step)."""
        model = self.instance()
        try:
            returned = model.fit(self.data.train_for(self.method.access), self.data.val, SEED)
        except Exception as exc:  # noqa: BLE001 - report any failure of the method as one line
            raise CheckFailed(first_line(StageError("fit", None, exc))) from None
        if returned is not model:
            raise CheckFailed(f"fit() returned {type(returned).__name__}, not the method itself; end fit with "
                              "`return self`")
        return model

    def fitted(self) -> Method:
        """A fresh copy of the once-fitted method (never adapted); skips if ``fit`` failed."""
        if self._fit_error is not None:
            raise CheckSkipped(f"not run: fit failed ({self._fit_error})")
        if self._fitted is None:
            try:
                self._fitted = self.fit()
            except CheckFailed as exc:
                self._fit_error = str(exc)
                raise
        return copy.deepcopy(self._fitted)

    def predict_plate(self, model: Method, view: PlateView, images: np.ndarray | None = None) -> np.ndarray:
        """``adapt`` on the view cut to the method's access level, then ``predict``; checked probabilities."""
        cut = view_for(model, view, self.data.dataset)
        call(lambda: model.adapt(cut), "adapt", view.plate)
        x = np.asarray(view.treated[:] if images is None else images)
        raw = call(lambda: model.predict(x), "predict", view.plate)
        try:
            return validate_probabilities(raw, len(x), N_CLASSES, self.method.name, view.plate)
        except BenchError as exc:
            raise CheckFailed(str(exc)) from None

    @property
    def info(self) -> MethodInfo:
        """The method and its config as the sealed worker gets them."""
        return info_of(self.method, self.config)

    def local_probabilities(self) -> np.ndarray:
        """The probabilities of an in-process evaluation of the once-fitted method on the check fold."""
        data = self.data
        local = evaluate(LocalHost(self.fitted(), data.dataset, data.fold, fitted=True), data.dataset, data.fold, SEED)
        return probabilities_of(local.predictions)

    def private_reads(self) -> list[str]:
        """The private attributes the method reads in an in-process fit and evaluation."""
        return _private_reads(self)

    def predict_uncut(self, model: Method, view: PlateView, images: np.ndarray) -> np.ndarray:
        """``adapt`` on the full view (more than the access level allows), then ``predict`` ``images``."""
        call(lambda: model.adapt(view), "adapt", view.plate)
        return np.asarray(call(lambda: model.predict(images), "predict", view.plate), dtype=np.float64)


def call(func: Callable[[], Any], stage: str, plate: str | None) -> Any:
    """Run one step of the method; any exception becomes a one-line :class:`CheckFailed`."""
    try:
        return func()
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(first_line(StageError(stage, plate, exc))) from None


def first_line(error: BaseException) -> str:
    """The first line of an error's message: a report line, never a traceback wall."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _differ(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) if len(a) else 0.0


# ----------------------------------------------------------------------------- the checks

def check_declaration(ctx: CheckContext) -> str:
    """The method declares a name, an access level, a description and a Config."""
    cls = ctx.method
    problems = [f"{attr} is missing" for attr in ("name", "access", "description") if not getattr(cls, attr, None)]
    if getattr(cls, "access", None) is not None and not isinstance(cls.access, AccessLevel):
        problems.append(f"access is {cls.access!r}; use AccessLevel.NONE, CONTROLS, UNLABELED or TRANSDUCTIVE")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, MethodConfig)):
        problems.append("Config must be a frozen dataclass subclassing MethodConfig")
    if not isinstance(getattr(cls, "deterministic", None), bool):
        problems.append("deterministic must be True or False")
    if problems:
        raise CheckFailed("; ".join(problems) + " (declare them as class attributes)")
    return f"name '{cls.name}', access {cls.access}, Config {cls.Config.__name__}"


def check_signatures(ctx: CheckContext) -> str:
    """``fit(train, val, seed)``, ``adapt(plate)``, ``predict(images)`` and ``__init__(config, device=...)``."""
    problems = signature_problems(ctx.method)
    try:
        inspect.signature(ctx.method).bind(None, device="cpu", verbose=False)
    except TypeError:
        problems.append(f"__init__{inspect.signature(ctx.method)} does not accept (config, device=..., "
                        "verbose=...); keep Method.__init__ or call super().__init__(config, device=device, "
                        "verbose=verbose)")
    if problems:
        raise CheckFailed("; ".join(problems))
    return "fit(train, val, seed), adapt(plate), predict(images)"


def check_hyperparameters(ctx: CheckContext) -> str:
    """Every hyper-parameter has a default; the config survives a JSON round trip; quick_overrides are valid."""
    config_cls = ctx.method.Config
    if not dataclasses.is_dataclass(config_cls):
        raise CheckFailed(f"{config_cls.__name__} is not a dataclass; decorate it with "
                          "@dataclasses.dataclass(frozen=True)")
    missing = [f.name for f in dataclasses.fields(config_cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise CheckFailed(f"hyper-parameter(s) {', '.join(missing)} of {config_cls.__name__} have no default; "
                          "give every field a default value")
    default = config_cls()
    try:
        text = json.dumps(default.to_dict(), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"{config_cls.__name__}().to_dict() is not JSON-serialisable ({exc}); use numbers, "
                          "strings, booleans or lists of them") from None
    back = config_cls.from_dict(json.loads(text))
    if back != default:
        raise CheckFailed(f"{config_cls.__name__} changes in a JSON round trip ({default} -> {back}); use "
                          "JSON-native field types (tuples become lists: prefer a comma-separated string)")
    try:
        resolve_config(ctx.method, quick=True)
    except BenchError as exc:
        raise CheckFailed(f"quick_overrides are invalid: {exc}") from None
    return f"{len(dataclasses.fields(config_cls))} hyper-parameters with defaults, JSON round trip ok"


def check_fit(ctx: CheckContext) -> str:
    """``fit`` runs on the check fold (with ``quick_overrides``) and returns the method."""
    start = time.perf_counter()
    ctx.fitted()
    return f"fitted in {time.perf_counter() - start:.1f} s"


def check_probabilities(ctx: CheckContext) -> str:
    """For every plate, ``predict`` returns ``(N, 8)`` finite probabilities whose rows sum to 1."""
    model = ctx.fitted()
    for plate in ctx.data.targets:
        ctx.predict_plate(model, ctx.data.view(plate))
    return f"valid probabilities for {len(ctx.data.targets)} plates"


def check_no_state_across_plates(ctx: CheckContext) -> str:
    """``adapt`` on plate A then plate B predicts B exactly as ``adapt`` on B alone."""
    a, b = (ctx.data.view(p) for p in ctx.data.targets)
    alone = ctx.predict_plate(ctx.fitted(), b)
    model = ctx.fitted()
    ctx.predict_plate(model, a)
    after = ctx.predict_plate(model, b)
    diff = _differ(alone, after)
    if diff > TOLERANCE:
        raise CheckFailed(f"predictions for plate {b.plate} differ by up to {diff:.3g} depending on whether plate "
                          f"{a.plate} was adapted to first; adapt() must forget the previous plate (reset every "
                          "plate-specific attribute at its start)")
    return f"plate {b.plate} predicted the same after plate {a.plate}"


def check_deterministic(ctx: CheckContext) -> str:
    """Two fits with the same seed give the same predictions (if the method declares ``deterministic``)."""
    if not ctx.method.deterministic:
        raise CheckSkipped("the method declares deterministic = False")
    view = ctx.data.view(next(iter(ctx.data.targets)))
    first = ctx.predict_plate(ctx.fitted(), view)
    second = ctx.predict_plate(ctx.fit(), view)
    diff = _differ(first, second)
    if diff > TOLERANCE:
        raise CheckFailed(f"two fits with seed {SEED} give predictions that differ by up to {diff:.3g}; derive "
                          "every random choice from fit's seed (torch.manual_seed, np.random.default_rng(seed)), "
                          "or declare deterministic = False")
    return f"same predictions from two fits with seed {SEED}"


def check_access_level(ctx: CheckContext) -> str:
    """Predictions use no more of the target plate than the declared access level allows."""
    access = ctx.method.access
    if access.sees_treated:
        return (f"access {access}: the plate's treated and DMSO images may be used"
                f"{' (and the target plates already in fit)' if access.sees_targets_in_fit else ''}; labels never "
                "reach a method")
    (plate, _), (other, _) = ctx.data.targets.items()
    view, foreign = ctx.data.view(plate), ctx.data.view(other)
    x = view.treated[:]
    honest = ctx.predict_uncut(ctx.fitted(), view, x)
    swap = "treated and DMSO" if access is AccessLevel.NONE else "treated"
    swapped = PlateView(plate, foreign.treated, foreign.controls if access is AccessLevel.NONE else view.controls)
    diff = _differ(honest, ctx.predict_uncut(ctx.fitted(), swapped, x))
    allowed = "nothing of the plate" if access is AccessLevel.NONE else "only plate.controls"
    if diff > TOLERANCE:
        raise CheckFailed(f"access {access}: predictions changed by up to {diff:.3g} when the view's {swap} images "
                          f"were replaced by another plate's; adapt() may use {allowed}. Stop reading the rest, "
                          "or declare a wider access level")
    half = len(x) // 2
    mixed = np.concatenate([x[:half], foreign.treated[:]])
    together = ctx.predict_uncut(ctx.fitted(), view, mixed)[:half]
    diff = _differ(honest[:half], together)
    if diff > TOLERANCE:
        raise CheckFailed(f"access {access}: the prediction of an image changed by up to {diff:.3g} with the other "
                          "images passed to predict() with it; predict each image on its own (e.g. BatchNorm in "
                          "eval mode), or declare access unlabeled")
    return f"access {access}: predictions independent of the plate's {swap} images and of the predict() batch"


def check_label_blind(ctx: CheckContext) -> str:
    """Predictions do not change when the target plate's labels, compounds and wells are scrambled in the index."""
    plate = next(iter(ctx.data.targets))
    honest = ctx.predict_plate(ctx.fitted(), ctx.data.view(plate))
    scrambled = ctx.data.view(plate, ctx.data.scrambled())
    diff = _differ(honest, ctx.predict_plate(ctx.fitted(), scrambled))
    if diff > TOLERANCE:
        raise CheckFailed(f"predictions on plate {plate} changed by up to {diff:.3g} when its labels were scrambled "
                          "in the dataset's index: the method reads target labels (e.g. through files or private "
                          "attributes behind the view); use only plate.plate, plate.treated and plate.controls")
    return "predictions unchanged with the target plate's labels scrambled"


def check_sealed(ctx: CheckContext | PluginCheckContext) -> str:
    """End to end in a sealed worker: nothing refused, valid predictions, the same as in process (if deterministic)."""
    data = ctx.data
    if data.fold is None:
        raise CheckSkipped("the check data has no fold to run end to end")
    runs = data.sealed_runs()
    info = ctx.info
    host = runs.host(info, data.fold, ctx.device)
    planted = canaries.plant(data.dataset, data.fold.target_ids)
    try:
        with host:
            sealed = evaluate(host, data.dataset, data.fold, SEED)
    except WorkerFailure as exc:
        raise CheckFailed(str(exc)) from None
    except StageError as exc:
        raise CheckFailed(f"in a sealed worker: {first_line(exc)}") from None
    except BenchError as exc:
        raise CheckFailed(f"in a sealed worker: {exc}") from None
    finally:
        canaries.remove(planted)
    follows = canaries.followed(sealed.predictions, planted)
    if follows is not None:
        canary, agreement, true = follows
        raise CheckFailed(f"its predictions follow the false labels planted at {canary.root} (agreement {agreement:.2f}, "
                          f"with the true labels {true:.2f}): the method reads labels from files it was not given "
                          "(earlier runs' predictions, a dataset index); use only what fit, adapt and predict hand it")
    worker = host.worker_info()
    ran = (f"ran in a sealed worker (start-up {worker['start_s']:.2f} s, {worker['wall_s']:.1f} s in all, peak "
           f"{worker['peak_rss_mb']:.0f} MB); nothing refused")
    if not info.deterministic:
        return ran
    local, mine = ctx.local_probabilities(), probabilities_of(sealed.predictions)
    if local.shape != mine.shape:
        raise CheckFailed(f"the in-process predictions have shape {local.shape}, the sealed ones {mine.shape}: the "
                          "method predicts different images in process; use only the public API (docs/sealed.md)")
    diff = _differ(mine, local)
    if diff > TOLERANCE:
        found = ctx.private_reads()
        what = (f"it read the private attribute(s) {', '.join(found)}, which lead to the whole dataset in process"
                if found else "it uses something only the in-process objects lead to (objects found through gc, "
                "the dataset's files, private attributes)")
        raise CheckFailed(f"predictions in a sealed worker differ by up to {diff:.3g} from the same fit in process: "
                          f"{what}; use only the public API of train, val and the plate view (docs/sealed.md)")
    return f"{ran}; predictions the same as in process"


def _private_reads(ctx: CheckContext) -> list[str]:
    """Fit and evaluate once more in process, recording the private attributes the method reads."""
    with watching() as seen:
        try:
            evaluate(LocalHost(ctx.instance(), ctx.data.dataset, ctx.data.fold), ctx.data.dataset, ctx.data.fold, SEED)
        except (StageError, BenchError, CheckFailed):
            pass  # what it read before failing is the diagnosis
    return seen


CHECKS: dict[str, Callable[[CheckContext], str]] = {
    f.__name__.removeprefix("check_"): f for f in (
        check_declaration, check_signatures, check_hyperparameters, check_fit, check_probabilities,
        check_no_state_across_plates, check_deterministic, check_access_level, check_label_blind, check_sealed)}
"""Every check by name, in the order they run."""


def run_check(ctx: CheckContext, name: str) -> CheckResult:
    """Run one check; never raises for a failure of the method."""
    start = time.perf_counter()
    try:
        message, status = CHECKS[name](ctx), "passed"
    except CheckFailed as exc:
        message, status = str(exc), "failed"
    except CheckSkipped as exc:
        message, status = str(exc), "skipped"
    except Exception as exc:  # noqa: BLE001 - e.g. a config that cannot even be built
        message, status = f"raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", "failed"
    return CheckResult(name, status, message, time.perf_counter() - start)


def probabilities_of(predictions: pl.DataFrame) -> np.ndarray:
    """The ``prob_*`` columns of a predictions table, as an (n, 8) array."""
    return predictions.select([c for c in predictions.columns if c.startswith("prob_")]).to_numpy()


def iter_checks(method: str | type[Method], data: CheckData | None = None, config: MethodConfig | None = None,
                device: str = "cpu", *, overrides: dict[str, Any] | None = None,
                info: MethodInfo | None = None) -> Iterator[CheckResult]:
    """Run every check on ``method`` (a registered name or a class) and yield their results in order.

    ``overrides`` (``--set``) apply after the quick settings unless ``config`` is given. A plugin (by
    name) is checked through :func:`run_checks_isolated` in a sandbox and the ``sealed`` check;
    ``info``: its :func:`~benchmark.method_info.method_info` with ``overrides`` and ``quick``, if known.
    """
    warm_up()  # the sealed check's zygote imports while the other checks run
    data = data or check_data()
    if isinstance(method, str) and method_entry(method).plugin:
        yield from _plugin_checks(method, data, dict(overrides or {}), device, info)
        return
    cls = get_method(method) if isinstance(method, str) else method
    if config is None and overrides:
        config = resolve_config(cls, overrides, quick=True)
    ctx = CheckContext(cls, data, config, device)
    for name in CHECKS:
        yield run_check(ctx, name)


# ----------------------------------------------------------------------------- plugins: checks in a sandbox

def _isolated_context(payload: dict[str, Any]) -> CheckContext:
    """Inside the sandbox: the method named in ``payload`` (a plugin's entry point too) on the check fold."""
    cls = get_method(str(payload["method"]), import_plugins=True)
    overrides = payload.get("overrides") or {}
    config = resolve_config(cls, overrides, quick=True) if overrides else None
    return CheckContext(cls, fold_of(open_dataset(Path(payload["dataset"]))), config, str(payload.get("device", "cpu")))


def run_checks_isolated(payload: dict[str, Any]) -> dict[str, Any]:
    """**Runs inside the sandbox**: every check but ``sealed`` on ``payload["method"]`` (with its
    ``overrides``, on the check dataset at ``payload["dataset"]``), and, for a deterministic method,
    its in-process probabilities for the ``sealed`` check's comparison (``local``; None if fit failed)."""
    ctx = _isolated_context(payload)
    results = [run_check(ctx, name) for name in CHECKS if name not in EVALUATOR_CHECKS]
    local = None
    if getattr(ctx.method, "deterministic", None) is True:
        try:
            local = ctx.local_probabilities().tolist()
        except Exception:  # noqa: BLE001 - the failing check already says why
            local = None
    return {"results": [dataclasses.asdict(r) for r in results], "local": local}


def private_reads_isolated(payload: dict[str, Any]) -> dict[str, Any]:
    """**Runs inside the sandbox**: the private attributes the method reads in process (``reads``)."""
    return {"reads": _private_reads(_isolated_context(payload))}


def parse_isolated_checks(answer: Any, expected: list[str]) -> tuple[list[CheckResult], np.ndarray | None]:
    """Check the sandbox's answer (untrusted JSON): one result per ``expected`` check, in order, and the
    local probabilities; raises :class:`BenchError` saying what is malformed."""
    if not (isinstance(answer, dict) and isinstance(answer.get("results"), list)):
        raise BenchError("the answer is not an object with a list of results")
    found: dict[str, CheckResult] = {}
    for item in answer["results"]:
        if not (isinstance(item, dict) and item.get("check") in expected and item.get("status") in
                ("passed", "failed", "skipped") and isinstance(item.get("message"), str)
                and isinstance(item.get("seconds"), (int, float)) and np.isfinite(item["seconds"])):
            raise BenchError(f"a result is malformed: {str(item)[:120]}")
        found[item["check"]] = CheckResult(item["check"], item["status"], item["message"][:MAX_MESSAGE],
                                           float(item["seconds"]))
    results = [found.get(n) or CheckResult(n, "failed", "no result from the sandboxed process") for n in expected]
    local = answer.get("local")
    if local is None:
        return results, None
    try:
        array = np.asarray(local, dtype=np.float64)
    except (TypeError, ValueError):
        raise BenchError("the in-process probabilities are not a table of numbers") from None
    if array.ndim != 2 or array.shape[1] != N_CLASSES or not np.isfinite(array).all():
        raise BenchError(f"the in-process probabilities are not a finite (n, {N_CLASSES}) table")
    return results, array


def _plugin_checks(name: str, data: CheckData, overrides: dict[str, Any], device: str,
                   info: MethodInfo | None) -> Iterator[CheckResult]:
    """The checks of plugin ``name``: all but ``sealed`` in a sandboxed process, then ``sealed`` from here."""
    from ..sealed.isolated import run_isolated

    payload = {"method": name, "overrides": json_safe(overrides), "dataset": str(data.dataset.root),
               "device": device}
    inside = [n for n in CHECKS if n not in EVALUATOR_CHECKS]
    local = None
    start = time.perf_counter()
    try:
        answer = run_isolated("benchmark.conformance.checks:run_checks_isolated", payload, time_limit_s=SEALED_TIME_LIMIT_S,
                              readable=[data.dataset.root, *plugin_folders(name)])
        results, local = parse_isolated_checks(answer, inside)
    except BenchError as exc:
        seconds = time.perf_counter() - start
        results = [CheckResult(inside[0], "failed", f"the sandboxed process running the checks failed: "
                               f"{first_line(exc)}", seconds)]
        results += [CheckResult(n, "skipped", "not run: the sandboxed process failed") for n in inside[1:]]
    yield from results
    try:
        info = info or method_info(name, overrides, quick=True)
    except BenchError as exc:
        yield CheckResult("sealed", "failed", f"the method could not be described in a sandbox: {first_line(exc)}")
        return
    yield run_check(PluginCheckContext(info, data, device, payload, local), "sealed")


class PluginCheckContext:
    """The evaluator's side of a plugin under check: what ``check_sealed`` needs, without its class."""

    def __init__(self, info: MethodInfo, data: CheckData, device: str, payload: dict[str, Any],
                 local: np.ndarray | None):
        self.info, self.data, self.device, self._payload, self._local = info, data, device, payload, local

    def local_probabilities(self) -> np.ndarray:
        if self._local is None:
            raise CheckSkipped("not compared: there are no in-process predictions (the method did not fit in the "
                               "sandboxed process)")
        return self._local

    def private_reads(self) -> list[str]:
        """The private attributes the plugin reads in process, from a second sandboxed run ([] if that fails)."""
        from ..sealed.isolated import run_isolated

        try:
            answer = run_isolated("benchmark.conformance.checks:private_reads_isolated", self._payload,
                                  time_limit_s=SEALED_TIME_LIMIT_S,
                                  readable=[self.data.dataset.root, *plugin_folders(self.info.name)])
        except BenchError:
            return []
        reads = answer.get("reads") if isinstance(answer, dict) else None
        return [r[:200] for r in reads[:20] if isinstance(r, str)] if isinstance(reads, list) else []


_contexts: dict[str, CheckContext] = {}


def assert_check(method: str, name: str) -> str:
    """For pytest: run check ``name`` on registered ``method`` (one shared fit per method and process).

    Raises ``AssertionError`` with the check's message on failure; calls ``pytest.skip`` when skipped.
    """
    if method not in _contexts:
        _contexts[method] = CheckContext(get_method(method), check_data())
    result = run_check(_contexts[method], name)
    if result.status == "skipped":
        import pytest

        pytest.skip(result.message)
    if result.status == "failed":
        raise AssertionError(f"{method}: check {name} failed: {result.message}")
    return result.message
