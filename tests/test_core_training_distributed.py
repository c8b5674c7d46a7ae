"""Data-parallel training (DDP, benchmark.core.training.distributed): two gloo ranks train one model as one process with
twice the gradient accumulation would, only rank 0 writes the record, and a world of one changes nothing.

The end-to-end test runs two ranks with the variables ``torchrun --nproc-per-node 2`` sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): rank 1 is a ``bench run`` of its own, rank 0
``run_protocol`` in this process, which hosts the rendezvous store as a rank 0 outside torchrun does
(torchrun's agent would host it, adding only its start-up). Each rank's sealed worker joins the gloo group and
trains its share of ERM on a small toy dataset (resnet_micro, whole 16 px images, 3 epochs). The reference is
one process with ``grad_accum=2``, which takes the same images per optimiser step (rank 0 the even batches,
rank 1 the odd ones). The fold has 5 ERM batches per epoch, so rank 1's share is one short and it idles in
the last step of every epoch. Stated tolerance: the same number of optimiser steps, the per-epoch training
loss within 1e-6 (relative), the validation loss (BN running statistics merged across the ranks) within
1e-5 and every class probability within 1e-5 of the reference's.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_toy_dataset

from benchmark.core.training.distributed import (HOSTED_ENV, RUN_ENV, Coordinator, DistributedError, Launch, RunningStatsSync,
                                        World, launch, process_group)
from benchmark.core.training.loader import epochs, training_steps
from benchmark.core.training.preprocess import Preprocessor, channel_stats
from benchmark.core.training.sampler import MixedBatches, plate_batches
from benchmark.core.training.loop import SizedEpoch, TrainSettings, train_model
from benchmark.errors import MethodError
from benchmark.protocol.evaluation import fit_and_evaluate
from benchmark.hardware import cpu_id, cpu_isa
from benchmark.protocol.loop import run_protocol
from benchmark.records import load_records, read_predictions
from benchmark.registry import get_method
from benchmark.splits import make_folds

CONFIG = {"crop": 0, "max_epochs": 2,  # ERM on the toy's whole 16 px images (resnet_micro, batches of 32) ...
          "schedule": "onecycle", "patience": 3, "augment": "flips", "weight_average": 0.0}  # ... the recipe of its time
BENCH = Path(sys.executable).with_name("bench")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**values: str) -> dict[str, str]:
    return {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
            **values}


@pytest.fixture(scope="module")
def small_toy(tmp_path_factory):
    """3 sources x 2 batches x 2 plates: source_out fold 0 trains on 5 ERM batches per epoch, scores 10 plates."""
    return make_toy_dataset(tmp_path_factory.mktemp("small_toy"), n_sources=3, n_batches=2, n_plates=2)


def _probs(table) -> np.ndarray:
    return table.select([c for c in table.columns if c.startswith("prob_")]).to_numpy()


# ----------------------------------------------------------------------------- torchrun end to end


@pytest.mark.slow
def test_two_gloo_ranks_train_as_one_process_with_twice_the_accumulation_and_only_rank_0_writes(
        small_toy, tmp_path, monkeypatch):
    assert BENCH.exists(), f"the bench command is not installed next to {sys.executable}: pip install -e ."
    cache, results, config = tmp_path / "cache", tmp_path / "res", {**CONFIG, "max_epochs": 3}
    ranks = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}  # as torchrun sets them
    env = {k: v for k, v in os.environ.items() if k not in (HOSTED_ENV, RUN_ENV)}
    env.update(ranks, RANK="1", LOCAL_RANK="1", PLATEBENCH_CACHE=str(cache), OMP_NUM_THREADS="1")
    settings = [arg for key, value in config.items() for arg in ("--set", f"{key}={value}")]
    log = tmp_path / "rank1.log"
    with log.open("w") as out:  # rank 1: a bench run of its own
        rank1 = subprocess.Popen([str(BENCH), "run", "-m", "erm", "-s", "source_out", "--dataset", str(small_toy.root),
                                  "--folds", "0", "--seeds", "0", "--device", "cpu", "--results", str(results),
                                  "--scenarios", "none", *settings], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:  # rank 0: this process (its sealed workers' forkserver is often warm already); it hosts the store
        for key, value in {**ranks, "RANK": "0", "LOCAL_RANK": "0", "PLATEBENCH_CACHE": str(cache),
                           HOSTED_ENV: "0"}.items():
            monkeypatch.setenv(key, value)
        (outcome,) = run_protocol("erm", "source_out", small_toy, seeds=[0], folds=[0], device="cpu",
                                  results_dir=results, overrides=config)
        code = rank1.wait(timeout=300)
    finally:
        if rank1.poll() is None:
            rank1.kill()
    said = log.read_text()
    assert code == 0 and outcome.status == "ok", said[-3000:]  # rank 1 exits cleanly
    assert "(rank 1): fitted; rank 0 evaluates it and writes the record" in said
    assert "0 done, 0 skipped (already recorded), 0 failed" in said  # rank 1 reports no run of its own
    written = sorted(p.name for p in results.rglob("*") if p.is_file())
    assert written == ["fold0_seed0.json", "fold0_seed0.predictions.parquet"]
    (record,) = load_records(results).ok
    ddp = record.data["fit_report"]
    assert (ddp["world_size"], ddp["backend"]) == (2, "gloo")
    assert record.data["worker"]["isolation"] == "sealed"

    monkeypatch.setenv("WORLD_SIZE", "1")  # the reference: one process
    fold = make_folds(small_toy.index, "source_out")[0]
    erm = get_method("erm")
    one = erm(erm.Config.from_dict({**config, "grad_accum": 2}), device="cpu")
    reference = fit_and_evaluate(one, small_toy, fold, seed=0)
    alone = reference.fit_report
    assert (alone["world_size"], alone["backend"]) == (1, None)
    assert ddp["optimiser_steps"] == alone["optimiser_steps"] == 3 * 3  # 5 batches per epoch: 3 steps (of 2, 2, 1)
    assert ddp["epochs_run"] == alone["epochs_run"] and ddp["best_epoch"] == alone["best_epoch"]
    np.testing.assert_allclose(ddp["train_loss"], alone["train_loss"], rtol=1e-6)
    assert ddp["best_val_loss"] == pytest.approx(alone["best_val_loss"], rel=1e-5)
    predictions = read_predictions(record)
    assert predictions["image_id"].to_list() == reference.predictions["image_id"].to_list()
    np.testing.assert_allclose(_probs(predictions), _probs(reference.predictions), atol=1e-5)


# ----------------------------------------------------------------------------- a world of one changes nothing

GOLDEN = {  # predictions of fold 0 seed 0 (source_out), CONFIG, computed by the code before DDP existed
    "erm": "23d426002328562ce693ac01cf68f74818ba3294b938905bec93f8e2f0047049",
    "arm_bn": "e8b902a498fa748f696893d325225f01172f3196d74e2bd05f5fa275d6ee0372",
}
GOLDEN_MACHINE = ("AuthenticAMD family 25 model 1 stepping 1", "2.14.1", "2.4.6")
"""Where they were computed (CPU, torch, numpy): elsewhere other kernels give other last bits."""


def _machine() -> tuple[str | None, str, str]:
    return cpu_id(), torch.__version__.split("+")[0], np.__version__


@pytest.mark.parametrize("method", sorted(GOLDEN))
def test_without_torchrun_predictions_are_bit_identical_to_the_code_before_ddp(toy_dataset, method):
    if _machine() != GOLDEN_MACHINE or not torch.backends.cpu.get_cpu_capability().startswith("AVX2"):
        pytest.skip(f"golden predictions come from {GOLDEN_MACHINE} (AVX2); this is {_machine()}, {cpu_isa()}")
    fold = make_folds(toy_dataset.index, "source_out")[0]
    cls = get_method(method)
    result = fit_and_evaluate(cls(cls.Config.from_dict(CONFIG), device="cpu"), toy_dataset, fold, seed=0,
                              order_scheme="public-v0")  # the golden digests predate the keyed orders
    table = result.predictions
    digest = hashlib.sha256(_probs(table).tobytes() + table["image_id"].to_numpy().tobytes()).hexdigest()
    assert digest == GOLDEN[method]
    assert (result.fit_report["world_size"], result.fit_report["backend"]) == (1, None)


def test_a_world_of_one_is_an_identity():
    world = World()
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    model(torch.randn(8, 3)).sum().backward()
    before = [t.clone() for t in [*(p.grad for p in model.parameters()), *model.buffers()]]
    world.average_gradients(model.parameters())
    sync = RunningStatsSync(model, world)
    sync.start(), sync.before(0), sync.after(), sync.finish(1)
    world.broadcast_tensors(model.buffers())
    after = [*(p.grad for p in model.parameters()), *model.buffers()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert (world.broadcast(2.5), world.sum([1.0, 2.0]), world.all_true(False)) == (2.5, [1.0, 2.0], False)
    assert world.report() == {"world_size": 1, "backend": None} and world.shard("abc") == ["a", "b", "c"]


def test_shards_are_disjoint_cover_the_sequence_and_say_where_each_step_lies():
    worlds = [World(rank, 3, "gloo") for rank in range(3)]
    shares = [w.shard(range(10)) for w in worlds]
    assert sorted(i for share in shares for i in share) == list(range(10))
    assert [w.steps(10) for w in worlds] == [4, 4, 4] and [len(s) for s in shares] == [4, 3, 3]
    assert all(w.position(j) == share[j] for w, share in zip(worlds, shares) for j in range(len(share)))


@pytest.mark.parametrize("workers", [0, 1])
def test_a_ranks_share_holds_the_crops_and_flips_one_process_draws_for_those_batches(toy_dataset, workers):
    train = toy_dataset.labelled(toy_dataset.index)
    pre = Preprocessor(channel_stats(train.read(train.treated_ids()[:64])), 12, "cpu", channels_last=True)
    batches = plate_batches(train, 16, np.random.default_rng(0), n_controls=8)[:5]
    alone = list(training_steps(train, batches, pre, np.random.default_rng(1), workers))
    for world in (World(0, 2, "gloo"), World(1, 2, "gloo")):
        share = world.shard(range(len(batches)))
        mine = list(training_steps(train, batches, pre, np.random.default_rng(1), workers, share=share))
        assert len(mine) == len(share) and all(torch.equal(a.inputs, alone[i].inputs) and
                                               torch.equal(a.targets, alone[i].targets) for a, i in zip(mine, share))
    sized = epochs(train, MixedBatches(40), pre, workers, World(1, 2, "gloo"))(np.random.default_rng(2))
    assert len(sized) == math.ceil(math.ceil(len(train.treated_ids()) / 40) / 2)  # the longest share


# ----------------------------------------------------------------------------- the launch and its errors


def test_outside_a_launch_there_is_none():
    assert launch({}) is None and launch({"WORLD_SIZE": "1", "RANK": "0"}) is None


def test_a_torchrun_launch_is_read_from_its_environment():
    found = launch(_env(RANK="1", LOCAL_RANK="1", TORCHELASTIC_USE_AGENT_STORE="True"))
    assert found == Launch(1, 2, 1, "127.0.0.1", 29500, store_hosted=True) and not found.hosts_store
    own = launch({k: v for k, v in _env().items() if k != "LOCAL_RANK"})
    assert own.local_rank == 0 and own.hosts_store  # no agent store: rank 0 hosts it


@pytest.mark.parametrize("values, message", [
    ({"MASTER_ADDR": ""}, r"WORLD_SIZE=2 asks for a multi-process training, but MASTER_ADDR is not set; launch "
                          r"with torchrun"),
    ({"RANK": "one"}, r"RANK='one' is not an integer"),
    ({"RANK": "2"}, r"RANK=2 does not lie in a world of WORLD_SIZE=2 processes \(valid ranks: 0 to 1\)"),
])
def test_a_broken_launch_says_which_variable(values, message):
    with pytest.raises(DistributedError, match=message):
        launch(_env(**values))


def test_a_gpu_training_needs_a_gpu_per_local_rank(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for key, value in _env().items():
        monkeypatch.setenv(key, value)
    with pytest.raises(DistributedError, match=r"LOCAL_RANK=0 but this machine shows 0 GPU\(s\); start at most"):
        with process_group("cuda"):
            pass


def test_an_unreachable_or_taken_store_address_is_named(monkeypatch):
    found = Launch(1, 2, 1, "127.0.0.1", _free_port(), store_hosted=True)
    with pytest.raises(DistributedError, match=r"rank 1 could not reach the rendezvous store at 127\.0\.0\.1:\d+"):
        Coordinator(found, timeout_s=0.3)
    monkeypatch.setenv(HOSTED_ENV, "0")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        found = Launch(0, 2, 0, "127.0.0.1", taken.getsockname()[1], store_hosted=False)
        with pytest.raises(DistributedError, match=r"rank 0 could not host the rendezvous store at 127\.0\.0\.1"):
            Coordinator(found, timeout_s=0.3)


def test_the_ranks_follow_rank_0_and_a_divergence_is_an_error(monkeypatch):
    monkeypatch.setenv(HOSTED_ENV, "0")  # restored afterwards: rank 0's coordinator sets it
    port = _free_port()
    zero = Coordinator(Launch(0, 2, 0, "127.0.0.1", port, store_hosted=False), timeout_s=1)
    one = Coordinator(Launch(1, 2, 1, "127.0.0.1", port, store_hosted=True), timeout_s=1)
    assert os.environ[HOSTED_ENV] == "1"  # rank 0 hosts the store: its workers connect to it
    decided = zero.turn("fold 0 seed 0", fit=False)  # rank 0 holds the record
    followed = one.turn("fold 0 seed 0", fit=True)
    assert (decided.fit, followed.fit) == (False, False) and decided.key == followed.key
    with followed.environment():
        assert os.environ[RUN_ENV] == decided.key  # what a sealed worker started here inherits
    assert RUN_ENV not in os.environ
    zero.turn("fold 0 seed 1", fit=True)
    with pytest.raises(DistributedError, match="rank 1 reached fold 1 seed 0 where rank 0 reached fold 0 seed 1"):
        one.turn("fold 1 seed 0", fit=True)
    with pytest.raises(DistributedError, match="rank 1 waited in vain for rank 0 to reach fold 1 seed 1"):
        one.turn("fold 1 seed 1", fit=True)
    zero._store.set(f"{one._space}/turn3", b"not json")  # what rank 1 reads next, written by something else
    with pytest.raises(DistributedError, match="rank 1 read an unreadable decision of rank 0 for fold 2 seed 0"):
        one.turn("fold 2 seed 0", fit=True)


def test_a_data_parallel_epoch_must_say_how_many_steps_every_rank_takes():
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    unsized = lambda rng: iter([(x, y)])  # noqa: E731
    with pytest.raises(MethodError, match="data-parallel training on 2 processes needs to know how many steps"):
        train_model(model, unsized, lambda m: 0.0, TrainSettings(max_epochs=1), seed=0, world=World(0, 2, "gloo"))
    too_long = lambda rng: SizedEpoch([(x, y), (x, y)], 1)  # noqa: E731
    with pytest.raises(MethodError, match="rank 0's share of the epoch holds more than the 1 steps"):
        train_model(model, too_long, lambda m: 0.0, TrainSettings(max_epochs=1, grad_accum=2), seed=0,
                    world=World(0, 2, "gloo"))
