"""The evaluator's side of a sealed run: start the worker, hand it plates, contain its failures.

Workers are forked from a forkserver (:mod:`benchmark.sealed.forkserver`), so a worker
starts in a few tens of milliseconds instead of the ~4 s of importing torch and timm.

:class:`SealedHost` drives one worker the way :class:`benchmark.evaluation.LocalHost`
drives a method in this process. Whatever the worker does, only its own run fails:

- the method raises: :class:`~benchmark.method_calls.StageError` with its stage, plate,
  message and traceback, as in process;
- the audit hook refused something: :class:`SealViolation` saying what was tried;
- the worker crashed (``os.abort()``, a segmentation fault, ``os._exit``), was killed
  (SIGKILL: out of memory?) or ran past the time limit: :class:`WorkerFailure` saying so.
"""

from __future__ import annotations

import os
import pickle
import signal
import tempfile
import threading
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.dataset import PlateView
from ..errors import LeakageError, MethodError
from ..method_calls import RemoteError, StageError
from ..methods.base import Method, MethodConfig
from . import channel
from .audit import VIOLATION_EXIT, Policy
from .forkserver import WORKER_PREFIX, context
from .limits import Limits
from .worker import WorkerSpec, serve

EXIT_GRACE_S = 2.0
"""How long a worker whose pipe closed may take to exit before it is killed."""
_SIGNALS = {signal.SIGSEGV: "segmentation fault", signal.SIGABRT: "aborted", signal.SIGBUS: "bus error",
            signal.SIGFPE: "floating-point exception", signal.SIGILL: "illegal instruction"}


class WorkerFailure(MethodError):
    """A sealed worker stopped without answering: crashed, killed, out of time or stopped by its audit hook."""

    def __init__(self, message: str, kind: str, stage: str, plate: str | None):
        super().__init__(message)
        self.kind, self.stage, self.plate = kind, stage, plate


class SealViolation(WorkerFailure, LeakageError):
    """The audit hook stopped the method (it tried to reach what it may not)."""


class SealedHost:
    """A method run in a sealed worker process; use it as a context manager (the worker lives inside).

    Parameters
    ----------
    method_cls, config, device, verbose : what to build in the worker.
    store : the run's sealed fold folder (:mod:`benchmark.sealed.foldstore`).
    policy : what the worker's audit hook protects (:mod:`benchmark.sealed.policy`).
    limits : the run's time and memory limits.
    """

    def __init__(self, method_cls: type[Method], config: MethodConfig, device: str, verbose: bool, store: Path,
                 policy: Policy, limits: Limits = Limits()):
        self.name, self.access, self.min_controls = method_cls.name, method_cls.access, int(method_cls.min_controls)
        self.limits = limits
        memory = int(limits.memory_gb * 2**30) if limits.memory_gb else None
        self._spec = WorkerSpec(method=method_cls.name, module=method_cls.__module__, qualname=method_cls.__qualname__,
                                config=pickle.dumps(config), device=device, verbose=verbose, store=str(store),
                                policy=policy, environ=dict(os.environ), memory_limit_bytes=memory)
        # The worker's own temporary folder: under Landlock it can read back only what it wrote there.
        self._tmp = tempfile.TemporaryDirectory(prefix="platebench-worker-")
        self._spec.environ["TMPDIR"] = self._tmp.name
        self._proc: Any = None
        self._conn: Connection | None = None
        self._report: Connection | None = None
        self._timer: threading.Timer | None = None
        self._timed_out = False
        self._started = 0.0
        self._stopped: float | None = None
        self._start_s: float | None = None
        self._stats: dict[str, Any] = {"method_s": 0.0, "peak_rss_mb": None}
        self._report_dict: dict[str, Any] | None = None
        self._report_open = True
        self._handover_s = 0.0
        self._stop_s = 0.0
        self._line: str | None = None

    # -- life cycle -----------------------------------------------------------------------
    def __enter__(self) -> SealedHost:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        """Start the worker and wait until it is set up (raises StageError / WorkerFailure otherwise)."""
        ctx = context()
        parent, child = ctx.Pipe()
        report_r, report_w = ctx.Pipe(duplex=False)
        self._started = time.perf_counter()
        self._proc = ctx.Process(target=serve, args=(child, report_w, self._spec), name=f"{WORKER_PREFIX}{self.name}")
        self._proc.start()
        child.close()
        report_w.close()
        self._conn, self._report = parent, report_r
        if self.limits.time_s is not None:
            self._timer = threading.Timer(self.limits.time_s, self._out_of_time)
            self._timer.daemon = True
            self._timer.start()
        self._receive("setup", None)
        self._start_s = time.perf_counter() - self._started

    def close(self) -> None:
        """Stop the worker (kill it if it still runs) and release the pipes; idempotent."""
        if self._timer is not None:
            self._timer.cancel()
        if self._proc is not None:
            self._proc.join(timeout=5 if self._report_dict is not None else 0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=10)
            if self._stopped is None:
                self._stopped = time.perf_counter()
        for conn in (self._conn, self._report):
            if conn is not None:
                conn.close()
        self._conn = self._report = None
        self._tmp.cleanup()

    # -- the method's calls ---------------------------------------------------------------
    def fit(self, seed: int, targets: list[PlateView] | tuple[PlateView, ...] = ()) -> None:
        arrays: list[np.ndarray] = []
        for view in targets:
            arrays += [np.asarray(view.treated[:]), np.asarray(view.controls[:])]
        self._exchange("fit", {"seed": int(seed), "targets": [v.plate for v in targets]}, arrays, "fit", None)

    def adapt_predict(self, full: PlateView) -> Any:
        _, fields, arrays = self._exchange("plate", {"plate": full.plate},
                                           [np.asarray(full.treated[:]), np.asarray(full.controls[:])],
                                           "adapt/predict", full.plate)
        if "unconvertible" in fields:
            from ..method_calls import not_probabilities

            raise not_probabilities(self.name, full.plate, fields["unconvertible"])
        return arrays[0]

    def fit_report(self) -> dict[str, Any]:
        start = time.perf_counter()
        _, fields, _ = self._exchange("stop", {}, [], "fit_report", None)
        self._report_dict = fields["fit_report"]
        self._proc.join(timeout=5)
        self._stopped = time.perf_counter()
        self._stop_s = self._stopped - start
        return self._report_dict

    def worker_info(self) -> dict[str, Any]:
        """What the record says about the worker (seconds; peak resident memory in MB).

        ``start_s``: from starting the process to its being set up; ``handover_s``: sending it the
        plates; ``overhead_s``: start-up + hand-over + stopping it, the cost of sealing the run;
        ``method_s``: time inside the method's calls; ``wall_s``: the worker's whole life.
        """
        end = self._stopped if self._stopped is not None else time.perf_counter()
        wall = end - self._started if self._started else 0.0
        method_s = float(self._stats.get("method_s") or 0.0)
        return {"isolation": "sealed", "sandbox": self._stats.get("sandbox"),
                "start_s": _round(self._start_s), "wall_s": _round(wall),
                "method_s": _round(method_s), "handover_s": _round(self._handover_s),
                "overhead_s": _round((self._start_s or 0.0) + self._handover_s + self._stop_s),
                "peak_rss_mb": self._stats.get("peak_rss_mb"), "time_limit_s": self.limits.time_s,
                "memory_limit_gb": self.limits.memory_gb,
                "exit_code": None if self._proc is None else self._proc.exitcode}

    # -- plumbing ---------------------------------------------------------------------------
    def _exchange(self, kind: str, fields: dict, arrays: list[np.ndarray], stage: str,
                  plate: str | None) -> channel.Message:
        start = time.perf_counter()
        try:
            channel.send(self._conn, kind, fields, arrays)
        except (OSError, EOFError, ValueError):
            self._failed(stage, plate)
        self._handover_s += time.perf_counter() - start
        return self._receive(stage, plate)

    def _receive(self, stage: str, plate: str | None) -> channel.Message:
        waitables: list[Any] = [self._conn, self._proc.sentinel] + ([self._report] if self._report_open else [])
        while True:
            ready = wait(waitables, self._remaining())
            if not ready:
                if self._remaining() == 0:
                    self._timed_out = True
                    self._failed(stage, plate)
                continue
            if self._report in ready:
                self._line = self._line or self._violation_line()
                if self._line:
                    self._failed(stage, plate)
                self._report_open = False  # closed: the worker is ending; its last words may still be on conn
                waitables.remove(self._report)
            if self._conn in ready:
                try:
                    kind, fields, arrays = channel.receive(self._conn)
                except (OSError, EOFError):
                    self._failed(stage, plate)
                self._stats.update({k: fields[k] for k in ("method_s", "peak_rss_mb", "sandbox") if k in fields})
                if kind == "error":
                    raise StageError(fields["stage"], fields["plate"],
                                     RemoteError(fields["type"], fields["message"], fields["traceback"],
                                                 fields["bench"]))
                return kind, fields, arrays
            if self._proc.sentinel in ready:
                self._failed(stage, plate)

    def _remaining(self) -> float | None:
        if self.limits.time_s is None:
            return None
        return max(self.limits.time_s - (time.perf_counter() - self._started), 0.0)

    def _out_of_time(self) -> None:
        self._timed_out = True
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()

    def _failed(self, stage: str, plate: str | None) -> None:
        """The worker stopped answering: end it, find out why, raise the run's failure."""
        self._line = self._line or self._violation_line()
        if not self._line and not self._timed_out:
            self._proc.join(timeout=EXIT_GRACE_S)  # a dying worker closes its pipe just before it exits
        killed = self._proc.is_alive()
        if killed:
            self._proc.kill()
        self._proc.join(timeout=10)
        self._stopped = time.perf_counter()
        self._line = self._line or self._violation_line()
        where = f"{stage}{f' on plate {plate}' if plate else ''}"
        code = self._proc.exitcode
        if self._line or code == VIOLATION_EXIT:
            raise SealViolation(f"{where}: the sealed worker stopped the run: "
                                f"{self._line or 'the audit hook refused an action (its report was lost)'}; a method "
                                "may use only what fit, adapt and predict hand it (see docs/sealed.md)",
                                "violation", stage, plate)
        if self._timed_out:
            raise WorkerFailure(f"{where}: the run exceeded its time limit of {self.limits.time_s:g} s and its worker "
                                "was stopped; raise the limit with --time-limit SECONDS", "timeout", stage, plate)
        if killed:
            raise WorkerFailure(f"{where}: the worker process stopped answering (its pipe closed) and was stopped",
                                "exit", stage, plate)
        peak = self._stats.get("peak_rss_mb")
        if code == -signal.SIGKILL:
            raise WorkerFailure(f"{where}: the worker process was killed (out of memory?) by SIGKILL"
                                f"{f' after a peak of {peak:.0f} MB' if peak else ''}; give it more memory or use "
                                "less (e.g. a smaller batch size)", "killed", stage, plate)
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            raise WorkerFailure(f"{where}: the worker process crashed ({name}, {_SIGNALS.get(-code, 'a signal')}); "
                                "only this run fails", "crash", stage, plate)
        raise WorkerFailure(f"{where}: the worker process exited with code {code} without answering (did the method "
                            "call os._exit or sys.exit?); only this run fails", "exit", stage, plate)

    def _violation_line(self) -> str | None:
        try:
            if self._report is not None and self._report.poll():
                return self._report.recv_bytes().decode(errors="replace")
        except (OSError, EOFError):
            return None
        return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
