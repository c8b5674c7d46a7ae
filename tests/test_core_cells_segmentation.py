"""Nuclei and cell segmentation (benchmark.core.cells.segmentation) on drawn images with known nuclei."""

from __future__ import annotations

import numpy as np
import pytest

from _cells import DNA, RADIUS, RNA, cell_image, centres
from benchmark.constants import CHANNELS
from benchmark.core.cells.segmentation import CYTOPLASM, NUCLEI, segment, segment_cells, segment_nuclei
from benchmark.errors import MethodError

SIZE = 48


def _label_at(labels: np.ndarray, centre: tuple[float, float]) -> int:
    return int(labels[int(centre[1]), int(centre[0])])


@pytest.mark.parametrize("n", [1, 4, 9])
def test_every_drawn_nucleus_is_found_once(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        where = centres(rng, n, SIZE)
        nuclei = segment_nuclei(cell_image(rng, where, SIZE)[DNA])
        assert nuclei.dtype == np.int32 and nuclei.max() == n and set(np.unique(nuclei)) == set(range(n + 1))
        assert sorted(_label_at(nuclei, c) for c in where) == list(range(1, n + 1))  # one label per nucleus


@pytest.mark.parametrize("dome", [True, False], ids=["bright-centre", "flat-saturated"])
def test_touching_nuclei_are_split(dome):
    rng = np.random.default_rng(1)
    gap = 1.8 * RADIUS  # centres closer than a diameter: the disks touch along a chord
    pairs = [((10, 12), (10 + gap, 12)), ((30, 34), (30, 34 + gap)), ((12, 36), (12 + gap * 0.7, 36 + gap * 0.7))]
    where = [c for pair in pairs for c in pair]
    image = cell_image(rng, where, SIZE, dome=dome)
    assert (image[DNA] > 100).sum() > 0
    nuclei = segment_nuclei(image[DNA])
    assert nuclei.max() == len(where)
    for a, b in pairs:
        assert _label_at(nuclei, a) > 0 and _label_at(nuclei, b) > 0 and _label_at(nuclei, a) != _label_at(nuclei, b)


@pytest.mark.parametrize("image", ["blank", "noise", "constant"])
def test_an_image_without_nuclei_has_none(image):
    rng = np.random.default_rng(2)
    pixels = {"blank": cell_image(rng, [], SIZE), "noise": rng.integers(0, 256, (5, SIZE, SIZE), dtype=np.uint8),
              "constant": np.full((5, SIZE, SIZE), 7, dtype=np.uint8)}[image]
    found = segment(pixels)
    assert found.count == 0 and not found.nuclei.any() and not found.cells.any()


def test_cells_grow_from_their_nuclei_within_the_cytoplasm():
    rng = np.random.default_rng(3)
    where = centres(rng, 6, SIZE)
    image = cell_image(rng, where, SIZE)
    nuclei = segment_nuclei(image[DNA])
    cells = segment_cells(nuclei, image[RNA])
    assert cells.dtype == np.int32 and set(np.unique(cells)) == set(np.unique(nuclei))
    assert np.array_equal(cells[nuclei > 0], nuclei[nuclei > 0])  # every cell holds its own nucleus, whole
    areas = np.bincount(cells.ravel())[1:]
    nucleus_areas = np.bincount(nuclei.ravel())[1:]
    assert (areas > 2 * nucleus_areas).all()  # grown into the cytoplasm (drawn 2.6x as wide)
    y, x = np.mgrid[:SIZE, :SIZE] + 0.5
    far = np.min([np.hypot(x - cx, y - cy) for cx, cy in where], axis=0) > 3.5 * RADIUS
    assert not cells[far].any()  # limited to the stained foreground


def test_segment_reads_dna_and_rna_by_channel_name():
    assert CHANNELS[NUCLEI] == "DNA" and CHANNELS[CYTOPLASM] == "RNA"
    rng = np.random.default_rng(4)
    image = cell_image(rng, centres(rng, 5, SIZE), SIZE)
    found = segment(image)
    assert found.count == 5 and np.array_equal(found.nuclei, segment_nuclei(image[DNA]))
    assert np.array_equal(found.cells, segment_cells(found.nuclei, image[RNA]))
    only_dna = np.where(np.arange(5)[:, None, None] == DNA, image, image[:, :1, :1])
    assert segment(only_dna).count == 5  # the nuclei are counted on DNA
    no_dna = image.copy()
    no_dna[DNA] = image[DNA, 0, 0]
    assert segment(no_dna).count == 0  # and on nothing else
    with pytest.raises(ValueError, match=r"expected one image \(5, H, W\)"):
        segment(image[:3])
    with pytest.raises(ValueError, match="differ in shape"):
        segment_cells(found.nuclei, image[RNA, :10])


def test_counts_follow_the_simulators_true_nuclei():
    """On rendered synthetic sites (64 px, one lab's microscope) the count tracks the nuclei the simulator drew."""
    from benchmark.datasets.synthetic import generate
    from benchmark.datasets.synthetic.cells import draw_cells
    from benchmark.datasets.synthetic.config import SimulatorConfig

    config, sites, size = SimulatorConfig(), 2, 64
    microscope = generate.source_microscopes(config)[1]
    wells = generate.plate_wells(config, 1, 0, 0)[:48]
    images = generate.render_wells(config.biology, microscope, wells, sites, size, config.severity,
                                   config.technical.site_defocus_spread, np.random.default_rng(0),
                                   np.random.default_rng(1), np.random.default_rng(2))
    tables = draw_cells(np.random.default_rng(0), config.biology, [w.phenotype for w in wells], sites, size,
                        np.array([w.density for w in wells]), microscope.scale)  # render_wells' first draw
    x, y, site = tables.nuclei["cx"], tables.nuclei["cy"], tables.nuclei["site"]
    truth = np.bincount(site[(x >= 0) & (x < size) & (y >= 0) & (y < size)], minlength=len(images))
    counts = np.array([segment_nuclei(image[DNA]).max() for image in images])
    assert np.corrcoef(counts, truth)[0, 1] > 0.75 and np.abs(counts - truth).mean() < 2.5


def test_without_scikit_image_the_error_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "skimage.filters", None)  # an import of it raises ImportError
    with pytest.raises(MethodError, match=r"cell segmentation needs scikit-image .*pip install 'scikit-image"):
        segment_nuclei(np.zeros((8, 8), dtype=np.uint8) + np.eye(8, dtype=np.uint8))
