"""The ``cellprofiler`` featuriser: CellProfiler features (cp_measure) of segmented cells, median per image."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cp_measure")

from benchmark.constants import CHANNELS  # noqa: E402
from benchmark.core.cells.cellprofiler import (  # noqa: E402
    DEFAULT_FAMILIES, FAMILIES, CellProfilerEncoder, Settings, cellprofiler_encoder, feature_names, image_features)
from benchmark.core.encoders.loading import available_encoder_backends, load_encoder  # noqa: E402
from benchmark.errors import BenchError  # noqa: E402

DNA, RNA = CHANNELS.index("DNA"), CHANNELS.index("RNA")


def cells_image(gain: float = 1.0, seed: int = 0) -> np.ndarray:
    """A 64 px image of 9 round cells (nucleus on DNA, textured body on the other channels), times ``gain``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    image = np.full((len(CHANNELS), 64, 64), 10.0)
    for cy in (12, 32, 52):
        for cx in (12, 32, 52):
            r = np.hypot(yy - cy + rng.uniform(-1, 1), xx - cx + rng.uniform(-1, 1))
            body, nucleus = r < 8.5, r < 4
            image[:, body] += 60 + 50 * rng.random((len(CHANNELS), int(body.sum())))
            image[DNA, body] = 10
            image[DNA, nucleus] += 120 + 40 * rng.random(int(nucleus.sum()))
            image[RNA, nucleus] += 40
    return np.clip(image * gain, 0, 255).astype(np.uint8)


def test_feature_names_are_stable_unique_and_named_as_cellprofiler_does():
    names = feature_names(Settings(families=FAMILIES))
    assert names == feature_names(Settings(families=FAMILIES)) and len(names) == 791
    default = feature_names()
    assert len(default) == CellProfilerEncoder().dim == 345 and set(default) < set(names)
    assert {n.split("_")[1] for n in default} == {"Intensity", "RadialDistribution", "Correlation"}
    assert len(set(names)) == len(names)
    assert all(n.split("_")[0] in ("Nuclei", "Cells", "Cytoplasm") for n in names)  # pycytominer infers these
    assert not [n for n in names if "Location" in n or "Center_" in n or "SpatialMoment" in n]
    for name in ("Cells_Intensity_MeanIntensity_DNA", "Nuclei_AreaShape_Area", "Cytoplasm_Intensity_MeanIntensity_RNA",
                 "Cells_Texture_Contrast_AGP_3_16", "Cells_Granularity_1_Mito", "Cells_RadialDistribution_FracAtD_ER_1of4",
                 "Cells_Correlation_Pearson_RNA_DNA", "Cells_Correlation_Manders_DNA_RNA", "Nuclei_AreaShape_Zernike_0_0"):
        assert name in names, name
    intensity_only = feature_names(Settings(families=("intensity",)))
    assert set(intensity_only) < set(names) and all("_Intensity_" in n for n in intensity_only)


def test_features_are_finite_float32_and_deterministic():
    image, every = cells_image(), Settings(families=FAMILIES)
    x = image_features(image, every)
    names = feature_names(every)
    assert x.dtype == np.float32 and x.shape == (len(names),) and np.isfinite(x).all()
    assert x[names.index("Nuclei_AreaShape_Area")] == pytest.approx(np.pi * 4 ** 2, rel=0.3)
    assert np.array_equal(x, image_features(image.copy(), every))


def test_a_brighter_image_has_higher_intensity_features():
    names = np.array(feature_names(Settings(families=("intensity",))))
    dim, bright = (image_features(cells_image(gain), Settings(families=("intensity",))) for gain in (1.0, 1.3))
    for compartment in ("Nuclei", "Cells", "Cytoplasm"):
        for channel in CHANNELS:
            for stat in ("MeanIntensity", "MedianIntensity", "IntegratedIntensity"):
                i = list(names).index(f"{compartment}_Intensity_{stat}_{channel}")
                assert bright[i] > dim[i] > 0, names[i]


def test_an_image_without_nuclei_gives_zeros():
    x = image_features(np.zeros((len(CHANNELS), 32, 32), dtype=np.uint8))
    assert x.shape == (len(feature_names()),) and not x.any()


def test_encoder_backend_specs_memo_and_digest():
    assert "cellprofiler" in available_encoder_backends()
    default, small = load_encoder("cellprofiler"), cellprofiler_encoder("sizeshape, intensity", "cuda")
    assert default.name == "cellprofiler" and default.settings.families == DEFAULT_FAMILIES
    assert cellprofiler_encoder("all", "cpu").name == "cellprofiler:all"
    assert small.name == "cellprofiler:intensity,sizeshape"  # families in FAMILIES order
    assert small.dim == len(feature_names(Settings(families=("intensity", "sizeshape")))) != default.dim
    assert small.weights_digest != default.weights_digest
    assert small.weights_digest == cellprofiler_encoder("intensity,sizeshape", "cpu").weights_digest
    images = np.stack([cells_image(), cells_image(seed=1), cells_image()])
    x = small.embed(images)
    assert x.shape == (3, small.dim) and np.array_equal(x[0], x[2])
    assert small.cost()["images"] == 2  # the repeated image is measured once
    assert set(small.cost()["breakdown_ms"]) == {"segment", "intensity", "sizeshape"}
    with pytest.raises(BenchError, match="takes uint8 images"):
        small.embed(images.astype(np.float32))
    with pytest.raises(BenchError, match="families"):
        cellprofiler_encoder("intensity,haralick", "cpu")
    assert set(FAMILIES) == {"intensity", "sizeshape", "texture", "granularity", "radial", "correlation"}
