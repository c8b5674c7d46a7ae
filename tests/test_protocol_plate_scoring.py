"""The access cut (benchmark/protocol/access.py), the plate loop (plate_scoring.py) and the record header
(record_header.py): each written once and used by the plain evaluation, the scenarios and the sealed worker."""

import numpy as np
import polars as pl
import pytest

from benchmark.constants import N_CLASSES
from benchmark.errors import MethodError
from benchmark.methods.base import AccessLevel
from benchmark.protocol.access import handed, sent
from benchmark.protocol.plate_scoring import score_plate

PLATE = "src3_b0_p0"


@pytest.mark.parametrize(("access", "sees"), [(AccessLevel.NONE, (0, 0)), (AccessLevel.CONTROLS, (0, 1)),
                                              (AccessLevel.UNLABELED, (1, 1)), (AccessLevel.TRANSDUCTIVE, (1, 1))])
def test_adapt_is_handed_what_the_access_level_allows_and_the_host_gets_every_treated_image(access, sees):
    treated, controls = np.arange(5), np.arange(10, 13)
    got = handed(access, treated, controls)
    assert tuple(int(len(part) > 0) for part in got) == sees
    assert all(len(part) == 0 and part.dtype == treated.dtype for part in got if len(part) == 0)
    host_treated, host_controls = sent(access, treated, controls)
    assert host_treated is treated and len(host_controls) == len(got[1])
    hidden = object()
    assert sum(part is hidden for part in handed(access, treated, controls, lambda _part: hidden)) == 2 - sum(sees)


class _Host:
    """A host whose 'method' scores each image by its first pixel (so rows can be traced) and keeps its views."""

    def __init__(self, access, probs=None):
        self.name, self.access, self.min_controls, self.views, self.probs = "_host", access, 0, [], probs

    def adapt_predict(self, full):
        self.views.append(full)
        if self.probs is not None:
            return self.probs
        pixel = np.asarray(full.treated[:])[:, 0, 0, 0].astype(np.float64)
        out = np.zeros((len(pixel), N_CLASSES))
        out[:, 0], out[:, 1] = pixel / 255, 1 - pixel / 255
        return out


def _plate_ids(dataset, control):
    return dataset.index.filter((pl.col("plate") == PLATE) & (pl.col("is_control") == control))["image_id"].to_numpy()


@pytest.mark.parametrize("access", list(AccessLevel))
def test_score_plate_shuffles_once_sends_what_the_level_allows_and_unshuffles(toy_dataset, access):
    treated, controls = _plate_ids(toy_dataset, False), _plate_ids(toy_dataset, True)
    host, rng, twin = _Host(access), np.random.default_rng(5), np.random.default_rng(5)
    scored = score_plate(host, toy_dataset, PLATE, treated, controls, rng)
    order = twin.permutation(len(treated))
    assert rng.integers(1 << 30) == twin.integers(1 << 30)  # exactly one draw per plate
    (view,) = host.views
    assert np.array_equal(np.asarray(view.treated[:]), toy_dataset.read(treated[order]))
    assert len(view.controls) == (len(controls) if access.sees_controls else 0)
    expected = toy_dataset.read(treated)[:, 0, 0, 0] / 255  # back in the order of the ids
    assert np.array_equal(scored.probs[:, 0], expected) and scored.seconds >= 0


def test_score_plate_refuses_output_that_is_not_probabilities(toy_dataset):
    treated = _plate_ids(toy_dataset, False)
    host = _Host(AccessLevel.NONE, probs=np.ones((len(treated), N_CLASSES)))
    with pytest.raises(MethodError, match=f"method '_host' predict\\(\\) on plate {PLATE}"):
        score_plate(host, toy_dataset, PLATE, treated, treated[:0], np.random.default_rng(0))


def test_the_record_header_holds_its_keys_in_the_records_order(toy_dataset):
    from benchmark.method_info import info_of
    from benchmark.methods.erm import ERM
    from benchmark.protocol.record_header import record_header
    from benchmark.splits import make_folds

    folds = make_folds(toy_dataset.index, "source_out", 0)
    header = record_header(info_of(ERM, ERM.Config()), toy_dataset, folds[1], 2, n_folds=len(folds), split_seed=0,
                           argument="toy", quick=False, overrides={"lr": 0.1}, preset=None, device="cpu",
                           environment={"python": "3"}, order_scheme="keyed-v1")
    assert list(header) == ["record_format", "profile", "created", "method", "split", "seed", "dataset",
                            "class_names", "device", "environment", "orders"]
    assert list(header["method"]) == ["name", "access", "description", "origin", "config", "overrides", "preset",
                                      "quick_overrides"]
    assert header["profile"] == "full" and header["method"]["quick_overrides"] == {} and header["seed"] == 2
    assert header["split"]["fold"] == 1 and header["split"]["n_folds"] == len(folds)
    assert header["dataset"]["argument"] == "toy" and header["orders"]["scheme"] == "keyed-v1"
