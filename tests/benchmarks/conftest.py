"""The performance suite (pytest-benchmark): timed on request, run once as a smoke in every ``pytest`` run.

Timed (about 4 minutes on a 2-core CPU)::

    .venv/bin/pytest tests/benchmarks --benchmark-only --benchmark-json=perf.json
    .venv/bin/python scripts/perf_report.py perf.json          # -> docs/performance.md

A plain ``pytest`` runs with ``--benchmark-disable`` (pyproject's ``addopts``): every benchmark
runs its function once, untimed, on the smoke sizes (:data:`SMOKE_SIZES`, fixture ``smoke``), so a
broken benchmark fails CI. ``--benchmark-only`` asks for timings, so this conftest lifts the
``--benchmark-disable`` of ``addopts`` for it (pytest-benchmark refuses the two together);
``--benchmark-enable`` does the same from anywhere. ``--benchmark-skip`` leaves the modules here
uncollected. Data: the synthetic simulator (generated once into the platebench cache) at the CPU
default image size (64 px) and at the reference crop size (256 px).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from benchmark.datasets import load_dataset
from benchmark.datasets.dataset import Dataset

HERE = Path(__file__).parent
SIZES = {64: dict(size="tiny", sites_per_well=1, image_size=64),
         256: dict(size="tiny", n_sources=2, batches_per_source=1, plates_per_batch=1, sites_per_well=1,
                   image_size=256)}
"""Synthetic datasets of the suite by image side: 24 plates of 64 px, 2 plates of 256 px (64 sites each)."""
SMOKE_SIZES = {64: dict(size="tiny", n_sources=2, batches_per_source=2, plates_per_batch=1, sites_per_well=1,
                        image_size=48),
               256: dict(size="tiny", n_sources=2, batches_per_source=1, plates_per_batch=1, sites_per_well=1,
                         image_size=96)}
"""The smoke run's datasets (``--benchmark-disable``): 4 plates of 48 px standing in for the 64 px set (the
conformance checks' size: every method takes it), 2 plates of 96 px for the 256 px set (whose first generation
takes ~80 s); the code paths are the same at any side."""


def is_smoke(config: pytest.Config) -> bool:
    """Whether benchmarks run once, untimed (``--benchmark-disable`` without ``--benchmark-enable``)."""
    return bool(config.getoption("benchmark_disable", False)) and not config.getoption("benchmark_enable", False)


def pytest_configure(config: pytest.Config) -> None:
    """``--benchmark-only`` means timings: it lifts the ``--benchmark-disable`` of pyproject's ``addopts``."""
    if config.getoption("benchmark_only", False) and config.getoption("benchmark_disable", False):
        config.option.benchmark_enable = True


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Do not even import the performance suite's modules under ``--benchmark-skip``."""
    skipped = config.getoption("benchmark_skip", False) and not config.getoption("benchmark_only", False)
    if skipped and collection_path.suffix == ".py" and collection_path.parent == HERE:
        return True
    return None


@pytest.fixture(scope="session")
def smoke(request) -> bool:
    """True when the suite runs as a smoke (each benchmark once, untimed): benchmarks pick their small sizes."""
    return is_smoke(request.config)


@pytest.fixture(autouse=True)
def _restore_threads():
    """Every benchmark starts and ends with the same torch thread count."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class _Datasets(dict):
    """The suite's synthetic datasets by image side, opened (or generated) on first use."""

    def __init__(self, sizes: dict[int, dict]):
        super().__init__()
        self.sizes = sizes

    def __missing__(self, side: int) -> Dataset:
        self[side] = load_dataset("synthetic", progress=False, **self.sizes[side])
        return self[side]


@pytest.fixture(scope="session")
def datasets(smoke) -> dict[int, Dataset]:
    """The suite's synthetic datasets by image side (cached in the platebench cache after the first run)."""
    return _Datasets(SMOKE_SIZES if smoke else SIZES)


@pytest.fixture(scope="session")
def tiff_sites(datasets, tmp_path_factory) -> dict[int, list[Path]]:
    """The reference layout: every image of the suite's loader plates as one deflate TIFF per site."""
    out = {}
    for side in SIZES:
        dataset = datasets[side]
        folder = tmp_path_factory.mktemp(f"tiff{side}")
        paths = []
        for image_id in range(len(dataset.index)):
            path = folder / f"site_{image_id:06d}.tiff"
            tifffile.imwrite(path, dataset.read(np.array([image_id]))[0], compression="zlib",
                             photometric="minisblack", planarconfig="separate")
            paths.append(path)
        out[side] = paths
    return out


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Record what the numbers depend on: CPU model, cores, torch version and threads, load."""
    import os
    import platform

    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    machine_info["platebench"] = {
        "cpu_model": model, "cpu_cores": os.cpu_count(), "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }
