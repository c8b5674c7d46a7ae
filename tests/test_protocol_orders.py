"""Order keys (benchmark.protocol.orders): public-v0 draws what records were made with; keyed-v1 hides the orders.

The replay cheater below knows what every submitter knows: the toy dataset's fixed layout (the
same wells hold the same classes on every plate, in index order) and the public-v0 generator of
the evaluator's shuffle. Under public-v0 it undoes the shuffle and scores 1.0; under keyed-v1 it
guesses at chance, in process and in a sealed run, and ``bench verify`` re-runs each record with
the scheme it names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib

import numpy as np
import polars as pl
import pytest
from _toy_methods import Centroid, CentroidConfig, PlateStd
from typer.testing import CliRunner

from benchmark.protocol import orders
from benchmark.cli import app
from benchmark.constants import POSCONS
from benchmark.datasets.dataset import open_dataset
from benchmark.errors import BenchError, UnknownNameError
from benchmark.protocol.evaluation import fit_and_evaluate, target_views
from benchmark.methods.base import AccessLevel
from benchmark.protocol.orders import (EVALUATION, KEYED_V1, PUBLIC_V0, TARGET_VIEWS, case_rng, index_digest, order_rng,
                              record_scheme, scenario_purpose)
from benchmark.protocol.loop import run_protocol
from benchmark.records import read_record
from benchmark.registry import registered
from benchmark.scenarios import get_scenario
from benchmark.scenarios.scoring import run_scenarios, target_plates
from benchmark.splits import make_folds

pytestmark = pytest.mark.usefixtures("toy_methods", "replay")

LAYOUT = np.array([label for label, *_rest, wells in POSCONS for _ in wells])
"""The class of each treated image of a toy plate, in image-id order (one site per well): the fixed layout."""


@dataclasses.dataclass(frozen=True)
class ReplayConfig(CentroidConfig):
    fold: int = 0
    split_seed: int = 0


class Replay(Centroid):
    """Re-draws the evaluator's public-v0 shuffle of each plate and reads the labels off the layout."""

    name = "_test_replay_orders"
    access = AccessLevel.UNLABELED
    description = "test: replays the public-v0 order of every target plate"
    Config = ReplayConfig

    def fit(self, train, val, seed):
        super().fit(train, val, seed)
        self.rng_ = np.random.default_rng([self.config.split_seed, self.config.fold, seed, 7])
        return self

    def adapt(self, plate):
        super().adapt(plate)
        self.order_ = self.rng_.permutation(len(plate.treated))  # the evaluator's next draw, plate after plate
        return self

    def predict(self, images):
        if len(images) != len(LAYOUT):  # an in-domain plate (held-out wells): not replayed
            return super().predict(images)
        return np.eye(8)[LAYOUT[self.order_]]


@pytest.fixture(scope="module")
def replay():
    """The replay cheater, registered while this module's tests run (a sealed worker finds it by its class name)."""
    with registered(Replay):
        yield Replay


@pytest.fixture(scope="module")
def fold(toy_dataset):
    return make_folds(toy_dataset.index, "source_out", 0)[0]


def draws(rng: np.random.Generator) -> list[int]:
    return rng.integers(0, 2 ** 31, size=6).tolist()


def relabelled(dataset, image_id: int):
    """A copy of ``dataset`` whose image ``image_id`` carries the next class."""
    index = dataset.index.with_columns(
        pl.when(pl.col("image_id") == image_id).then((pl.col("label") + 1) % 8).otherwise(pl.col("label"))
        .cast(pl.Int8).alias("label"))
    return dataclasses.replace(dataset, index=index)


def target_treated(dataset, fold) -> np.ndarray:
    rows = dataset.index[np.asarray(fold.target_ids, dtype=np.int64)].filter(~pl.col("is_control"))
    return rows["image_id"].to_numpy()


# -- public-v0: exactly the generators committed records were made with --------------------------
@pytest.mark.parametrize("split_seed,fold_index,seed", [(0, 0, 0), (0, 3, 2), (5, 1, 7)])
def test_public_v0_draws_the_generators_of_committed_records(toy_dataset, split_seed, fold_index, seed):
    def public(purpose):
        return draws(order_rng(toy_dataset, fold_index, seed, split_seed, purpose, PUBLIC_V0))

    assert public(EVALUATION) == draws(np.random.default_rng([split_seed, fold_index, seed, 7]))
    assert public(TARGET_VIEWS) == draws(np.random.default_rng([split_seed, fold_index, seed, 11]))
    assert public(scenario_purpose("support", "8")) == draws(
        np.random.default_rng([split_seed, fold_index, seed, 13, zlib.crc32(b"support|8")]))
    text = "platebench-scenario|label_shift|0.1|src1_b0_p1"
    assert draws(case_rng(toy_dataset, "label_shift", "0.1", "src1_b0_p1", PUBLIC_V0)) == draws(
        np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")))


def test_public_v0_views_are_the_old_permutations(toy_dataset, fold):
    """The target views of a transductive fit under public-v0: shuffled by default_rng([0, fold, seed, 11])."""
    views = target_views(toy_dataset, fold, 2, order_scheme=PUBLIC_V0)
    rng = np.random.default_rng([0, fold.index, 2, 11])
    plates = target_plates(toy_dataset, fold)
    for view in views:
        treated = plates[view.plate][0]
        expected = toy_dataset.read(treated[rng.permutation(len(treated))])
        assert np.array_equal(view.treated[:], expected)


# -- keyed-v1: deterministic, and keyed by what the worker never sees -----------------------------
def test_keyed_v1_differs_from_public_v0_and_reproduces_on_another_opening(toy_dataset, fold):
    again = open_dataset(toy_dataset.root)
    assert again is not toy_dataset
    for purpose in (EVALUATION, TARGET_VIEWS, scenario_purpose("support", "8")):
        keyed = draws(order_rng(toy_dataset, fold, 0, 0, purpose, KEYED_V1))
        assert keyed != draws(order_rng(toy_dataset, fold, 0, 0, purpose, PUBLIC_V0))
        assert keyed == draws(order_rng(again, fold, 0, 0, purpose, KEYED_V1))
    assert draws(case_rng(toy_dataset, "support", "8", "src0_b0_p0")) == draws(
        case_rng(again, "support", "8", "src0_b0_p0"))
    assert draws(case_rng(toy_dataset, "support", "8", "src0_b0_p0")) != draws(
        case_rng(toy_dataset, "support", "8", "src0_b0_p0", PUBLIC_V0))


def test_keyed_v1_is_the_default(toy_dataset, fold):
    assert draws(order_rng(toy_dataset, fold, 0, 0, EVALUATION)) == draws(
        order_rng(toy_dataset, fold, 0, 0, EVALUATION, KEYED_V1))


@pytest.mark.parametrize("position", [0, 37, -1])
def test_keyed_v1_changes_when_any_single_target_label_changes(toy_dataset, fold, position):
    """The key holds the labels of the target images, which never reach the worker."""
    image_id = int(target_treated(toy_dataset, fold)[position])
    other = relabelled(toy_dataset, image_id)
    assert index_digest(other) != index_digest(toy_dataset)
    for purpose in (EVALUATION, TARGET_VIEWS, scenario_purpose("label_shift", "1")):
        assert draws(order_rng(other, fold, 0, 0, purpose)) != draws(order_rng(toy_dataset, fold, 0, 0, purpose))
        assert draws(order_rng(other, fold, 0, 0, purpose, PUBLIC_V0)) == draws(
            order_rng(toy_dataset, fold, 0, 0, purpose, PUBLIC_V0))
    plate = toy_dataset.index["plate"][image_id]
    assert draws(case_rng(other, "label_shift", "1", plate)) != draws(case_rng(toy_dataset, "label_shift", "1", plate))


def test_keyed_v1_changes_with_fold_seed_split_seed_and_purpose(toy_dataset):
    base = draws(order_rng(toy_dataset, 0, 0, 0, EVALUATION))
    others = [order_rng(toy_dataset, 1, 0, 0, EVALUATION), order_rng(toy_dataset, 0, 1, 0, EVALUATION),
              order_rng(toy_dataset, 0, 0, 1, EVALUATION), order_rng(toy_dataset, 0, 0, 0, TARGET_VIEWS),
              order_rng(toy_dataset, 0, 0, 0, scenario_purpose("support", "8")),
              order_rng(toy_dataset, 0, 0, 0, scenario_purpose("support", "32"))]
    assert all(draws(rng) != base for rng in others)
    cuts = {tuple(draws(case_rng(toy_dataset, s, level, p)))
            for s, level, p in [("support", "8", "src0_b0_p0"), ("support", "32", "src0_b0_p0"),
                                ("controls", "8", "src0_b0_p0"), ("support", "8", "src0_b0_p1")]}
    assert len(cuts) == 4


def test_the_index_digest_is_computed_once_per_dataset_object(toy_dataset, monkeypatch):
    fresh = open_dataset(toy_dataset.root)
    calls = []
    digest = orders._digest_index
    monkeypatch.setattr(orders, "_digest_index", lambda index: calls.append(1) or digest(index))
    first = index_digest(fresh)
    assert index_digest(fresh) == first and order_rng(fresh, 0, 0, 0, EVALUATION) is not None
    assert len(calls) == 1
    assert first == index_digest(open_dataset(toy_dataset.root)) and len(calls) == 2


def test_unknown_schemes_and_purposes_are_refused(toy_dataset):
    with pytest.raises(UnknownNameError, match="unknown order scheme 'keyed-v2'.*keyed-v1, public-v0"):
        order_rng(toy_dataset, 0, 0, 0, EVALUATION, "keyed-v2")
    with pytest.raises(ValueError, match="unknown order purpose 'scoring'"):
        order_rng(toy_dataset, 0, 0, 0, "scoring")
    with pytest.raises(BenchError, match="order scheme"):
        run_protocol("_test_centroid", "source_out", toy_dataset, order_scheme="nope")
    assert record_scheme({}) == PUBLIC_V0 and record_scheme({"orders": {"scheme": KEYED_V1}}) == KEYED_V1


# -- scenarios: cuts under the run's scheme ------------------------------------------------------
def test_scenario_cuts_follow_the_scheme_and_public_v0_keeps_the_old_cut(toy_dataset, fold):
    plate, (treated, controls) = next(iter(target_plates(toy_dataset, fold).items()))
    old = orders.public_case_rng("support", "8", plate).permutation(treated)
    public = get_scenario("support", PUBLIC_V0).cases(toy_dataset, "8", plate, treated, controls)
    assert [c.treated_ids.tolist() for c in public] == [sorted(old[i:i + 8]) for i in range(0, len(old), 8)]
    keyed = get_scenario("support").cases(toy_dataset, "8", plate, treated, controls)
    assert [c.treated_ids.tolist() for c in keyed] != [c.treated_ids.tolist() for c in public]
    shift = [get_scenario("label_shift", s).cases(toy_dataset, "0.1", plate, treated, controls)[0].treated_ids
             for s in (PUBLIC_V0, KEYED_V1)]
    assert shift[0].tolist() != shift[1].tolist()


def test_a_scenario_object_of_another_scheme_is_refused(toy_dataset, fold):
    from benchmark.protocol.evaluation import LocalHost

    method = Centroid()
    fit_and_evaluate(method, toy_dataset, fold, 0)
    host = LocalHost(method, toy_dataset, fold, fitted=True)
    with pytest.raises(BenchError, match="scenario 'support' draws its cuts under order scheme 'public-v0'"):
        run_scenarios(host, toy_dataset, fold, 0, 0, [get_scenario("support", PUBLIC_V0)], {}, 1.0)


# -- the replay cheater --------------------------------------------------------------------------
def test_a_replay_cheater_wins_under_public_v0_and_guesses_under_keyed_v1(toy_dataset, fold):
    def accuracy(scheme):
        cheater = Replay(ReplayConfig(fold=fold.index))
        return fit_and_evaluate(cheater, toy_dataset, fold, 0, order_scheme=scheme).metrics["out_of_domain"]["accuracy"]

    assert accuracy(PUBLIC_V0) == 1.0
    assert accuracy(KEYED_V1) < 0.35


# -- records: the scheme is written, verified with, and never mixed ------------------------------
def bench(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_records_name_their_scheme_and_verify_re_runs_with_it(toy_dataset, tmp_path):
    """A record without ``orders`` (made before keyed orders) verifies bit for bit under public-v0; the same
    record claiming keyed-v1 does not; a new sealed run is keyed-v1, where the cheater guesses."""
    kw = dict(seeds=[0], folds=[0], device="cpu", results_dir=tmp_path / "res")
    (old,) = run_protocol(Replay.name, "source_out", toy_dataset, order_scheme=PUBLIC_V0, **kw)
    assert old.status == "ok" and old.out_of_domain_accuracy == 1.0
    data = read_record(old.path)
    assert data["orders"] == {"scheme": PUBLIC_V0}
    del data["orders"]
    old.path.write_text(json.dumps(data))
    r = bench("verify", old.path, "--dataset", toy_dataset.root)
    assert r.exit_code == 0 and "(1 with bit-identical predictions)" in r.stdout, r.output

    data["orders"] = {"scheme": KEYED_V1}
    old.path.write_text(json.dumps(data))
    r = bench("verify", old.path, "--dataset", toy_dataset.root)
    assert r.exit_code != 0 and "out_of_domain.accuracy" in r.output, r.output

    (new,) = run_protocol(Replay.name, "source_out", toy_dataset, force=True, **kw)
    assert new.status == "ok" and new.out_of_domain_accuracy < 0.35
    assert read_record(new.path)["orders"] == {"scheme": KEYED_V1}


def test_adding_blocks_to_a_public_v0_record_redraws_the_whole_record(toy_dataset, tmp_path):
    kw = dict(seeds=[0], folds=[0], device="cpu", results_dir=tmp_path / "res")
    (first,) = run_protocol("_test_plate_std", "source_out", toy_dataset, scenarios="support",
                            order_scheme=PUBLIC_V0, **kw)
    (same,) = run_protocol("_test_plate_std", "source_out", toy_dataset, scenarios="support", **kw)
    assert same.status == "skipped"  # a public-v0 record is not stale
    lines = []
    (more,) = run_protocol("_test_plate_std", "source_out", toy_dataset, scenarios="label_shift", log=lines.append,
                           **kw)
    assert any("redrawn under order scheme keyed-v1 (was public-v0)" in line for line in lines), lines
    data = read_record(more.path)
    assert data["orders"] == {"scheme": KEYED_V1} and set(data["scenarios"]) == {"label_shift", "support"}
    local = fit_and_evaluate(PlateStd(), toy_dataset, make_folds(toy_dataset.index, "source_out")[0], 0,
                            scenarios=("label_shift", "support"))
    assert data["scenarios"]["support"]["levels"]["8"]["metrics"]["accuracy"] == pytest.approx(
        local.scenarios["support"]["levels"]["8"]["metrics"]["accuracy"], abs=1e-12)
