"""The source-model cache: a hit loads the very weights ERM trained; corrupt, truncated or mismatched entries are
detected and retrained; only the run's own fold's models folder is open to a sealed worker."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from _method_data import split, view
from benchmark.core.training.model_cache import (FoldIdentity, SourceCache, current_fold, fold_scope, key_digest,
                                                 training_code_digest)
from benchmark.methods.adabn import AdaBN
from benchmark.methods.erm import ERM
from benchmark.methods.tent import Tent
from benchmark.sealed.audit import VIOLATION_EXIT, Hook
from benchmark.sealed.foldstore import models_path
from benchmark.sealed.policy import MODELS_WHAT, protected_files, run_policy
from benchmark.sealed.worker import fold_identity

QUICK = dict(threads=1, crop=0, max_epochs=1, patience=1, lr=3e-3, schedule="constant")
KEY = {"fold": {"dataset": "toy", "fold": 0}, "seed": 0, "config": {"lr": 0.01}}


def _identity(folder) -> FoldIdentity:
    return FoldIdentity(dataset="toy", fingerprint="f00", split="source_out", split_seed=0, fold=0,
                        digest="abc", folder=str(folder))


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(5, 4, 3), torch.nn.BatchNorm2d(4)).to(memory_format=torch.channels_last)
    return model.state_dict()


# -- the cache on its own ---------------------------------------------------------------------------------------

def test_a_saved_entry_loads_bit_for_bit_with_its_report(tmp_path):
    cache, state = SourceCache(tmp_path), _state()
    weights = cache.save(KEY, state, {"best_val_loss": 1.5})
    assert weights.suffix == ".safetensors" and sorted(p.name for p in tmp_path.iterdir()) == \
        sorted(p.name for p in cache.paths(KEY))  # no temporary file left behind
    desc = json.loads(cache.paths(KEY)[1].read_text())
    assert desc["key"] == KEY and len(desc["sha256"]) == 64
    entry = cache.load(KEY, state)
    assert entry is not None and entry.report == {"best_val_loss": 1.5}
    assert all(torch.equal(entry.state[k], v) for k, v in state.items())


def test_a_missing_entry_is_a_miss_and_other_keys_do_not_collide(tmp_path):
    cache, state = SourceCache(tmp_path), _state()
    assert cache.load(KEY, state) is None
    cache.save(KEY, state, {})
    other = {**KEY, "seed": 1}
    assert cache.paths(other) != cache.paths(KEY) and cache.load(other, state) is None
    assert key_digest(KEY) == key_digest(json.loads(json.dumps(KEY)))


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "wrong key", "bad json", "no weights"])
def test_a_damaged_or_mismatched_entry_is_detected_reported_and_removed(tmp_path, capsys, damage):
    cache, state = SourceCache(tmp_path), _state()
    cache.save(KEY, state, {})
    weights, meta = cache.paths(KEY)
    if damage == "flip a byte":
        data = bytearray(weights.read_bytes())
        data[-3] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "wrong key":
        desc = json.loads(meta.read_text())
        meta.write_text(json.dumps({**desc, "key": {**KEY, "seed": 7}}))
    elif damage == "bad json":
        meta.write_text("{not json")
    else:
        weights.unlink()
    assert cache.load(KEY, state) is None
    assert "source-model cache" in capsys.readouterr().err
    assert not weights.exists() and not meta.exists()


def test_an_entry_that_does_not_fit_the_model_is_retrained(tmp_path, capsys):
    cache, state = SourceCache(tmp_path), _state()
    cache.save(KEY, state, {})
    bigger = {k: torch.zeros(v.numel() + 1, dtype=v.dtype) if v.dim() else v for k, v in state.items()}
    assert cache.load(KEY, bigger) is None
    assert "does not fit the model" in capsys.readouterr().err


def test_fold_scope_and_training_code_digest():
    assert current_fold() is None
    with fold_scope(_identity("/x")):
        assert current_fold().fold == 0 and "folder" not in current_fold().key()
    assert current_fold() is None
    assert len(training_code_digest()) == 64 and training_code_digest() == training_code_digest()


def test_training_code_digest_covers_the_training_packages_only(tmp_path, monkeypatch):
    """Editing a module of core/training or core/recipe changes the digest; editing core/profiles does not."""
    import importlib.util
    import shutil
    from types import SimpleNamespace

    import benchmark
    from benchmark.core.training import model_cache

    root = Path(benchmark.__file__).parent
    copy = tmp_path / "benchmark"
    shutil.copytree(root / "core", copy / "core", ignore=shutil.ignore_patterns("__pycache__"))
    find_spec = importlib.util.find_spec

    def in_the_copy(name: str):  # the digest reads the copy of benchmark/core instead of the installed one
        spec = find_spec(name)
        origin = Path(spec.origin)
        return SimpleNamespace(origin=str(copy / origin.relative_to(root))) if origin.is_relative_to(root / "core") \
            else spec

    monkeypatch.setattr(importlib.util, "find_spec", in_the_copy)
    digest = model_cache.training_code_digest.__wrapped__  # past the lru_cache
    before = digest()
    assert before == model_cache.training_code_digest()  # the copy is byte-identical to the installed package
    tvn = copy / "core" / "profiles" / "tvn.py"
    tvn.write_text(tvn.read_text() + "# edit\n")
    assert digest() == before
    (copy / "core" / "recipe" / "new_axis.py").write_text("# a new module of the recipe package\n")
    assert digest() != before


# -- methods that start from ERM ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fresh(toy_dataset):
    """AdaBN fitted with no cache (in process), its predictions on a target plate, and ERM's weights."""
    train, val, target = split(toy_dataset)
    method = AdaBN(AdaBN.Config(**QUICK)).fit(train, val, seed=0)
    erm = ERM(ERM.Config(**QUICK)).fit(train, val, seed=0)
    return method, erm, _predict(method, toy_dataset, target)


def _predict(method, dataset, target) -> np.ndarray:
    v, _ = view(dataset, target, "src3_b0_p0")
    return method.adapt(v).predict(v.treated[:])


def test_adabn_loads_the_cached_erm_model_with_bit_identical_predictions(fresh, toy_dataset, tmp_path, capsys):
    method, erm, expected = fresh
    assert method.fit_report()["source_model"]["cached"] is False  # in process: nothing cached
    assert all(torch.equal(erm.model_.state_dict()[k], v) for k, v in method.model_.state_dict().items())
    train, val, target = split(toy_dataset)
    with fold_scope(_identity(tmp_path)):
        first = AdaBN(AdaBN.Config(**QUICK)).fit(train, val, seed=0)
        second = AdaBN(AdaBN.Config(**QUICK)).fit(train, val, seed=0)
        tent = Tent(Tent.Config(**QUICK)).fit(train, val, seed=0)  # another method, the same source model
    assert first.fit_report()["source_model"]["cached"] is False and "saved" in first.fit_report()["source_model"]
    for hit in (second, tent):
        report = hit.fit_report()
        assert report["source_model"]["cached"] is True
        assert report["best_val_loss"] == method.fit_report()["best_val_loss"]
        assert all(torch.equal(erm.model_.state_dict()[k], v) for k, v in hit.model_.state_dict().items())
    np.testing.assert_array_equal(_predict(second, toy_dataset, target), expected)
    # corrupt it: detected, retrained, saved again, the same predictions
    weights = next(tmp_path.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with fold_scope(_identity(tmp_path)):
        third = AdaBN(AdaBN.Config(**QUICK)).fit(train, val, seed=0)
    assert "SHA-256" in capsys.readouterr().err and third.fit_report()["source_model"]["cached"] is False
    np.testing.assert_array_equal(_predict(third, toy_dataset, target), expected)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


def test_the_key_holds_the_fold_seed_erm_config_training_and_code(tmp_path):
    method = AdaBN(AdaBN.Config(**QUICK))
    assert method._source_key(0) is None  # no fold scope: no caching
    with fold_scope(_identity(tmp_path)):
        key = method._source_key(0)
        tent_key = Tent(Tent.Config(**QUICK, tta_lr=0.5))._source_key(0)  # a test-time setting: the same model
        assert key == tent_key
        assert AdaBN(AdaBN.Config(**QUICK))._source_key(1) != key
        assert AdaBN(AdaBN.Config(**{**QUICK, "lr": 1e-3}))._source_key(0) != key
    with fold_scope(dataclasses.replace(_identity(tmp_path), fold=1)):
        assert method._source_key(0) != key
    assert key["code"] == training_code_digest() and key["training"]["validation"] == "RunningStats()"
    assert set(key["config"]) == {f.name for f in dataclasses.fields(ERM.Config)}


# -- the sealed worker's access -----------------------------------------------------------------------------

class Stopped(Exception):
    pass


def test_the_hook_reads_only_the_runs_own_models_folder_and_never_writes_it(toy_dataset, tmp_path):
    cache = tmp_path / "cache"
    mine = cache / "sealed" / "toy-f00" / "source_out-seed0" / "fold0-abc"
    other = cache / "sealed" / "toy-f00" / "source_out-seed0" / "fold1-def"
    for folder in (mine, other):
        folder.mkdir(parents=True)
        models_path(folder).mkdir(parents=True)
        (models_path(folder) / "erm-1.safetensors").write_bytes(b"w")
    assert models_path(mine) == cache.resolve() / "models" / "toy-f00" / "source_out-seed0" / "fold0-abc"
    assert models_path(tmp_path / "elsewhere") is None
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    r, w = os.pipe()

    def stop(code):
        raise Stopped(code)

    policy = run_policy(protected_files(toy_dataset, cache), mine, models_path(mine), [])
    hook = Hook(dataclasses.replace(policy, writable=(str(scratch),)), w, exit=stop)
    try:
        own = models_path(mine)
        for event, args in [("open", (str(own / "erm-1.safetensors"), "rb", 0)), ("os.listdir", (str(own),)),
                            ("open", (str(scratch / "models" / "new"), "wb", 0))]:
            hook(event, args)  # allowed: nothing raised
        for event, args in [("open", (str(own / "new"), "wb", 0)), ("os.remove", (str(own / "erm-1.safetensors"),)),
                            ("open", (str(models_path(other) / "erm-1.safetensors"), "rb", 0)),
                            ("os.listdir", (str(cache / "models"),)), ("os.mkdir", (str(cache / "models" / "x"),)),
                            ("open", (str(other / "index.parquet"), "rb", 0))]:
            with pytest.raises(Stopped) as stopped:
                hook(event, args)
            assert stopped.value.args == (VIOLATION_EXIT,)
            (n,) = struct.unpack("!i", os.read(r, 4))
            line = os.read(r, n).decode()
            if "fold1-def/erm-1" in str(args[0]):
                assert MODELS_WHAT in line
            if args[0] == str(own / "new"):
                assert "write outside the run's scratch folder" in line
    finally:
        os.close(r)
        os.close(w)


def test_the_worker_names_its_fold_and_its_models_folder(tmp_path):
    settings = {"sealed_fold": {"dataset": "toy", "fingerprint": "f00", "split": "source_out", "split_seed": 0,
                                "fold": 2, "digest": "abc"}}
    identity = fold_identity(settings, str(tmp_path / "scratch" / "models"))
    assert identity == FoldIdentity("toy", "f00", "source_out", 0, 2, "abc", str(tmp_path / "scratch" / "models"))
    assert fold_identity({}, str(tmp_path)) is None


# -- through the sealed worker -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One cache for this module's sealed runs: one zygote and one sealed store of fold 1 serve them all."""
    return tmp_path_factory.mktemp("model-cache") / "cache"


@pytest.fixture
def sealed_cache(shared_cache, monkeypatch) -> Path:
    """``$PLATEBENCH_CACHE`` = the module's cache, its source-model cache emptied (the folders stay: the running
    zygote binds them), so each test starts with no cached model."""
    monkeypatch.setenv("PLATEBENCH_CACHE", str(shared_cache))
    models = shared_cache / "models"
    for path in sorted(models.rglob("*"), reverse=True) if models.is_dir() else ():
        if path.is_file():
            path.unlink()
    return shared_cache


def test_sealed_runs_cache_the_erm_model_once_per_fold_and_seed(toy_dataset, tmp_path, sealed_cache):
    from benchmark.protocol.loop import run_protocol
    from benchmark.records import load_records, read_predictions

    reports, predictions = {}, {}
    for i, name in enumerate(["adabn", "adabn", "tent"]):
        (outcome,) = run_protocol(name, "source_out", toy_dataset, seeds=[0], folds=[1], device="cpu",
                                  results_dir=tmp_path / f"res{i}", quick=True, overrides={"crop": "0"})
        assert outcome.status == "ok", outcome.error
        (record,) = load_records(tmp_path / f"res{i}").quick
        reports[i], predictions[i] = record.data["fit_report"], read_predictions(record)
    assert reports[0]["source_model"]["cached"] is False and reports[0]["source_model"]["saved"]
    assert reports[1]["source_model"]["cached"] is True and reports[2]["source_model"]["cached"] is True
    assert reports[1]["source_model"]["key"] == reports[0]["source_model"]["key"] == reports[2]["source_model"]["key"]
    assert predictions[1].equals(predictions[0])  # AdaBN from the cache: bit-identical predictions
    (weights,) = (sealed_cache / "models").rglob("*.safetensors")
    assert weights.parent.name.startswith("fold1-") and weights.parent.parent.name == "source_out-seed0"


def test_only_built_in_methods_get_the_models_folder(toy_dataset, tmp_path, sealed_cache, monkeypatch):
    import _toy_methods
    from benchmark.method_info import info_of
    from benchmark.sealed import runs as sealed_runs
    from benchmark.sealed.runs import SealedRuns
    from benchmark.splits import make_folds

    monkeypatch.setattr(sealed_runs, "zygote_for", lambda kind, readable: None)  # specs only: no worker starts
    runs = SealedRuns(toy_dataset, 0, cache=sealed_cache)
    fold = make_folds(toy_dataset.index, "source_out")[0]
    tent = runs.host(info_of(Tent, Tent.Config()), fold)
    local = runs.host(info_of(_toy_methods.Centroid, _toy_methods.Centroid.Config()), fold)
    assert tent.models is not None and tent.models.is_dir() and str(tent.models) in tent._spec["policy"]["readable"]
    assert local.models is None and local._spec["models"] is None
    in_cache = [p for p in local._spec["policy"]["readable"] if str(sealed_cache) in p]
    assert in_cache and not any("models" in p for p in in_cache)  # its fold's store, not the models folder


def test_the_evaluator_checks_every_cache_file_a_worker_hands_back(tmp_path):
    from benchmark.errors import LeakageError
    from benchmark.sealed import outbox

    good = {"name": "model-0123456789abcdef01234567.json", "size": 2}
    stored = outbox.store(tmp_path / "models", outbox.check([good], [np.frombuffer(b"{}", dtype=np.uint8)]))
    assert stored == [good["name"]] and (tmp_path / "models" / good["name"]).read_text() == "{}"
    for names, blob, why in [
            ([{"name": "../../evil.json"}], b"{}", "not a cache file"),
            ([{"name": "model-0123456789abcdef01234567.pkl"}], b"x", "not a cache file"),
            ([{"name": "model-0123456789abcdef01234567.json"}], b"[1]", "not a JSON object"),
            ([{"name": "model-0123456789abcdef01234567.safetensors"}], b"\xff" * 16, "header overruns"),
            ([{"name": "emb-0123456789abcdef-0123456789abcdef01234567.npz"}], b"not a zip", "does not parse")]:
        with pytest.raises(LeakageError, match=why):
            outbox.check(names, [np.frombuffer(blob, dtype=np.uint8)])


def test_a_method_of_its_own_model_is_scored_again_from_the_cache_with_identical_results(toy_dataset, tmp_path,
                                                                                         sealed_cache):
    """ARM-BN caches its own model (not shared with ERM); adding a scenario block loads it instead of training."""
    from benchmark.protocol.loop import run_protocol
    from benchmark.records import load_records, read_predictions

    kw = dict(seeds=[0], folds=[1], device="cpu", results_dir=tmp_path / "res", quick=True,
              overrides={"crop": "0"})
    (first,) = run_protocol("arm_bn", "source_out", toy_dataset, **kw)
    (record,) = load_records(tmp_path / "res").quick
    before, predictions = record.data, read_predictions(record)
    assert before["fit_report"]["source_model"]["cached"] is False and "scenarios" in before
    (again,) = run_protocol("arm_bn", "source_out", toy_dataset, scenarios="support", **kw)
    assert again.status == "ok", again.error
    (record,) = load_records(tmp_path / "res").quick
    after = record.data
    assert after["fit_report"]["source_model"]["cached"] is True
    assert after["fit_report"]["train_seconds"] == before["fit_report"]["train_seconds"]  # the training's own time
    for part in ("out_of_domain", "in_domain", "per_source"):
        assert after["metrics"][part] == before["metrics"][part]
    assert read_predictions(record).equals(predictions)
    assert after["scenarios"]["support"]["levels"]["8"]["status"] == "ok"
    names = {p.name.split("-")[0] for p in (sealed_cache / "models").rglob("*.json")}
    assert names == {"model"}


@pytest.mark.parametrize("method", ["deep_coral", "dann"])
def test_methods_whose_loss_is_an_object_run_sealed_and_cache_their_model(method, toy_dataset, tmp_path, sealed_cache):
    """Deep CORAL's and DANN's losses are dataclass instances (no ``__qualname__``): the key names them by repr."""
    from benchmark.protocol.loop import run_protocol

    (outcome,) = run_protocol(method, "source_out", toy_dataset, seeds=[0], folds=[1], device="cpu",
                              results_dir=tmp_path / "res", quick=True, overrides={"crop": "0"})
    assert outcome.status == "ok", outcome.error
    (description,) = (sealed_cache / "models").rglob("model-*.json")
    assert "Loss: " in description.read_text() and "weight=" in description.read_text()
