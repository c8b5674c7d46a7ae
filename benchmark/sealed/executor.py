"""The evaluator's side of a sealed run: start the worker, hand it plates, check what it says, contain its failures.

Workers are forked by the zygote in its sandbox (:mod:`benchmark.sealed.zygote`), so a worker starts in tens of
milliseconds instead of the seconds of importing torch and timm. :class:`SealedHost` drives one worker the way
:class:`benchmark.protocol.evaluation.LocalHost` drives a method in this process, over a
:class:`~benchmark.sealed.channel.Channel` that carries JSON headers and raw arrays and never executes anything.
Every read has a deadline (the run's time limit), every reply is checked against what was asked — its kind, its
fields' types, the shape of its probabilities against the plate's image count, before anything is allocated —
and whatever the worker does, only its own run fails:

- the method raises: :class:`~benchmark.protocol.method_calls.StageError` with its stage, plate, message and traceback;
- the audit hook refused something: :class:`SealViolation` saying what was tried;
- the worker crashed, was killed, ran past the time limit, sent a malformed or unexpected reply, or left a frame
  half-written: :class:`WorkerFailure` saying so; the worker and everything it started are killed.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import N_CLASSES
from ..datasets.dataset import PlateView
from ..errors import BenchError, LeakageError, MethodError
from ..protocol.method_calls import RemoteError, StageError
from . import outbox
from .audit import VIOLATION_EXIT, Policy, read_violation
from .channel import ArraySpec, Channel, ChannelClosed, ChannelError, ChannelTimeout, Message
from .limits import Limits
from .worker import spec_fields
from .zygote_client import ZygoteFailure, ZygoteProcess

EXIT_GRACE_S = 5.0
"""How long a worker whose channel closed may take to be reported ended before it is killed."""
_SIGNALS = {signal.SIGSEGV: "segmentation fault", signal.SIGABRT: "aborted", signal.SIGBUS: "bus error",
            signal.SIGFPE: "floating-point exception", signal.SIGILL: "illegal instruction"}
_ERROR_FIELDS = {"stage": str, "type": str, "message": str}


class WorkerFailure(MethodError):
    """A sealed worker stopped without a valid answer: crashed, killed, out of time, malformed, or stopped by its
    audit hook."""

    def __init__(self, message: str, kind: str, stage: str, plate: str | None):
        super().__init__(message)
        self.kind, self.stage, self.plate = kind, stage, plate


class SealViolation(WorkerFailure, LeakageError):
    """The audit hook stopped the method (it tried to reach what it may not)."""


class SealedHost:
    """A method run in a sealed worker process; use it as a context manager (the worker lives inside).

    Parameters
    ----------
    info : the method (:class:`benchmark.method_info.MethodInfo`: name, module, class, access, resolved config).
    device, verbose : how to build it in the worker.
    store : the run's sealed fold folder; ``models``: the fold's models folder (built-in methods only).
    policy : what the worker may read and write and what it may not touch (:mod:`benchmark.sealed.policy`).
    zygote : the zygote the worker is forked from; ``sandbox``: its kind.
    limits : the run's time and memory limits.
    """

    def __init__(self, info: Any, device: str, verbose: bool, store: Path, models: Path | None, policy: Policy,
                 zygote: ZygoteProcess, sandbox: str, limits: Limits = Limits()):
        self.name, self.access, self.min_controls = info.name, info.access, int(info.min_controls)
        self.limits, self.zygote, self.models = limits, zygote, models
        memory = int(limits.memory_gb * 2**30) if limits.memory_gb else None
        self.builtin = bool(info.builtin)  # the evaluator's registry says so, not the module's name
        self._spec = spec_fields(method=info.name, module=info.module, qualname=info.qualname,
                                 builtin=self.builtin, plugin=bool(getattr(info, "plugin", False)),
                                 config=dict(info.config), device=device, verbose=verbose, store=str(store),
                                 models=str(models) if models is not None else None, policy=policy,
                                 environ=dict(os.environ), sandbox=sandbox, memory_limit_bytes=memory,
                                 sys_path=list(sys.path))
        self._run = uuid.uuid4().hex[:12]
        self._conn: Channel | None = None
        self._report_r: int | None = None
        self._alive = False
        self._exit: dict[str, Any] | None = None
        self._started = 0.0
        self._deadline: float | None = None
        self._stopped: float | None = None
        self._start_s: float | None = None
        self._stats: dict[str, Any] = {"method_s": 0.0, "peak_rss_mb": None, "sandbox": None}
        self._report_dict: dict[str, Any] | None = None
        self._handover_s = 0.0
        self._stop_s = 0.0
        self._line: str | None = None
        self.stored: list[str] = []

    # -- life cycle -----------------------------------------------------------------------
    def __enter__(self) -> SealedHost:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        """Start the worker and wait until it is set up (raises StageError / WorkerFailure otherwise)."""
        try:
            self.zygote.wait_ready()
        except ZygoteFailure as exc:
            raise WorkerFailure(f"setup: {exc}", "zygote", "setup", None) from None
        ours, theirs = Channel.pair()
        report_r, report_w = os.pipe()
        self._started = time.perf_counter()
        if self.limits.time_s is not None:
            self._deadline = time.monotonic() + self.limits.time_s
        try:
            self.zygote.spawn(self._run, self._spec, [theirs.fileno(), report_w])
        except ZygoteFailure as exc:
            ours.close()
            os.close(report_r)
            raise WorkerFailure(f"setup: {exc}", "zygote", "setup", None) from None
        finally:
            theirs.close()
            os.close(report_w)
        self._conn, self._report_r, self._alive = ours, report_r, True
        try:
            self._receive("setup", None, ("ready",))
        except BaseException:
            self.close()  # a context manager's __exit__ does not run when __enter__ raises
            raise
        self._start_s = time.perf_counter() - self._started

    def close(self) -> None:
        """Stop the worker (kill it and everything it started if it still runs); idempotent."""
        if self._alive:
            if self._report_dict is None:
                self.zygote.kill(self._run)
            self._await_exit(EXIT_GRACE_S)
            if self._alive:  # the zygote did not report it: end the sandbox, the next run starts a new one
                self.zygote.stop()
                self._alive = False
        if self._stopped is None and self._started:
            self._stopped = time.perf_counter()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._report_r is not None:
            os.close(self._report_r)
            self._report_r = None

    # -- the method's calls ---------------------------------------------------------------
    def fit(self, seed: int, targets: list[PlateView] | tuple[PlateView, ...] = ()) -> None:
        arrays: list[np.ndarray] = []
        for view in targets:
            arrays += [np.asarray(view.treated[:]), np.asarray(view.controls[:])]
        self._exchange("fit", {"seed": int(seed), "targets": [v.plate for v in targets]}, arrays, "fit", None,
                       ("fitted",))

    def adapt_predict(self, full: PlateView) -> Any:
        n = len(full.treated)
        message = self._exchange("plate", {"plate": full.plate},
                                 [np.asarray(full.treated[:]), np.asarray(full.controls[:])],
                                 "adapt/predict", full.plate, ("probs",), _probabilities_check(n))
        if "unconvertible" in message.fields:
            from ..protocol.method_calls import not_probabilities

            raise not_probabilities(self.name, full.plate, str(message.fields["unconvertible"])[:100])
        if len(message.arrays) != 1:
            self._malformed("adapt/predict", full.plate, "a probabilities reply without its array")
        return message.arrays[0]

    def fit_report(self) -> dict[str, Any]:
        start = time.perf_counter()
        message = self._exchange("stop", {}, [], "fit_report", None, ("stopped",), self._outbox_check)
        report = message.fields.get("fit_report")
        if not isinstance(report, dict):
            self._malformed("fit_report", None, "a fit report that is not a JSON object")
        if self.builtin and self.models is not None and message.arrays:
            try:
                self.stored = outbox.store(self.models, outbox.check(message.fields.get("outbox"), message.arrays))
            except LeakageError as exc:
                self._malformed("fit_report", None, str(exc))
        self._report_dict = report
        self._await_exit(EXIT_GRACE_S)
        self._stopped = time.perf_counter()
        self._stop_s = self._stopped - start
        return report

    def worker_info(self) -> dict[str, Any]:
        """What the record says about the worker (seconds; peak resident memory in MB).

        ``start_s``: from asking the zygote for a worker to its being set up; ``handover_s``: sending it the
        plates; ``overhead_s``: start-up + hand-over + stopping it, the cost of sealing the run; ``method_s``:
        time inside the method's calls; ``wall_s``: the worker's whole life; ``sandbox``: what confined it.
        """
        end = self._stopped if self._stopped is not None else time.perf_counter()
        wall = end - self._started if self._started else 0.0
        exit_code = (self._exit or {}).get("code")
        return {"isolation": "sealed", "sandbox": self._stats.get("sandbox"),
                "start_s": _round(self._start_s), "wall_s": _round(wall),
                "method_s": _round(float(self._stats.get("method_s") or 0.0)),
                "handover_s": _round(self._handover_s),
                "overhead_s": _round((self._start_s or 0.0) + self._handover_s + self._stop_s),
                "peak_rss_mb": self._stats.get("peak_rss_mb"), "time_limit_s": self.limits.time_s,
                "memory_limit_gb": self.limits.memory_gb,
                "exit_code": exit_code if isinstance(exit_code, int) else None}

    # -- plumbing ---------------------------------------------------------------------------
    def _exchange(self, kind: str, fields: dict, arrays: list[np.ndarray], stage: str, plate: str | None,
                  expect: tuple[str, ...], check: Any = None) -> Message:
        if self._conn is None:
            raise WorkerFailure(f"{stage}: the worker is not running", "exit", stage, plate)
        start = time.perf_counter()
        try:
            self._conn.send(kind, fields, arrays)
        except (OSError, ChannelError):
            self._failed(stage, plate)
        self._handover_s += time.perf_counter() - start
        return self._receive(stage, plate, expect, check)

    def _receive(self, stage: str, plate: str | None, expect: tuple[str, ...], check: Any = None) -> Message:
        assert self._conn is not None and self._report_r is not None
        while True:
            remaining = None if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)
            if remaining == 0.0:
                self._failed(stage, plate, timed_out=True)
            ready, _, _ = select.select([self._conn.fileno(), self._report_r, self.zygote.fileno()], [], [],
                                        remaining)
            if self._report_r in ready:
                self._line = self._line or read_violation(self._report_r)
                if self._line:
                    self._failed(stage, plate)
            if self._conn.fileno() in ready:
                try:
                    message = self._conn.receive(deadline=self._deadline, kinds=(*expect, "error"),
                                                 check=check if check is not None else _no_arrays)
                except ChannelTimeout:
                    self._failed(stage, plate, timed_out=True)
                except ChannelError as exc:
                    if isinstance(exc, ChannelClosed):
                        self._failed(stage, plate)
                    self._malformed(stage, plate, str(exc))
                self._keep_stats(message.fields)
                if message.kind == "error":
                    raise StageError(*self._error_of(message, stage, plate))
                return message
            if self.zygote.fileno() in ready:
                ended = self.zygote.poll_exit(self._run)
                if ended is not None:
                    self._exit, self._alive = ended, False
                    self._failed(stage, plate)

    def _error_of(self, message: Message, stage: str, plate: str | None) -> tuple[str, str | None, RemoteError]:
        fields = message.fields
        for key, kind in _ERROR_FIELDS.items():
            if not isinstance(fields.get(key), kind):
                self._malformed(stage, plate, f"an error reply without a valid '{key}'")
        where = fields.get("plate") if isinstance(fields.get("plate"), str) else None
        trace = fields.get("traceback") if isinstance(fields.get("traceback"), str) else None
        return (str(fields["stage"])[:40], where,
                RemoteError(str(fields["type"])[:100], str(fields["message"])[:20000], trace,
                            bool(fields.get("bench"))))

    def _keep_stats(self, fields: dict[str, Any]) -> None:
        for key in ("method_s", "peak_rss_mb"):
            value = fields.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
                self._stats[key] = float(value)
        if isinstance(fields.get("sandbox"), str):
            self._stats["sandbox"] = fields["sandbox"][:500]

    def _outbox_check(self, kind: str, fields: dict[str, Any], specs: list[ArraySpec]) -> None:
        if kind != "stopped":
            _no_arrays(kind, fields, specs)
            return
        if specs and not (self.builtin and self.models is not None):
            raise ChannelError("the worker of a method without a models folder handed back files")
        for spec in specs:
            if spec.dtype != "uint8" or len(spec.shape) != 1:
                raise ChannelError(f"the worker handed back a file as {spec.dtype} {spec.shape}, not bytes")

    def _await_exit(self, seconds: float) -> None:
        if not self._alive:
            return
        ended = self.zygote.exit_of(self._run, time.monotonic() + seconds)
        if ended is None:
            self.zygote.kill(self._run)
            ended = self.zygote.exit_of(self._run, time.monotonic() + seconds)
        if ended is not None:
            self._exit, self._alive = ended, False

    def _malformed(self, stage: str, plate: str | None, what: str) -> None:
        self.zygote.kill(self._run)
        self._await_exit(EXIT_GRACE_S)
        where = f"{stage}{f' on plate {plate}' if plate else ''}"
        raise WorkerFailure(f"{where}: the worker's reply was refused ({what}); the run fails, its worker was "
                            "stopped", "protocol", stage, plate)

    def _failed(self, stage: str, plate: str | None, timed_out: bool = False) -> None:
        """The worker stopped answering: end it, find out why, raise the run's failure."""
        if self._alive and not timed_out:
            self._await_exit(EXIT_GRACE_S)  # a dying worker closes its channel just before it exits
        killed = self._alive
        if self._alive:
            self.zygote.kill(self._run)
            self._await_exit(EXIT_GRACE_S)
        self._stopped = time.perf_counter()
        if self._report_r is not None:
            self._line = self._line or read_violation(self._report_r)
        where = f"{stage}{f' on plate {plate}' if plate else ''}"
        code = (self._exit or {}).get("code")
        if self._line or code == VIOLATION_EXIT:
            raise SealViolation(f"{where}: the sealed worker stopped the run: "
                                f"{self._line or 'the audit hook refused an action (its report was lost)'}; a method "
                                "may use only what fit, adapt and predict hand it (see docs/sealed.md)",
                                "violation", stage, plate)
        if timed_out:
            raise WorkerFailure(f"{where}: the run exceeded its time limit of {self.limits.time_s:g} s and its worker "
                                "was stopped; raise the limit with --time-limit SECONDS", "timeout", stage, plate)
        if (self._exit or {}).get("zygote_gone"):
            raise WorkerFailure(f"{where}: the sealed workers' zygote stopped answering; only this run fails",
                                "zygote", stage, plate)
        if killed:
            raise WorkerFailure(f"{where}: the worker process stopped answering (its channel closed) and was stopped",
                                "exit", stage, plate)
        peak = self._stats.get("peak_rss_mb") or (self._exit or {}).get("peak_rss_mb")
        if code == -signal.SIGKILL:
            raise WorkerFailure(f"{where}: the worker process was killed (out of memory?) by SIGKILL"
                                f"{f' after a peak of {peak:.0f} MB' if isinstance(peak, (int, float)) else ''}; "
                                "give it more memory or use less (e.g. a smaller batch size)", "killed", stage, plate)
        if isinstance(code, int) and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            raise WorkerFailure(f"{where}: the worker process crashed ({name}, {_SIGNALS.get(-code, 'a signal')}); "
                                "only this run fails", "crash", stage, plate)
        raise WorkerFailure(f"{where}: the worker process exited with code {code} without answering (did the method "
                            "call os._exit or sys.exit?); only this run fails", "exit", stage, plate)


MAX_VALUES_PER_IMAGE = 64 * N_CLASSES
"""Most values a ``probs`` reply may declare per treated image; its exact shape is then checked like an in-process
method's output (:func:`benchmark.protocol.method_calls.check_probabilities`), with the same messages."""


def _probabilities_check(n_images: int) -> Any:
    """A channel check: a ``probs`` reply holds one float64 array of at most ``MAX_VALUES_PER_IMAGE`` values per
    treated image of the plate (refused before anything is allocated), or none (``unconvertible``)."""
    def check(kind: str, fields: dict[str, Any], specs: list[ArraySpec]) -> None:
        if kind != "probs":
            _no_arrays(kind, fields, specs)
            return
        if not specs:
            if "unconvertible" not in fields:
                raise ChannelError("a probabilities reply without its array")
            return
        limit = max(n_images, 1) * MAX_VALUES_PER_IMAGE
        size = int(np.prod(specs[0].shape, dtype=np.float64)) if specs[0].shape else 1
        if len(specs) != 1 or specs[0].dtype != "float64" or len(specs[0].shape) > 2 or size > limit:
            got = ", ".join(f"{s.dtype} {tuple(s.shape)}" for s in specs)
            raise ChannelError(f"expected one float64 array of shape ({n_images}, {N_CLASSES}) for the plate's "
                               f"{n_images} treated images, got {got}")
    return check


def _no_arrays(kind: str, fields: dict[str, Any], specs: list[ArraySpec]) -> None:
    if specs:
        raise ChannelError(f"a '{kind}' reply carries {len(specs)} array(s), which it never should")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


__all__ = ["BenchError", "SealViolation", "SealedHost", "WorkerFailure"]
