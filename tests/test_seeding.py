"""Seeds keyed by names (benchmark.seeding): their definitions, and the generators built on them draw what they drew."""

from __future__ import annotations

import hashlib
import zlib

import numpy as np

from benchmark.core.recipe.bn_policies import plate_generator
from benchmark.core.recipe.tta import pass_generator
from benchmark.calibration.label_shift_cut import plate_rng
from benchmark.scenarios.base import case_rng
from benchmark.seeding import name_key, plate_entropy


def test_plate_entropy_is_the_seed_the_crc32_of_the_name_and_the_streams():
    assert plate_entropy(3, "src1_b0_p1") == [3, zlib.crc32(b"src1_b0_p1")]
    assert plate_entropy(3, "src1_b0_p1", 2, 5) == [3, zlib.crc32(b"src1_b0_p1"), 2, 5]


def test_name_key_is_64_bits_of_the_sha256_of_the_text():
    assert name_key("abc") == int.from_bytes(hashlib.sha256(b"abc").digest()[:8], "little")
    assert name_key("abc") != name_key("abd") and 0 <= name_key("abc") < 2 ** 64


def _draw(rng: np.random.Generator) -> list[int]:
    return rng.integers(0, 2 ** 31, size=4).tolist()


def test_the_per_plate_generators_draw_from_their_documented_keys():
    """Pins every committed record's draws: a changed key would move label-shift cuts, BN contexts and TTA passes."""
    plate = "src2_b1_p0"
    crc = zlib.crc32(plate.encode())
    assert _draw(pass_generator(1, plate)) == _draw(np.random.default_rng([1, crc]))
    assert _draw(plate_generator(1, plate, 2)) == _draw(np.random.default_rng([1, crc, 2]))
    sha = int.from_bytes(hashlib.sha256(plate.encode()).digest()[:8], "little")
    assert _draw(plate_rng(plate, 4)) == _draw(np.random.default_rng([4, sha]))
    text = f"platebench-scenario|label_shift|0.1|{plate}"
    assert _draw(case_rng("label_shift", "0.1", plate)) == _draw(
        np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")))
