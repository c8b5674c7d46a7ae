"""`bench run --preset`: the preset table, config resolution through each method's fields, the record."""

import dataclasses
import importlib
import json

import pytest
from typer.testing import CliRunner

from _toy_methods import TOY_METHODS
from benchmark.cli import app
from benchmark.errors import UnknownNameError
from benchmark.methods.base import MethodConfig
from benchmark.protocol.presets import PRESETS, Preset, class_path, get_preset, preset_values
from benchmark.protocol.loop import resolve_config
from benchmark.records import load_records
from benchmark.registry import available_methods, get_method

runner = CliRunner()
PAPER = {"backbone": "resnet50", "crop": 256, "lr": 1e-3, "schedule": "constant", "max_epochs": 200, "patience": 20,
         "grad_accum": 8, "n_treated": 64, "n_controls": 128}


def shown(*args):
    r = runner.invoke(app, ["run", "-s", "source_out", "--device", "cpu", "--show-config", *map(str, args)])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_paper_preset_sets_the_reference_setting_for_cs_arm_bn():
    out = shown("-m", "cs_arm_bn", "--preset", "paper")
    assert out["preset"] == "paper" and out["device"] == "cpu"
    assert {k: out["config"][k] for k in PAPER} == PAPER


def test_fields_a_method_lacks_are_skipped_never_an_error():
    erm = shown("-m", "erm", "--preset", "paper")["config"]
    assert erm["backbone"] == "resnet50" and erm["batch_size"] == 64
    assert "n_controls" not in erm and "n_treated" not in erm
    fm = shown("-m", "fm_tvn", "--preset", "paper")["config"]
    assert fm == get_method("fm_tvn").Config().to_dict()  # no ResNet fields at all: the defaults


ERM_TRAINED = ["erm", "adabn", "tent", "deyo", "roid"]  # ERM's training (AdaBN), or ERM's source model (TTA)
ONE_PLATE = ["arm_bn", "cs_arm_bn", "ben", "arm_cml"]


@pytest.mark.parametrize("name", ERM_TRAINED)
def test_paper_preset_steps_erm_trained_methods_after_every_batch(name):
    """The reference's ERM takes an optimiser step after every mixed batch of 64: no gradient accumulation."""
    config = resolve_config(get_method(name), preset="paper")
    assert config.grad_accum == 1 and config.batch_size == 64 and config.backbone == "resnet50"


@pytest.mark.parametrize("name", ONE_PLATE)
def test_paper_preset_accumulates_eight_one_plate_batches(name):
    assert resolve_config(get_method(name), preset="paper").grad_accum == 8


def test_paper_preset_gives_every_erm_source_method_the_same_erm_config():
    """AdaBN, TENT, DeYO and ROID load the cached ERM model of the same ERM config: the preset must agree on it."""
    erm = get_method("erm")
    fields = [f.name for f in dataclasses.fields(erm.Config)]
    configs = [resolve_config(get_method(name), preset="paper") for name in ERM_TRAINED]
    assert all(get_method(name).starts_from is erm.Config for name in ERM_TRAINED)
    assert len({tuple(getattr(c, f) for f in fields) for c in configs}) == 1


def test_a_method_specific_value_wins_over_the_presets_own():
    preset = Preset("p", "test", {"lr": 0.5, "grad_accum": 8},
                    for_configs={"benchmark.methods.erm.ERMConfig": {"grad_accum": 2}})
    assert preset.values_for(get_method("tent").Config) == {"lr": 0.5, "grad_accum": 2}  # a subclass of ERMConfig
    assert preset.values_for(get_method("arm_bn").Config) == {"lr": 0.5, "grad_accum": 8}
    assert preset.values_for(get_method("fm_tvn").Config) == {}


@pytest.mark.parametrize("preset", list(PRESETS.values()), ids=lambda p: p.name)
def test_every_config_class_a_preset_names_exists(preset):
    """A renamed or moved config class would silently drop the values meant for it."""
    for path in preset.for_configs:
        module, _, name = path.rpartition(".")
        cls = getattr(importlib.import_module(module), name, None)
        assert isinstance(cls, type) and class_path(cls) == path, f"preset {preset.name}: no config class {path}"


@pytest.mark.parametrize("name", sorted({*available_methods(), *(cls.name for cls in TOY_METHODS)}))
def test_every_registered_method_accepts_every_preset(name, toy_methods):
    cls = get_method(name)
    for preset in PRESETS:
        config = resolve_config(cls, preset=preset)
        assert isinstance(config, MethodConfig)
        assert set(preset_values(preset, cls.Config)) <= set(config.to_dict())


def test_quick_and_set_apply_after_the_preset():
    out = shown("-m", "arm_bn", "--preset", "paper", "--quick", "--set", "crop=128")["config"]
    assert out["crop"] == 128                       # --set wins
    assert out["max_epochs"] == get_method("arm_bn").quick_overrides["max_epochs"]  # then --quick
    assert out["backbone"] == "resnet50" and out["n_treated"] == 64


def test_unknown_preset_lists_the_valid_ones():
    r = runner.invoke(app, ["run", "-m", "erm", "-s", "source_out", "--preset", "papr", "--show-config"])
    assert r.exit_code == 1
    assert "unknown preset 'papr'. Valid presets: paper. Did you mean 'paper'?" in r.stderr
    with pytest.raises(UnknownNameError, match="Valid presets: paper"):
        get_preset("nope")


def test_preset_name_is_recorded_in_the_run_record(toy_methods, toy_dataset, tmp_path):
    r = runner.invoke(app, ["run", "-m", "_test_centroid", "-s", "source_out", "--dataset", str(toy_dataset.root),
                            "--results", str(tmp_path / "res"), "--device", "cpu", "--folds", "0", "--seeds", "0",
                            "--preset", "paper", "-q"])
    assert r.exit_code == 0, r.output
    (rec,) = load_records(tmp_path / "res").ok
    assert rec.data["method"]["preset"] == "paper"
