"""The sealed worker: the process one (method, split, fold, seed) run executes the method in.

It is forked from the zygote (:mod:`benchmark.sealed.zygote`), which imported only label-free code, inside the
sandbox (:mod:`benchmark.sealed.sandbox`), and sets itself up in this order (:func:`child_main`):

1. die with the zygote; where it can, take namespaces of its own for this run (user, IPC, network: no System V
   or abstract-socket traces of another run, no network);
2. environment: the evaluator's variables, with ``HOME``, ``TMPDIR`` and the caches pointed at the run's
   scratch folder, which is also its working folder; ``sys.path`` cut to what it may read;
3. a Landlock allowlist (:func:`benchmark.sealed.landlock.restrict_to`): read Python, site-packages,
   platebench, the method's own package and the run's sealed fold store; write only the scratch folder;
   signals and abstract sockets scoped to itself; then the audit hook (:mod:`benchmark.sealed.audit`) with the
   same allowlist, so everything after it is audited, the method's own module included; the memory limit;
4. import the method (a plugin's module is imported here, never in the evaluator), open the sealed fold store
   and build ``train`` / ``val`` from it; build the method;
5. seal the hook (no ``ctypes`` loading, no ``gc`` walks) and tell the evaluator it is ready.

Then it answers the evaluator's messages (:mod:`benchmark.sealed.channel`: JSON headers and raw arrays, never
pickle): ``fit`` (seed and, for a transductive method, the target plates' pixels), ``plate`` (one plate's
treated images and controls: ``adapt`` on the view cut to the method's access level by
:func:`benchmark.protocol.access.handed`, then ``predict``),
``stop`` (the fit report, JSON values only). It never sees a target label, a well or an image id.

``fit`` of a built-in method runs inside :func:`benchmark.core.training.model_cache.fold_scope` with the fold's identity
and a *models folder in its scratch*: links to the fold's cached models (read-only) plus whatever the method
writes. At ``stop`` the files it wrote travel back to the evaluator, which checks and stores them
(:mod:`benchmark.sealed.outbox`): only the evaluator writes the cache. A plugin gets no models folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..datasets.dataset import LabelledImages, PlateView
from ..datasets.store import ArrayImages
from ..errors import BenchError, UnknownNameError
from ..core.training.model_cache import FoldIdentity, fold_scope
from ..protocol.access import handed
from . import audit, landlock, outbox
from .audit import Policy
from .channel import Channel, ChannelError, plain_json
from .foldstore import open_sealed_fold
from .sandbox import device_paths, live_in

@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to set up one run (plain JSON values; see :func:`spec_fields`)."""

    method: str                 # registered name
    module: str                 # module defining the method class
    qualname: str               # the class's qualified name in that module
    builtin: bool               # a platebench method (the evaluator's registry says so)
    plugin: bool                # an entry-point plugin: imported through its entry point, nothing else
    config: dict                # the resolved config (to_dict())
    device: str
    verbose: bool
    store: str                  # the sealed fold folder
    models: str | None          # the fold's models folder (built-in methods only), read-only
    policy: Policy
    environ: dict[str, str]
    scratch: str                # the run's only writable folder (made by the zygote)
    sandbox: str                # bubblewrap, landlock or audit
    memory_limit_bytes: int | None = None
    sys_path: tuple[str, ...] = ()  # the evaluator's import path (cut to what the worker may read)

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> WorkerSpec:
        """The spec from its JSON form (:func:`spec_fields`)."""
        policy = dict(fields["policy"])
        return cls(method=str(fields["method"]), module=str(fields["module"]), qualname=str(fields["qualname"]),
                   builtin=bool(fields["builtin"]), plugin=bool(fields.get("plugin")),
                   config=dict(fields["config"]), device=str(fields["device"]),
                   verbose=bool(fields["verbose"]), store=str(fields["store"]),
                   models=None if fields.get("models") is None else str(fields["models"]),
                   policy=Policy(protected=tuple((str(a), str(b)) for a, b in policy["protected"]),
                                 allowed=tuple(policy.get("allowed", ())), files=dict(policy.get("files", {})),
                                 pids=tuple(int(p) for p in policy.get("pids", ())),
                                 readable=tuple(policy.get("readable", ())),
                                 writable=(*policy.get("writable", ()), str(fields["scratch"]))),
                   environ={str(k): str(v) for k, v in dict(fields["environ"]).items()},
                   scratch=str(fields["scratch"]), sandbox=str(fields.get("sandbox", "audit")),
                   memory_limit_bytes=fields.get("memory_limit_bytes"),
                   sys_path=tuple(str(p) for p in fields.get("sys_path", ())))


def spec_fields(*, method: str, module: str, qualname: str, builtin: bool, plugin: bool, config: dict, device: str,
                verbose: bool, store: str,
                models: str | None, policy: Policy, environ: dict[str, str], sandbox: str,
                memory_limit_bytes: int | None, sys_path: list[str] | None = None) -> dict[str, Any]:
    """A worker spec as JSON (the zygote adds ``scratch``)."""
    return {"method": method, "module": module, "qualname": qualname, "builtin": builtin, "plugin": plugin,
            "config": config,
            "device": device, "verbose": verbose, "store": store, "models": models if builtin else None,
            "policy": {"protected": [list(p) for p in policy.protected], "allowed": list(policy.allowed),
                       "files": dict(policy.files), "pids": list(policy.pids), "readable": list(policy.readable),
                       "writable": list(policy.writable)},
            "environ": environ, "sandbox": sandbox, "memory_limit_bytes": memory_limit_bytes,
            "sys_path": list(sys_path or [])}


_CLONE_NEWUSER, _CLONE_NEWIPC, _CLONE_NEWNET = 0x10000000, 0x08000000, 0x40000000
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE = 1, 4


def _private_namespaces(network: bool) -> str | None:
    """Enter a user, IPC and (unless ``network``) network namespace of this run's own; why not, if refused.

    The user namespace only makes the other two possible without privileges; the worker's user id is mapped
    into it where the kernel allows (files it creates belong to the same user either way)."""
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)  # the zygote is not dumpable; its child must be to map its ids
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWIPC | (0 if network else _CLONE_NEWNET)) != 0:
        return f"unshare: {os.strerror(ctypes.get_errno())}"
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        try:
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        except OSError:
            break  # unmapped ids inside: harmless, the namespaces hold
    return None


def child_main(channel_fd: int, report_fd: int, fields: dict[str, Any]) -> None:
    """Entry point of a worker forked by the zygote (see module docstring); never returns."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)
    conn = Channel.from_fd(channel_fd)
    try:
        spec = WorkerSpec.from_fields(fields)
    except (KeyError, TypeError, ValueError) as exc:
        conn.send("error", {"stage": "setup", "plate": None, "type": type(exc).__name__,
                            "message": f"malformed worker spec ({exc})", "bench": True, "traceback": None})
        os._exit(1)
    network = spec.environ.get("WORLD_SIZE", "1").strip() not in ("", "1")  # torchrun ranks train over TCP
    namespaces = _private_namespaces(network)
    scratch = spec.scratch
    os.environ.clear()
    os.environ.update(spec.environ)
    live_in(scratch)
    models = outbox.prepare(spec.models, scratch) if spec.builtin and spec.models else None
    readable = [*spec.policy.readable, spec.store, *([spec.models] if models else []), "/proc"]
    wanted = [*spec.sys_path, *[p for p in sys.path if p not in spec.sys_path]]
    sys.path[:] = [p for p in wanted if p and _under_any(os.path.realpath(p), readable)]
    writable = [scratch, *(["/dev/shm"] if spec.sandbox == "bubblewrap" else [])]
    devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", *device_paths()]
    applied = landlock.restrict_to(readable, writable, devices, network=network)
    sandbox = _describe(spec.sandbox, applied, namespaces) + _network_note(network)
    policy = Policy(protected=spec.policy.protected, allowed=(spec.store, *([spec.models] if models else [])),
                    files=spec.policy.files, pids=spec.policy.pids,
                    readable=tuple(os.path.realpath(p) for p in [*readable, "/dev"]),
                    writable=tuple(os.path.realpath(p) for p in [*writable, *devices]))
    hook = audit.install(policy, report_fd)
    if spec.memory_limit_bytes:
        resource.setrlimit(resource.RLIMIT_DATA, (spec.memory_limit_bytes, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    try:
        session = _Session(spec, models)
    except _SetupError as exc:
        _send(conn, "error", exc.payload)
        _leave()
    hook.seal()
    _send(conn, "ready", {**session.stats(), "sandbox": sandbox})
    session.serve(conn)
    _leave()


def _describe(kind: str, applied: str, namespaces: str | None) -> str:
    """The record's ``worker.sandbox``: the outer sandbox, the worker's own wall, its namespaces."""
    outer = {"bubblewrap": "bubblewrap (own user, PID, mount, IPC and network namespaces; read-only code and "
                           "fold store; private /tmp)",
             "landlock": "no namespaces", "audit": "no namespaces"}.get(kind, kind)
    own = "per-run user, IPC and network namespaces" if namespaces is None else f"no per-run namespaces ({namespaces})"
    return f"{outer}; {applied}; {own}"


def _network_note(network: bool) -> str:
    return "; network shared with the other torchrun ranks" if network else ""


def _under_any(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in (os.path.realpath(x) for x in roots))


def _send(conn: Channel, kind: str, fields: dict[str, Any], arrays: list[np.ndarray] | None = None) -> None:
    try:
        conn.send(kind, fields, arrays or [])
    except (OSError, ChannelError):
        _leave(1)


class _SetupError(Exception):
    def __init__(self, payload: dict[str, Any]):
        super().__init__(payload["message"])
        self.payload = payload


class _Session:
    """The method of one run, its sealed train/val sets, and the stage it is in."""

    def __init__(self, spec: WorkerSpec, models: str | None):
        self.spec = spec
        self.method_s = 0.0
        self.models = models
        try:
            self.cls = resolve(spec)
            config = self.cls.Config.from_dict(dict(spec.config)) if spec.config else self.cls.Config()
            self.dataset, train_ids, val_ids = open_sealed_fold(spec.store)
        except BaseException as exc:  # noqa: BLE001 - reported to the evaluator as the run's failure
            raise _SetupError(error_payload("setup", None, exc, spec)) from None
        self.train_rows, self.val_rows = self.dataset.index[train_ids], self.dataset.index[val_ids]
        self.fold = fold_identity(self.dataset.meta.settings, models) if models else None
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

    def serve(self, conn: Channel) -> None:
        while True:
            try:
                message = conn.receive(kinds=("fit", "plate", "stop"))
            except ChannelError:
                return  # the evaluator is gone
            if message.kind == "stop":
                self._stop(conn)
                return
            handler = {"fit": self._fit, "plate": self._plate}[message.kind]
            try:
                reply, out, out_arrays = handler(message.fields, message.arrays)
            except _StageFailed as exc:
                _send(conn, "error", {**exc.payload, **self.stats()})
                continue
            _send(conn, reply, {**out, **self.stats()}, out_arrays)

    def _stop(self, conn: Channel) -> None:
        try:
            report = plain_json(dict(self.model.fit_report()), "fit_report")
        except BaseException as exc:  # noqa: BLE001 - a report that is not plain JSON fails the run
            _send(conn, "error", {**error_payload("fit_report", None, exc, self.spec), **self.stats()})
            return
        names, blobs = outbox.collect(self.models) if self.models else ([], [])
        _send(conn, "stopped", {"fit_report": report, "outbox": names, **self.stats()}, blobs)

    def _call(self, stage: str, plate: str | None, func: Any) -> Any:
        start = time.perf_counter()
        try:
            return func()
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: it fails the run, not the worker
            raise _StageFailed(error_payload(stage, plate, exc, self.spec)) from None
        finally:
            self.method_s += time.perf_counter() - start

    def _fit(self, fields: dict, arrays: list[np.ndarray]) -> tuple[str, dict, list[np.ndarray]]:
        names = [str(p) for p in fields.get("targets", [])]
        targets = [PlateView(p, ArrayImages(arrays[2 * i]), ArrayImages(arrays[2 * i + 1]))
                   for i, p in enumerate(names)]
        train = LabelledImages(self.dataset, self.train_rows, targets)
        val = LabelledImages(self.dataset, self.val_rows)
        with fold_scope(self.fold):  # the source-model cache's folder and key (benchmark.core.training.model_cache)
            self._call("fit", None, lambda: self.model.fit(train, val, int(fields["seed"])))
        return "fitted", {}, []

    def _plate(self, fields: dict, arrays: list[np.ndarray]) -> tuple[str, dict, list[np.ndarray]]:
        plate, (treated, controls) = str(fields["plate"]), arrays
        view = PlateView(plate, *map(ArrayImages, handed(self.cls.access, treated, controls)))
        images = np.array(treated)  # a new array, as the evaluator's own read would be
        self._call("adapt", plate, lambda: self.model.adapt(view))
        raw = self._call("predict", plate, lambda: self.model.predict(images))
        try:
            probs = np.ascontiguousarray(np.asarray(raw, dtype=np.float64))
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
    """The method class: import its module (only it: no other plugin is imported here) and find the class.

    The class must be a :class:`~benchmark.methods.base.Method` whose ``name`` is the requested name.
    """
    from ..methods.base import Method

    if spec.plugin:
        from ..registry import load_plugin_method

        return load_plugin_method(spec.method)  # that entry point only, as its package declares it
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
    if not (isinstance(found, type) and issubclass(found, Method)) or getattr(found, "name", None) != spec.method:
        raise UnknownNameError("method", spec.method, [getattr(found, "name", "?")])
    return found


def fold_identity(settings: dict[str, Any], models: str) -> FoldIdentity | None:
    """The fold a sealed store holds (from its ``dataset.json`` settings), with ``models`` as its models folder."""
    fold = settings.get("sealed_fold")
    if not isinstance(fold, dict):
        return None
    try:
        return FoldIdentity(dataset=str(fold["dataset"]), fingerprint=str(fold["fingerprint"]),
                            split=str(fold["split"]), split_seed=int(fold["split_seed"]), fold=int(fold["fold"]),
                            digest=str(fold["digest"]), folder=str(models))
    except (KeyError, TypeError, ValueError):
        return None


def _leave(code: int = 0) -> None:
    """End the worker at once (its answers are sent): flush its output, skip the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


__all__ = ["WorkerSpec", "child_main", "error_payload", "resolve", "spec_fields"]
