"""Bit-identity reference of the ResNet methods: fit, predict every target plate, save or compare.

Not a test module (no ``test_`` prefix): a script for refactors that must not change a
number. ``python tests/_bn_reference.py save /tmp/ref.npz`` before the change,
``python tests/_bn_reference.py compare /tmp/ref.npz`` after; ``compare`` exits non-zero
and names every array that differs (``np.array_equal``).

Runs: each of ``erm, adabn, arm_bn, cs_arm_bn, ben`` (and ``arm_bn`` / ``cs_arm_bn`` with
``full_domain_stats=true``) with its ``quick_overrides`` on the conformance check fold,
and the same methods on the toy dataset of ``tests/conftest.py`` with two epochs, random
crops, gradient accumulation and the one-cycle schedule. Saved per run: the predicted
probabilities of every target plate (the view cut to the method's access level, as the
evaluator cuts it), the probabilities of a 5-image subset and of a call with more images
than ``eval_batch_size``, and the fit report's best validation loss, best epoch and epochs run.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from benchmark.conformance.checks import check_data  # noqa: E402
from benchmark.datasets.dataset import PlateView  # noqa: E402
from benchmark.methods.base import AccessLevel  # noqa: E402
from benchmark.protocol.loop import resolve_config  # noqa: E402
from benchmark.registry import get_method  # noqa: E402

RUNS = [("erm", {}), ("adabn", {}), ("arm_bn", {}), ("cs_arm_bn", {}), ("ben", {}),
        ("arm_bn", {"full_domain_stats": "true"}), ("cs_arm_bn", {"full_domain_stats": "true"})]
TOY = {"max_epochs": "2", "patience": "2", "crop": "12", "grad_accum": "2", "n_treated": "20", "n_controls": "12",
       "batch_size": "24"}


def cut(method, plate: str, treated: np.ndarray, controls: np.ndarray) -> PlateView:
    """The part of a plate the method's access level allows (as the evaluator cuts it)."""
    empty = treated[:0]
    if method.access is AccessLevel.UNLABELED:
        return PlateView(plate, treated, controls)
    if method.access is AccessLevel.CONTROLS:
        return PlateView(plate, empty, controls)
    return PlateView(plate, empty, empty)


def run_all(label: str, train, val, plates: dict[str, tuple[np.ndarray, np.ndarray]], extra: dict) -> dict:
    out = {}
    for name, overrides in RUNS:
        cls = get_method(name)
        fields = {f for f in cls.Config.__dataclass_fields__}
        config = resolve_config(cls, {**{k: v for k, v in extra.items() if k in fields}, **overrides}, quick=True)
        key = f"{label}/{name}" + ("+fds" if overrides else "")
        method = cls(config).fit(train, val, seed=0)
        report = method.fit_report()
        out[f"{key}/best_val_loss"] = np.array(report["best_val_loss"])
        out[f"{key}/epochs"] = np.array([report["best_epoch"], report["epochs_run"]])
        for plate, (treated, controls) in plates.items():
            method.adapt(cut(method, plate, treated, controls))
            out[f"{key}/{plate}/probs"] = method.predict(treated)
            out[f"{key}/{plate}/subset"] = method.predict(treated[3:8])
            out[f"{key}/{plate}/large"] = method.predict(np.concatenate([treated] * 9))  # > eval_batch_size
        print(f"{key}: best val loss {report['best_val_loss']!r}", flush=True)
    return out


def check_fold() -> dict:
    data = check_data()
    plates = {}
    for plate in data.targets:
        view = data.view(plate)
        plates[plate] = (np.asarray(view.treated[:]), np.asarray(view.controls[:]))
    return run_all("check", data.train, data.val, plates, {})


def toy_fold() -> dict:
    from _method_data import split
    from conftest import make_toy_dataset

    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_toy_dataset(Path(tmp))
        train, val, target = split(dataset)
        plates = {}
        for plate in ["src3_b0_p0", "src3_b1_p1"]:
            rows = target.filter(target["plate"] == plate)
            treated = dataset.labelled(rows).read(rows.filter(~rows["is_control"])["image_id"].to_numpy())
            controls = dataset.labelled(rows).read(rows.filter(rows["is_control"])["image_id"].to_numpy())
            order = np.random.default_rng(1).permutation(len(treated))
            plates[plate] = (np.ascontiguousarray(treated[order]), controls)
        return run_all("toy", train, val, plates, TOY)


def main() -> int:
    mode, path = sys.argv[1], Path(sys.argv[2])
    results = {**check_fold(), **toy_fold()}
    if mode == "save":
        np.savez(path, **results)
        print(f"saved {len(results)} arrays to {path}")
        return 0
    reference = dict(np.load(path))
    bad = sorted(k for k in reference if k not in results or not np.array_equal(reference[k], results[k]))
    missing = sorted(set(results) - set(reference))
    for key in bad:
        got = results.get(key)
        diff = "missing" if got is None else f"max |diff| {np.max(np.abs(reference[key] - got)):.3g}"
        print(f"DIFFERS {key}: {diff}")
    print(f"{len(reference) - len(bad)}/{len(reference)} arrays identical" + (f"; new: {missing}" if missing else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
