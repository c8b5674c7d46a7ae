"""The sealed worker: the process one (method, split, fold, seed) run executes the method in.

It is forked from a forkserver that imported only label-free code, and sets itself up
in this order:

1. adopt the evaluator's environment variables; drop ``sys.path`` entries that lie in a
   protected folder;
2. make the protected folders unreadable at the kernel level where Linux Landlock is available
   (:mod:`benchmark.sealed.landlock`), then install the audit hook (:mod:`benchmark.sealed.audit`),
   so everything after it is audited, the method's own module included; apply the memory limit;
3. resolve the method with :func:`benchmark.registry.get_method` (built-ins, then
   entry-point plugins), or by importing the module that defines it;
4. open the sealed fold store and build ``train`` / ``val`` from it; build the method;
5. seal the hook (no ``ctypes`` loading, no ``gc`` walks) and tell the evaluator it is ready.

Then it answers the evaluator's messages (:mod:`benchmark.sealed.channel`): ``fit``
(seed and, for a transductive method, the target plates' pixels), ``plate`` (one plate's
treated images and controls: ``adapt`` on the view cut to the method's access level, then
``predict``), ``stop`` (the fit report). It never sees a target label, a well or an image id.

``fit`` of a built-in method runs inside :func:`benchmark.core.source_cache.fold_scope` with the fold's
identity (dataset name and fingerprint, split, split seed, fold index, digest of its ids) and its
source-model folder, the only part of the cache besides its sealed store the worker may touch (read and
write); for any other method that folder is protected like the rest of the cache (:func:`models_access`).
"""

from __future__ import annotations

import importlib
import os
import pickle
import resource
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from ..datasets.dataset import LabelledImages, PlateView
from ..datasets.store import ArrayImages
from ..errors import BenchError, UnknownNameError
from ..core.source_cache import FoldIdentity, fold_scope
from . import audit, channel, landlock
from .audit import Policy
from .foldstore import models_path, open_sealed_fold


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to set up one run (plain, label-free values)."""

    method: str                 # registered name
    module: str                 # module defining the method class (imported when the name is not registered)
    qualname: str               # the class's qualified name in that module
    config: bytes               # the resolved config, pickled
    device: str
    verbose: bool
    store: str                  # the sealed fold folder
    policy: Policy
    environ: dict[str, str]
    memory_limit_bytes: int | None = None


def serve(conn: Connection, report: Connection, spec: WorkerSpec) -> None:
    """Entry point of a worker process (see module docstring)."""
    _die_with_forkserver()
    os.environ.clear()
    os.environ.update(spec.environ)
    spec = models_access(spec)
    _drop_protected_paths(spec.policy)
    if uses_models(spec):
        _make_models_folder(spec.store)  # before Landlock and the hook: the folders above it are the cache's
    tempfile.tempdir = os.environ.get("TMPDIR") or None  # the run's own temporary folder (see SealedHost)
    sandbox = landlock.restrict_reads([folder for folder, _ in spec.policy.protected],
                                      [*spec.policy.allowed, *([tempfile.tempdir] if tempfile.tempdir else [])])
    hook = audit.install(spec.policy, report.fileno())
    if spec.memory_limit_bytes:
        resource.setrlimit(resource.RLIMIT_DATA, (spec.memory_limit_bytes, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    try:
        session = _Session(spec)
    except _SetupError as exc:
        channel.send(conn, "error", exc.payload)
        return
    hook.seal()
    channel.send(conn, "ready", {**session.stats(), "sandbox": sandbox})
    session.serve(conn)


class _SetupError(Exception):
    def __init__(self, payload: dict[str, Any]):
        super().__init__(payload["message"])
        self.payload = payload


class _Session:
    """The method of one run, its sealed train/val sets, and the stage it is in."""

    def __init__(self, spec: WorkerSpec):
        self.spec = spec
        self.method_s = 0.0
        try:
            self.cls = resolve(spec)
            config = pickle.loads(spec.config)
            self.dataset, train_ids, val_ids = open_sealed_fold(spec.store)
        except BaseException as exc:  # noqa: BLE001 - reported to the evaluator as the run's failure
            raise _SetupError(error_payload("setup", None, exc, spec)) from None
        self.train_rows, self.val_rows = self.dataset.index[train_ids], self.dataset.index[val_ids]
        self.fold = fold_identity(self.dataset.meta.settings, spec.store) if uses_models(spec) else None
        try:
            self.model = self.cls(config, device=spec.device, verbose=spec.verbose)
            if spec.device.startswith("cuda"):  # CUDA's own set-up loads libraries with ctypes: before sealing
                import torch

                torch.cuda.init()
        except BaseException as exc:  # noqa: BLE001
            raise _SetupError(error_payload("__init__", None, exc, spec)) from None

    def stats(self) -> dict[str, Any]:
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        return {"method_s": self.method_s, "peak_rss_mb": round(max(own, children) / 1024, 1)}

    def serve(self, conn: Connection) -> None:
        while True:
            try:
                kind, fields, arrays = channel.receive(conn)
            except (EOFError, OSError):
                return  # the evaluator is gone
            if kind == "stop":
                try:
                    report = dict(self.model.fit_report())
                except BaseException as exc:  # noqa: BLE001
                    channel.send(conn, "error", {**error_payload("fit_report", None, exc, self.spec), **self.stats()})
                    return
                channel.send(conn, "stopped", {"fit_report": report, **self.stats()})
                _leave()
            handler = {"fit": self._fit, "plate": self._plate}[kind]
            try:
                reply, out, out_arrays = handler(fields, arrays)
            except _StageFailed as exc:
                channel.send(conn, "error", {**exc.payload, **self.stats()})
                continue
            channel.send(conn, reply, {**out, **self.stats()}, out_arrays)

    def _call(self, stage: str, plate: str | None, func: Any) -> Any:
        start = time.perf_counter()
        try:
            return func()
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: it fails the run, not the worker
            raise _StageFailed(error_payload(stage, plate, exc, self.spec)) from None
        finally:
            self.method_s += time.perf_counter() - start

    def _fit(self, fields: dict, arrays: list[np.ndarray]) -> tuple[str, dict, list[np.ndarray]]:
        targets = [PlateView(p, ArrayImages(arrays[2 * i]), ArrayImages(arrays[2 * i + 1]))
                   for i, p in enumerate(fields["targets"])]
        train = LabelledImages(self.dataset, self.train_rows, targets)
        val = LabelledImages(self.dataset, self.val_rows)
        with fold_scope(self.fold):  # the source-model cache's folder and key (benchmark.core.source_cache)
            self._call("fit", None, lambda: self.model.fit(train, val, fields["seed"]))
        return "fitted", {}, []

    def _plate(self, fields: dict, arrays: list[np.ndarray]) -> tuple[str, dict, list[np.ndarray]]:
        plate, (treated, controls) = fields["plate"], arrays
        access = self.cls.access
        view = PlateView(plate, ArrayImages(treated if access.sees_treated else treated[:0]),
                         ArrayImages(controls if access.sees_controls else controls[:0]))
        images = np.array(treated)  # a new array, as the evaluator's own read would be
        self._call("adapt", plate, lambda: self.model.adapt(view))
        raw = self._call("predict", plate, lambda: self.model.predict(images))
        try:
            probs = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            return "probs", {"unconvertible": type(raw).__name__}, []
        return "probs", {}, [probs]


class _StageFailed(Exception):
    def __init__(self, payload: dict[str, Any]):
        super().__init__(payload["message"])
        self.payload = payload


def error_payload(stage: str, plate: str | None, exc: BaseException, spec: WorkerSpec) -> dict[str, Any]:
    """What the evaluator needs to rebuild the failure: stage, plate, type, message, traceback."""
    message = str(exc)
    if spec.memory_limit_bytes and _looks_like_memory(exc):
        message += (f" (the worker's memory limit is {spec.memory_limit_bytes / 2**30:g} GB; raise it with "
                    "--memory-limit)")
    bench = isinstance(exc, BenchError)
    return {"stage": stage, "plate": plate, "type": type(exc).__name__, "message": message, "bench": bench,
            "traceback": None if bench else "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


def _looks_like_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or "out of memory" in str(exc)


def resolve(spec: WorkerSpec) -> type:
    """The method class: through the registry (built-ins, entry-point plugins), else its module."""
    from ..registry import get_method

    try:
        cls = get_method(spec.method)
    except UnknownNameError:
        cls = None
    if cls is not None and (cls.__module__, cls.__qualname__) == (spec.module, spec.qualname):
        return cls
    if "<locals>" in spec.qualname:
        raise BenchError(f"method '{spec.method}' is defined inside a function ({spec.module}.{spec.qualname}), "
                         "which a sealed worker cannot import; define it at module level of an importable module "
                         "or a plugin package")
    try:
        found: Any = importlib.import_module(spec.module)
        for part in spec.qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise BenchError(f"the sealed worker cannot import method '{spec.method}' from {spec.module}."
                         f"{spec.qualname} ({type(exc).__name__}: {exc}); register it in an importable module "
                         "or a plugin package") from None
    return found


BUILT_IN = "benchmark.methods."
"""Module prefix of platebench's own (reviewed) methods: only they may use the fold's models folder."""


def uses_models(spec: WorkerSpec) -> bool:
    """Whether the run may read and write its fold's source-model folder: a built-in method only, since a
    plugin could otherwise plant weights that a built-in method of the same fold would then load."""
    return spec.module.startswith(BUILT_IN) and models_path(spec.store) is not None


def models_access(spec: WorkerSpec) -> WorkerSpec:
    """``spec`` with the fold's models folder taken out of the allowed folders unless :func:`uses_models`."""
    models = models_path(spec.store)
    if models is None or uses_models(spec):
        return spec
    allowed = tuple(a for a in spec.policy.allowed if a != str(models))
    return replace(spec, policy=replace(spec.policy, allowed=allowed))


def fold_identity(settings: dict[str, Any], store: str) -> FoldIdentity | None:
    """The fold a sealed store holds (from its ``dataset.json`` settings) and its models folder; None if unknown."""
    fold, models = settings.get("sealed_fold"), models_path(store)
    if not isinstance(fold, dict) or models is None:
        return None
    try:
        return FoldIdentity(dataset=str(fold["dataset"]), fingerprint=str(fold["fingerprint"]),
                            split=str(fold["split"]), split_seed=int(fold["split_seed"]), fold=int(fold["fold"]),
                            digest=str(fold["digest"]), folder=str(models))
    except (KeyError, TypeError, ValueError):
        return None


def _make_models_folder(store: str) -> None:
    models = models_path(store)
    if models is not None:
        try:
            os.makedirs(models, exist_ok=True)
        except OSError:
            pass  # a read-only cache: methods train their source model instead of caching it


def _die_with_forkserver() -> None:
    """Be killed when the forkserver ends, which it does when the evaluator ends (killed, interrupted):
    a worker never trains on as an orphan. Linux only (``PR_SET_PDEATHSIG``); elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    from multiprocessing import forkserver

    # multiprocessing hands every forked child the evaluator's "alive" pipe, so the forkserver would wait for
    # the workers before it sees the evaluator gone; a worker starts no processes through it: let it go.
    server = forkserver._forkserver  # noqa: SLF001 - the stdlib keeps it private
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    parent = os.getppid()
    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the forkserver ended before the request took hold
        os._exit(1)


def _leave() -> None:
    """End the worker at once (its answers are sent): flush its output, skip the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def _drop_protected_paths(policy: Policy) -> None:
    """Remove ``sys.path`` entries inside a protected folder (their imports would be refused)."""
    keep = []
    for entry in sys.path:
        try:
            real = os.path.realpath(entry or os.getcwd())
        except OSError:
            continue
        if not any(real == root or real.startswith(root + os.sep) for root, _ in policy.protected):
            keep.append(entry)
    sys.path[:] = keep


__all__ = ["WorkerSpec", "error_payload", "resolve", "serve"]
