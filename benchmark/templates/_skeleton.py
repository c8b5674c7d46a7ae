"""The text of the files ``bench methods new`` writes (``str.format`` fields: name, cls, package)."""

METHOD = '''"""{name} — one line on what the method does (Author et al. YEAR, "Paper title").

Access: ``none``. Say in a few sentences what the method learns in ``fit`` from the
labelled training plates, what it takes from a target plate in ``adapt``, and how
``predict`` turns a treated image into class probabilities.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from benchmark.datasets.dataset import LabelledImages, PlateView
from benchmark.methods.base import AccessLevel, Method, MethodConfig
from benchmark.registry import register_method


@dataclasses.dataclass(frozen=True)
class {cls}Config(MethodConfig):
    """{name} hyper-parameters: every field has a default and a one-line comment."""

    temperature: float = 1.0  # example hyper-parameter: softmax temperature


# A ResNet classifier whose BN statistics or training batches are what makes it new? Subclass
# benchmark.methods._convnet.ConvNetMethod instead and declare recipe() from the shared mechanisms
# of benchmark.core (sampler, bn_policies, tta, recipe): methods/adabn.py is 40 lines.
@register_method
class {cls}(Method):
    """One line: the method in a sentence."""

    name = "{name}"
    access = AccessLevel.NONE  # NONE: nothing of the target plate; CONTROLS: its DMSO images; UNLABELED: all
    # its images; TRANSDUCTIVE: also label-free views of the target plates in fit (train.targets)
    description = "one line shown by `bench methods list`"
    Config = {cls}Config
    config: {cls}Config
    quick_overrides = {{}}  # config changes for `bench run --quick` and `bench methods check` (e.g. fewer epochs)

    def fit(self, train: LabelledImages, val: LabelledImages, seed: int) -> {cls}:
        """Learn from the labelled training plates; select hyper-parameters with ``val`` only."""
        # train.plates, train.treated_ids(plate), train.control_ids(plate), train.read(ids), train.labels(ids)
        # store what you learn in attributes ending in "_" and return self
        raise NotImplementedError("fill in {name}.fit")

    def adapt(self, plate: PlateView) -> {cls}:
        """Prepare for one target plate (plate.plate, plate.treated, plate.controls); forget the previous one."""
        raise NotImplementedError("fill in {name}.adapt")

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 8) for treated images (N, 5, H, W) uint8 of the adapted plate."""
        raise NotImplementedError("fill in {name}.predict")
'''

TEST = '''"""Tests of the {name} method: the platebench conformance checks, then tests of what it claims."""

import importlib

import pytest

from benchmark.conformance.checks import CHECKS, assert_check
from benchmark.registry import available_methods

if "{name}" not in available_methods():
    importlib.import_module("{name}")  # the method file next to this test, not installed yet


@pytest.mark.parametrize("check", list(CHECKS))
def test_{name}_conformance(check):
    assert_check("{name}", check)
'''

PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{package}"
version = "0.1.0"
description = "The {name} batch-correction method for platebench"
requires-python = ">=3.10"
dependencies = ["platebench"]

[project.entry-points."platebench.methods"]
{name} = "{name}"

[tool.setuptools]
py-modules = ["{name}"]
'''
