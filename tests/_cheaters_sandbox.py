"""Cheaters of issue 23, one per row of its table and per reliability hole (names ``_cheat23_*``).

Each is what an outside submitter tried against the denylist design:

- ``_cheat23_predictions``: reads earlier runs' ``*.predictions.parquet`` (they hold every target image's label)
  under ``$PLATEBENCH_CHEAT_RESULTS`` and answers with the majority label of the plate it adapts to;
- ``_cheat23_models``: plants a file in the fold's source-model cache (``$PLATEBENCH_CHEAT_MODELS``);
- ``_cheat23_pickle``: writes a pickle straight onto the worker -> evaluator channel (whose unpickling would run
  its code in the evaluator: it creates ``$PLATEBENCH_CHEAT_MARK``);
- ``_cheat23_report``: returns a fit report holding an object instead of plain values;
- ``_cheat23_huge``: a reply whose header declares a (10^7, 10^7) array;
- ``_cheat23_bad_error``: an error reply without its fields;
- ``_cheat23_half_frame``: writes half a frame and waits forever;
- ``_cheat23_signal``: signals the evaluator (``$PLATEBENCH_CHEAT_PID``, SIGUSR1 to every thread of it);
- ``_cheat23_orphan``: forks a child that sleeps on after the run.

Importing this module registers nothing: the ``sandbox_cheaters`` fixture (tests/conftest.py)
registers :data:`CHEAT23_METHODS` for a test module.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import struct
import time
from pathlib import Path

import numpy as np

from _toy_methods import Centroid

RESULTS_ENV, MODELS_ENV, MARK_ENV, PID_ENV = ("PLATEBENCH_CHEAT_RESULTS", "PLATEBENCH_CHEAT_MODELS",
                                              "PLATEBENCH_CHEAT_MARK", "PLATEBENCH_CHEAT_PID")


def channel_fd() -> int:
    """The worker's end of the channel to the evaluator: its one Unix socket."""
    for fd in range(3, 1024):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                return fd
        except OSError:
            continue
    raise RuntimeError("no socket found")


def frame(header: dict | bytes) -> bytes:
    """A channel frame (magic, version, header length, header) with no arrays."""
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack(">4sBI", b"PBCH", 1, len(body)) + body


class _Planted:
    """Its unpickling creates the mark file (code that would run in the evaluator)."""

    def __reduce__(self):
        return (open, (os.environ.get(MARK_ENV, "/nonexistent/mark"), "w"))


class Predictions(Centroid):
    name = "_cheat23_predictions"
    description = "test: reads earlier runs' predictions"

    def fit(self, train, val, seed):
        import polars as pl

        self.labels_ = {}
        for path in Path(os.environ[RESULTS_ENV]).rglob("*.predictions.parquet"):
            table = pl.read_parquet(path)
            for (plate,), rows in table.group_by("plate"):
                self.labels_[plate] = int(rows["label"].mode()[0])
        return super().fit(train, val, seed)

    def adapt(self, plate):
        self.plate_ = plate.plate
        return self

    def predict(self, images):
        label = self.labels_.get(self.plate_)
        return super().predict(images) if label is None else np.tile(np.eye(8)[label], (len(images), 1))


class PlantModels(Centroid):
    name = "_cheat23_models"
    description = "test: writes into the source-model cache"

    def fit(self, train, val, seed):
        folder = Path(os.environ[MODELS_ENV])
        (folder / "model-0123456789abcdef01234567.json").write_text("{}")
        return super().fit(train, val, seed)


class PickleOnChannel(Centroid):
    name = "_cheat23_pickle"
    description = "test: sends a pickle to the evaluator"

    def predict(self, images):
        os.write(channel_fd(), frame(pickle.dumps(_Planted())))
        time.sleep(5)
        return super().predict(images)


class ObjectReport(Centroid):
    name = "_cheat23_report"
    description = "test: a fit report holding an object"

    def fit_report(self):
        return {"metrics": _Planted()}


class RawFrame(Centroid):
    """Writes ``header`` as a frame straight onto the channel in ``predict``, then waits for the evaluator."""

    header: dict = {}

    def predict(self, images):
        os.write(channel_fd(), frame(self.header))
        time.sleep(5)
        return super().predict(images)


class HugeArray(RawFrame):
    name = "_cheat23_huge"
    description = "test: declares a huge array"
    header = {"kind": "probs", "fields": {}, "arrays": [{"dtype": "float64", "shape": [10**7, 10**7]}], "fds": 0}


class BadError(RawFrame):
    name = "_cheat23_bad_error"
    description = "test: an error reply without its fields"
    header = {"kind": "error", "fields": {}, "arrays": [], "fds": 0}


class HalfFrame(Centroid):
    name = "_cheat23_half_frame"
    description = "test: half a frame, then silence"

    def predict(self, images):
        whole = frame({"kind": "probs", "fields": {}, "arrays": [], "fds": 0})
        os.write(channel_fd(), whole[: len(whole) // 2])
        time.sleep(3600)
        return super().predict(images)


class SignalEvaluator(Centroid):
    name = "_cheat23_signal"
    description = "test: signals the evaluator"

    def fit(self, train, val, seed):
        pid = int(os.environ[PID_ENV])
        self.tried_ = []
        for target in [pid, *_threads(pid)]:
            try:
                os.kill(target, signal.SIGUSR1)
                self.tried_.append("sent")
            except OSError as exc:
                self.tried_.append(type(exc).__name__)
        return super().fit(train, val, seed)

    def fit_report(self):
        return {"signals": self.tried_}


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
    except OSError:
        return []


class Orphan(Centroid):
    name = "_cheat23_orphan"
    description = "test: leaves a child behind"

    def fit(self, train, val, seed):
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:  # a grandchild, re-parented when its parent exits
                time.sleep(600)
            os._exit(0)
        return super().fit(train, val, seed)


CHEAT23_METHODS = (Predictions, PlantModels, PickleOnChannel, ObjectReport, HugeArray, BadError, HalfFrame,
                   SignalEvaluator, Orphan)
"""Every method of this module, as the ``sandbox_cheaters`` fixture registers them."""
