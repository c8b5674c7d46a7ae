"""The ResNet methods declare their choices along the shared axes, and none borrows another's mechanism."""

from __future__ import annotations

import pytest

from benchmark.core.recipe.bn_policies import BatchStatistics, ChunkStats, ControlRows, ControlStats, PlateStats, RunningStats
from benchmark.core.training.sampler import MixedBatches, OnePlateBatches, PlateContext
from benchmark.core.training.loop import cross_entropy_loss
from benchmark.registry import available_methods, get_method

EXPECTED = {  # method, overrides -> (batches, training BN, validation BN, test BN)
    ("erm", ()): (MixedBatches(32), BatchStatistics(), RunningStats(), RunningStats()),
    ("adabn", ()): (MixedBatches(32), BatchStatistics(), RunningStats(), PlateStats(PlateContext(256), min_treated=2)),
    ("arm_bn", ()): (OnePlateBatches(PlateContext(32)), BatchStatistics(), ChunkStats(PlateContext(32)),
                     ChunkStats(PlateContext(32))),
    ("arm_bn", (("full_domain_stats", True),)): (OnePlateBatches(PlateContext(32)), BatchStatistics(),
                                                 ChunkStats(PlateContext(32)), PlateStats(PlateContext(32))),
    ("cs_arm_bn", ()): (OnePlateBatches(PlateContext(32, 64)), BatchStatistics(), ChunkStats(PlateContext(32, 64)),
                        ChunkStats(PlateContext(32, 64))),
    ("cs_arm_bn", (("full_domain_stats", True),)): (OnePlateBatches(PlateContext(32, 64)), BatchStatistics(),
                                                    ChunkStats(PlateContext(32, 64)), PlateStats(PlateContext(32, 64))),
    ("ben", ()): (OnePlateBatches(PlateContext(32, 32)), ControlRows(), ControlStats(), ControlStats()),
}


@pytest.mark.parametrize("key", list(EXPECTED), ids=lambda k: k[0] + "".join(f"+{n}" for n, _ in k[1]))
def test_recipe_declares_the_methods_choices(key):
    name, overrides = key
    cls = get_method(name)
    recipe = cls(cls.Config(**dict(overrides))).recipe()
    assert (recipe.batches, recipe.training_norm, recipe.validation, recipe.test) == EXPECTED[key]
    assert recipe.loss is cross_entropy_loss


def test_no_built_in_method_subclasses_another():
    methods = {n: c for n, c in available_methods().items() if c.__module__.startswith("benchmark.methods.")}
    assert {"erm", "adabn", "arm_bn", "cs_arm_bn", "ben"} <= set(methods)
    borrowed = [(a, b) for a, cls in methods.items() for b, other in methods.items()
                if a != b and issubclass(cls, other)]
    assert not borrowed, f"methods subclassing another method: {borrowed}; compose the core's mechanisms instead"
