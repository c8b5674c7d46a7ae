"""The performance suite (pytest-benchmark): opt-in, never part of the default ``pytest`` run.

Run it with (about 4 minutes on a 2-core CPU)::

    .venv/bin/pytest tests/benchmarks --benchmark-only --benchmark-json=perf.json
    .venv/bin/python scripts/perf_report.py perf.json          # -> docs/performance.md

Without ``--benchmark-only`` (or ``--benchmark-enable``) the modules here are not even
collected, so a plain ``pytest`` stays fast. Data: the synthetic
simulator (generated once into the platebench cache) at the CPU default image size
(64 px) and at the reference crop size (256 px).
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


def _enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_only", False) or config.getoption("benchmark_enable", False))


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Do not even import the performance suite's modules unless benchmarks were asked for."""
    if not _enabled(config) and collection_path.suffix == ".py" and collection_path.parent == HERE:
        return True
    return None


@pytest.fixture(autouse=True)
def _restore_threads():
    """Every benchmark starts and ends with the same torch thread count."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class _Datasets(dict):
    """The suite's synthetic datasets by image side, opened (or generated) on first use."""

    def __missing__(self, side: int) -> Dataset:
        self[side] = load_dataset("synthetic", progress=False, **SIZES[side])
        return self[side]


@pytest.fixture(scope="session")
def datasets() -> dict[int, Dataset]:
    """The suite's synthetic datasets by image side (cached in the platebench cache after the first run)."""
    return _Datasets()


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
