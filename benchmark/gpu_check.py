"""GPU checks of the CUDA path (issue 15, item 3): one unattended run that measures it and writes a markdown report.

``python -m benchmark.gpu_check [REPORT] [--cpu-smoke]`` (or ``scripts/gpu_check.sh``) runs, each stage in its own
process with its own time box, so that a crash, a hang or an out-of-memory error fails only that stage:

1. ``loader`` — the packed store (memory-mapped shards) against one 5-channel TIFF per site at 256 px: images/s
   read and decoded, in this process and through a DataLoader with worker processes, from a cold page cache
   (evicted with ``posix_fadvise``) and a warm one;
2. ``resnet50`` — ResNet-50 training steps (Adam, cross-entropy, ``loss.item()`` every step as in
   :func:`benchmark.core.training.train_model`) at 256 px, batch 64, bf16 autocast + channels-last, with cuDNN
   deterministic (the project's setting) and with ``cudnn.benchmark``, and float32 for comparison;
3. ``data_wait`` — the share of each training step spent waiting for data with the real loader
   (:func:`benchmark.core.loader.epochs`, :func:`~benchmark.core.training.train_model`) on a packed store of
   512 px images cropped to 256 px, as a prepared JUMP store holds them;
4. ``paper`` — ``bench run --preset paper --set max_epochs=2`` of ERM, CS-ARM-BN, BEN and ARM-BN on fold 0 of a small
   simulated dataset of 256 px images (``synth``, generated at the start, in parallel with stages 1-3);
5. peak GPU memory of every stage (torch's allocator in-process, the card's use from ``nvidia-smi`` for all).

The report (GPU name, torch / CUDA / cuDNN versions, every measurement with its settings, every failure) is
rewritten after each stage, so a run killed late still leaves one. ``--cpu-smoke`` runs the same stages on the CPU at
tiny sizes (about half a minute; with ``--in-process``, all in one process, seconds plus the ``bench run`` of stage 4),
for tests; nothing is downloaded and nothing asks a question. On a CUDA machine the whole run keeps to
:data:`DEFAULT_BUDGET_S`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DEFAULT_REPORT = Path("docs") / "gpu_report.md"
DEFAULT_BUDGET_S = 540.0
"""The whole run's time budget: under the 10 minutes a CUDA machine is lent for it."""
RESERVE_S = 10.0
"""Kept back from the budget to write the report after the last stage."""


@dataclass(frozen=True)
class Sizes:
    """The settings of one mode (a real GPU, or the CPU smoke test)."""

    device: str
    loader_images: int
    loader_px: int
    loader_batch: int
    backbone: str
    train_px: int
    train_batch: int
    warmup_steps: int
    timed_steps: int
    wait_plates: int
    wait_sites: int
    wait_stored_px: int
    wait_crop: int
    wait_batch: int
    wait_epochs: int
    synth: dict[str, Any]
    paper_methods: tuple[str, ...]
    paper_set: tuple[str, ...]
    boxes: dict[str, float]
    measure_s: float = 15.0
    """Time box of one loader measurement (it stops early, rating what it read)."""


GPU = Sizes("cuda", loader_images=2048, loader_px=256, loader_batch=64, backbone="resnet50", train_px=256,
            train_batch=64, warmup_steps=5, timed_steps=25, wait_plates=6, wait_sites=4, wait_stored_px=512,
            wait_crop=256, wait_batch=64, wait_epochs=3,
            synth={"size": "tiny", "n_sources": 2, "batches_per_source": 2, "plates_per_batch": 1,
                   "sites_per_well": 1, "image_size": 256},
            paper_methods=("erm", "cs_arm_bn", "ben", "arm_bn"), paper_set=("max_epochs=2",),
            boxes={"env": 60, "synth": 330, "resnet50": 120, "loader": 120, "data_wait": 150, "paper": 300,
                   "paper_run": 110})
SMOKE = Sizes("cpu", loader_images=24, loader_px=32, loader_batch=8, backbone="resnet_micro", train_px=32,
              train_batch=4, warmup_steps=1, timed_steps=2, wait_plates=2, wait_sites=1, wait_stored_px=24,
              wait_crop=16, wait_batch=8, wait_epochs=1,
              synth={"size": "tiny", "n_sources": 2, "batches_per_source": 2, "plates_per_batch": 1,
                     "sites_per_well": 1, "image_size": 16},
              paper_methods=("erm",), paper_set=("max_epochs=1", "backbone=resnet_micro", "crop=16", "eval_crop=16"),
              boxes={"env": 60, "synth": 120, "resnet50": 60, "loader": 60, "data_wait": 60, "paper": 120,
                     "paper_run": 100}, measure_s=2.0)
MODES = {"gpu": GPU, "smoke": SMOKE}
CPU_THREADS = 1
"""torch threads of the CPU smoke test (two threads on a busy 2-core CPU are many times slower than one)."""


# ============================================================================ stages (each runs in a child process)

def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _filesystem(path: Path) -> str:
    """The file-system type of the mount holding ``path`` (from /proc/mounts), or ``unknown``."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path.resolve()).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def _memory(device: str) -> dict[str, Any]:
    """torch's peak allocated and reserved GPU memory of this process so far (empty on the CPU)."""
    import torch

    if device != "cuda":
        return {}
    return {"torch_max_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "torch_max_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def _peak_since_last(device: str) -> dict[str, Any]:
    """``peak allocated GiB`` since the previous call (for one table row), then a fresh count; empty on the CPU."""
    import torch

    if device != "cuda":
        return {}
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return {"peak allocated GiB": round(peak, 2)}


def stage_env(sizes: Sizes, work: Path, **_: Any) -> dict[str, Any]:
    """The machine: GPU, torch / CUDA / cuDNN, bf16 support, CPUs, /dev/shm, memory, the code's commit."""
    import torch

    from .records import code_version

    rows = [("torch", torch.__version__), ("CUDA (torch build)", torch.version.cuda or "none"),
            ("cuDNN", str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none")]
    cuda = torch.cuda.is_available()
    gpu = "none (torch sees no CUDA device)"
    if cuda:
        props = torch.cuda.get_device_properties(0)
        gpu = torch.cuda.get_device_name(0)
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no emulation argument
            native = torch.cuda.is_bf16_supported()
        rows += [("GPU", f"{gpu} ({props.total_memory / 2**30:.0f} GiB, compute capability "
                         f"{props.major}.{props.minor}, {torch.cuda.device_count()} visible)"),
                 ("bf16 native", "yes" if native else "no (fp16 + GradScaler needed)")]
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False).stdout.strip()
        rows.append(("nvidia-smi", out.splitlines()[0] if out else "no answer"))
    shm = shutil.disk_usage("/dev/shm") if Path("/dev/shm").is_dir() else None
    from .hardware import cpu_model

    rows += [("CPU", f"{cpu_model()}: {_usable_cpus()} usable cores (os.cpu_count {os.cpu_count()})"),
             ("/dev/shm", f"{shm.total / 2**30:.1f} GiB, {shm.free / 2**30:.1f} GiB free" if shm else "missing"),
             ("memory", f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"),
             ("work folder", f"{work} ({_filesystem(work)})"),
             ("platebench", "commit {git_commit} ({git_tree})".format(**code_version())),
             ("python", sys.version.split()[0])]
    return {"gpu": gpu, "cuda": cuda, "table": [{"what": k, "value": v} for k, v in rows]}


def _plate_layout() -> list[tuple[str, int, str]]:
    from .constants import DMSO_ID, DMSO_LABEL, POSCONS, dmso_wells

    return [(w, p[0], p[2]) for p in POSCONS for w in p[4]] + [(w, DMSO_LABEL, DMSO_ID) for w in dmso_wells()]


def write_check_dataset(root: Path, plates: int, sites: int, px: int, seed: int = 0) -> Any:
    """A dataset of random uint8 images in the JUMP control layout (64 wells per plate, ``sites`` each), opened."""
    import numpy as np
    import polars as pl

    from .constants import DMSO_LABEL
    from .datasets.dataset import open_dataset, write_dataset
    from .datasets.store import write_shard

    rng = np.random.default_rng(seed)
    rows, shards = [], []
    for p in range(plates):
        plate, images = f"check_b{p % 2}_p{p}", []
        for well, label, compound in _plate_layout():
            for site in range(1, sites + 1):
                rows.append(dict(source=f"src{p % 2}", batch=f"src{p % 2}_b{p}", plate=plate, well=well, site=site,
                                 compound=compound, label=label, is_control=label == DMSO_LABEL, shard=p,
                                 offset=len(images)))
                images.append(rng.integers(0, 256, size=(5, px, px), dtype=np.uint8))
        shards.append(write_shard(root, plate, np.stack(images)))
    index = pl.DataFrame(rows).with_row_index("image_id").with_columns(pl.col("image_id").cast(pl.Int64))
    write_dataset(root, "gpu_check", "1", {"plates": plates, "sites": sites, "px": px, "seed": seed}, index, shards)
    return open_dataset(root)


def _evict(paths: Sequence[Path]) -> None:
    """Drop the files' pages from the page cache (``POSIX_FADV_DONTNEED`` after an fsync; no effect on tmpfs)."""
    if not hasattr(os, "posix_fadvise"):
        return
    for path in paths:
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


class _Batches:
    """Item ``i``: batch ``i`` read by ``read`` (a picklable map-style dataset for a DataLoader)."""

    def __init__(self, read: Callable[[Any], Any], batches: list[Any]):
        self.read, self.batches = read, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Any:
        import torch

        return torch.from_numpy(self.read(self.batches[i]))


class _StoreReader:
    def __init__(self, root: Path, shards: tuple) -> None:
        self.root, self.shards = root, shards

    def __call__(self, batch: Any) -> Any:
        from .datasets.store import PackedStore

        if not hasattr(self, "_store"):  # opened once per process (workers get a fresh one)
            self._store = PackedStore(self.root, self.shards)
        return self._store.read(*batch)

    def __getstate__(self) -> dict:
        return {"root": self.root, "shards": self.shards}


def _read_tiffs(paths: Sequence[str]) -> Any:
    import numpy as np
    import tifffile

    return np.stack([tifffile.imread(p) for p in paths])


def _rate(read: Callable[[Any], Any], batches: list[Any], workers: int, limit_s: float) -> dict[str, Any]:
    """Images/s reading ``batches`` in order, in this process or through ``workers`` processes: counted from the
    first batch on (worker start-up is reported apart), until all are read or ``limit_s`` has passed."""
    from torch.utils.data import DataLoader

    begin = time.perf_counter()
    source = iter((read(b) for b in batches) if workers == 0 else
                  DataLoader(_Batches(read, batches), batch_size=None, num_workers=workers, prefetch_factor=4))
    next(source)
    start, n = time.perf_counter(), 0
    for pixels in source:
        n += len(pixels)
        if time.perf_counter() - start > limit_s:
            break
    seconds = time.perf_counter() - start
    return {"images/s": round(n / seconds) if n else None, "images timed": n,
            "first batch s": round(start - begin, 2)}


def stage_loader(sizes: Sizes, work: Path, **_: Any) -> dict[str, Any]:
    """Images/s of the packed store against one TIFF per site, cold and warm, with and without loader workers."""
    import numpy as np
    import tifffile

    from .core.accel import loader_workers

    sites = max(1, sizes.loader_images // (64 * 4))  # 4 plates of 64 wells when there are enough images
    data = write_check_dataset(work / "loader_store", max(1, sizes.loader_images // (64 * sites)), sites,
                               sizes.loader_px)
    tiffs = []
    for i in range(len(data.index)):
        path = work / "loader_tiff" / f"{i:06d}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, data.read(np.array([i]))[0], photometric="minisblack")
        tiffs.append(str(path))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(tiffs))
    chunks = [order[i:i + sizes.loader_batch] for i in range(0, len(order), sizes.loader_batch)]
    codes, offsets = data.index["shard"].to_numpy(), data.index["offset"].to_numpy()
    readers = {"packed store (mmap gather)": (lambda: _StoreReader(data.root, data.store.shards),
                                               [(codes[c], offsets[c]) for c in chunks],
                                               [data.root / s.file for s in data.store.shards]),
               "one TIFF per site (tifffile)": (lambda: _read_tiffs, [[tiffs[j] for j in c] for c in chunks],
                                                [Path(t) for t in tiffs])}
    mb = 5 * sizes.loader_px ** 2 / 1e6
    table = []
    for workers in sorted({0, loader_workers(sizes.device) or 1}):
        for name, (reader, batches, files) in readers.items():
            for cache in ("cold", "warm"):
                row = {"reader": name, "workers": workers, "page cache": cache}
                try:
                    gc.collect()  # the previous reader's memory maps are closed: their pages can be evicted
                    if cache == "cold":
                        _evict(files)
                    row.update(_rate(reader(), batches, workers, sizes.measure_s))
                    row["MB/s"] = round(row["images/s"] * mb) if row["images/s"] else None
                except Exception as exc:  # noqa: BLE001 - one failing reader (a worker's Bus error) is a result
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                table.append(row)
    return {"settings": {"images": len(tiffs), "image": f"5×{sizes.loader_px}×{sizes.loader_px} uint8",
                         "batch": sizes.loader_batch, "batches in random order": True,
                         "TIFF": "uncompressed, one 5-page file per site", "file system": _filesystem(work),
                         "time box per measurement s": sizes.measure_s},
            "table": table}


def _train_rate(model: Any, x: Any, y: Any, steps: int, warmup: int, sync: Callable[[], None]) -> float:
    """Images/s of ``steps`` Adam steps after ``warmup`` ones, each as train_model runs it (loss.item() every step)."""
    import torch

    from .core.training import Step, cross_entropy_loss

    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            start = time.perf_counter()
        loss = cross_entropy_loss(model, Step(x, y))
        loss.item()
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
    sync()
    return steps * len(x) / (time.perf_counter() - start)


def stage_resnet50(sizes: Sizes, work: Path, **_: Any) -> dict[str, Any]:
    """Training images/s of the backbone: bf16 autocast + channels-last (cuDNN deterministic, cuDNN benchmark), fp32."""
    import torch

    from .core.accel import Autocast
    from .core.backbones import create_backbone, n_parameters

    device = sizes.device
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = create_backbone(sizes.backbone).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(sizes.train_batch, 5, sizes.train_px, sizes.train_px, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 8, (sizes.train_batch,), device=device)
    variants = [("bf16 autocast, channels-last, cudnn.deterministic (project default)", True, True, False),
                ("bf16 autocast, channels-last, cudnn.benchmark", True, False, True),
                ("float32, channels-last, cudnn.deterministic", False, True, False)]
    table = []
    _peak_since_last(device)
    for name, bf16, deterministic, benchmark in variants:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic, benchmark
        row: dict[str, Any] = {"variant": name}
        try:
            net = Autocast(model) if bf16 else model
            row["images/s"] = round(_train_rate(net, x, y, sizes.timed_steps, sizes.warmup_steps, sync), 1)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory in one variant
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        table.append({**row, **_peak_since_last(device)})
    return {"settings": {"backbone": sizes.backbone, "parameters": n_parameters(model),
                         "input": f"5×{sizes.train_px}×{sizes.train_px}", "batch": sizes.train_batch,
                         "optimiser": "Adam 1e-3", "warm-up steps": sizes.warmup_steps,
                         "timed steps": sizes.timed_steps, "data": "random tensors already on the device",
                         "TF32 (cuDNN / matmul)": f"{torch.backends.cudnn.allow_tf32} / "
                                                  f"{torch.backends.cuda.matmul.allow_tf32}"},
            "table": table, "memory": _memory(device)}


def stage_data_wait(sizes: Sizes, work: Path, **_: Any) -> dict[str, Any]:
    """Share of the step time waiting for data, with the real loader and training loop, at the default workers and 0."""
    import numpy as np
    import torch

    from .core.accel import accelerate, loader_workers
    from .core.backbones import create_backbone
    from .core.loader import epochs
    from .core.preprocess import Preprocessor, channel_stats
    from .core.sampler import MixedBatches
    from .core.training import TrainSettings, train_model

    device = sizes.device
    data = write_check_dataset(work / "wait_store", sizes.wait_plates, sizes.wait_sites, sizes.wait_stored_px)
    train = data.labelled(data.index)
    sample = np.sort(np.random.default_rng(0).choice(len(data.index), size=min(512, len(data.index)), replace=False))
    pre = Preprocessor(channel_stats(data.read(sample)), sizes.wait_crop, device, True, sizes.wait_crop)
    table = []
    default = loader_workers(device)
    _peak_since_last(device)
    for workers in dict.fromkeys([default, 0]):
        steps: list[tuple[float, float]] = []
        row: dict[str, Any] = {"loader workers": workers}
        try:
            torch.manual_seed(0)
            model = accelerate(create_backbone(sizes.backbone).to(device).to(memory_format=torch.channels_last),
                               device)
            report = train_model(model, epochs(train, MixedBatches(sizes.wait_batch), pre, workers),
                                 lambda m: 0.0, TrainSettings(lr=1e-3, max_epochs=sizes.wait_epochs,
                                                              patience=sizes.wait_epochs + 1),
                                 seed=0, on_step=lambda waited, took: steps.append((waited, took)))
            per_epoch = max(1, len(steps) // sizes.wait_epochs)
            later = steps[per_epoch:] or steps
            row.update({"steps": len(steps), "images/s": report["images_per_second"],
                        "data-wait share": report["data_wait_fraction"],
                        "share after epoch 1": round(sum(w for w, _ in later) / sum(t for _, t in later), 4),
                        "mean wait ms": round(1e3 * sum(w for w, _ in steps) / len(steps), 1),
                        "first-step wait ms": round(1e3 * steps[0][0], 1)})
        except Exception as exc:  # noqa: BLE001 - a worker's Bus error (small /dev/shm) is a result
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        table.append({**row, **_peak_since_last(device)})
    n_treated = int((~data.index["is_control"]).sum())
    return {"settings": {"backbone": sizes.backbone, "stored image": f"5×{sizes.wait_stored_px}²",
                         "random crop": sizes.wait_crop, "batch": f"{sizes.wait_batch} mixed (ERM)",
                         "treated images": n_treated, "epochs": sizes.wait_epochs,
                         "device": device, "bf16 autocast": device == "cuda", "pinned memory": device == "cuda",
                         "DataLoader": "rebuilt every epoch, prefetch 4 (core/loader.py)"},
            "table": table, "memory": _memory(device)}


def stage_synth(sizes: Sizes, work: Path, **_: Any) -> dict[str, Any]:
    """The small simulated dataset of stage ``paper`` (generated into the platebench cache on first use)."""
    from .datasets import load_dataset

    start = time.perf_counter()
    dataset = load_dataset("synthetic", progress=False, **sizes.synth)
    return {"root": str(dataset.root), "settings": {**sizes.synth, "images": len(dataset.index),
                                                    "fingerprint": dataset.fingerprint,
                                                    "seconds to open or generate": round(time.perf_counter() - start)}}


def _paper_row(method: str, results: Path, done: subprocess.CompletedProcess) -> dict[str, Any]:
    """What the record of one ``bench run`` says (or why there is none)."""
    from .records import load_records

    found = load_records(results)
    if not found.ok:
        failed = found.failed[0].data.get("error") if found.failed else None
        why = failed or done.stderr.strip()[-300:] or f"exit code {done.returncode}, no record"
        return {"status": "FAILED", "error": why[:300]}
    rec = found.ok[0].data
    fit, fit_s = rec.get("fit_report") or {}, (rec.get("timings") or {}).get("fit_s")
    accuracy = ((rec.get("metrics") or {}).get("out_of_domain") or {}).get("accuracy")
    return {"status": "ok", "out-of-domain acc.": None if accuracy is None else round(accuracy, 3),
            "fit s": None if fit_s is None else round(fit_s, 1), "train images/s": fit.get("images_per_second"),
            "data-wait share": fit.get("data_wait_fraction"), "precision": fit.get("mixed_precision"),
            "loader workers": fit.get("loader_workers"),
            "worker peak RSS MB": (rec.get("worker") or {}).get("peak_rss_mb")}


def stage_paper(sizes: Sizes, work: Path, dataset_root: str | None = None, time_box: float = 300.0,
                partial: Callable[[dict[str, Any]], None] = lambda _r: None, **_: Any) -> dict[str, Any]:
    """``bench run --preset paper`` of each method on fold 0, seed 0 of the small simulated dataset, one after the
    other within ``time_box`` (the result so far goes to ``partial`` after each)."""
    if not dataset_root:
        raise RuntimeError("the simulated dataset of stage synth is missing (see that stage)")
    deadline = time.perf_counter() + time_box - 5
    out: dict[str, Any] = {"settings": {
        "command": f"bench run --method M --split source_out --preset paper --folds 0 --seeds 0 "
                   f"--device {sizes.device} " + " ".join(f"--set {p}" for p in sizes.paper_set),
        "dataset": dataset_root, "time box per run s": sizes.boxes["paper_run"]}, "table": []}
    for method in sizes.paper_methods:
        row: dict[str, Any] = {"method": method}
        timeout = min(sizes.boxes["paper_run"], deadline - time.perf_counter())
        if timeout < 20:
            row["status"] = "skipped: the stage's time box was spent"
            out["table"].append(row)
            continue
        results = work / "paper_runs" / method
        cmd = [sys.executable, "-c", "from benchmark.cli import app; app()", "run", "--method", method,
               "--split", "source_out", "--dataset", dataset_root, "--preset", "paper", "--folds", "0", "--seeds",
               "0", "--device", sizes.device, "--results", str(results), "--force", "--quiet",
               "--time-limit", str(round(timeout - 10))]
        for pair in sizes.paper_set:
            cmd += ["--set", pair]
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
            row.update(_paper_row(method, results, done))
        except subprocess.TimeoutExpired:
            row["status"] = "TIMED OUT"
        row["wall s"] = round(time.perf_counter() - start, 1)
        out["table"].append(row)
        partial(out)
    return out


STAGES: dict[str, tuple[str, Callable[..., dict[str, Any]]]] = {
    "env": ("Machine", stage_env),
    "synth": ("Simulated dataset for stage 4", stage_synth),
    "loader": ("1. Packed store vs one TIFF per site", stage_loader),
    "resnet50": ("2. ResNet-50 training throughput", stage_resnet50),
    "data_wait": ("3. Data-wait share of a training step (real loader)", stage_data_wait),
    "paper": ("4. `bench run --preset paper` on a small simulated dataset", stage_paper),
}
"""Stage name -> (report heading, function); the functions run in child processes."""


def _write_json(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, path)


def _child(args: argparse.Namespace) -> int:
    """Run one stage and write its result as JSON (the parent reads it; a stage may write partial results first)."""
    sizes = MODES[args.mode]
    if sizes.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the smoke test never touches a GPU, even where there is one
        import torch

        torch.set_num_threads(CPU_THREADS)
    result_path = Path(args.result)
    result = STAGES[args.stage][1](sizes, Path(args.workdir), dataset_root=args.dataset_root, time_box=args.time_box,
                                   partial=lambda r: _write_json(result_path, r))
    _write_json(result_path, result)
    return 0


# ============================================================================ the parent: time boxes and the report

@dataclass
class StageResult:
    """What one stage gave: its status, wall time, result, error, and the card's peak memory during it."""

    name: str
    status: str = "not run"
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    card_peak_mib: int | None = None


class CardMemory:
    """Polls ``nvidia-smi`` twice a second in a thread; :meth:`peak` is the highest memory use seen (MiB)."""

    def __init__(self) -> None:
        self.smi = shutil.which("nvidia-smi")
        self.value: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> CardMemory:
        if self.smi:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run([self.smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5, check=False).stdout.split()
                used = int(out[0]) if out else None
            except (OSError, ValueError, subprocess.SubprocessError):
                used = None
            if used is not None:
                self.value = max(self.value or 0, used)
            self._stop.wait(0.5)


def _command(stage: str, mode: str, work: Path, result: Path, time_box: float, dataset_root: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "benchmark.gpu_check", "--stage", stage, "--mode", mode, "--workdir", str(work),
           "--result", str(result), "--time-box", f"{time_box:.0f}"]
    return cmd + (["--dataset-root", dataset_root] if dataset_root else [])


def _kill(proc: subprocess.Popen) -> None:
    """Kill a stage's whole process group (its loader workers and sealed workers too) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _finish(stage: StageResult, proc: subprocess.Popen, result: Path, timeout: float, start: float) -> StageResult:
    """Wait up to ``timeout`` for a stage's process (killing its whole group past it) and read its result."""
    try:
        _, err = proc.communicate(timeout=max(timeout, 1))
    except BaseException as exc:  # past the box, or this run is being stopped (SIGTERM, Ctrl-C): end the stage
        _kill(proc)
        if not isinstance(exc, subprocess.TimeoutExpired):
            stage.status = "interrupted"
            raise
        stage.status, stage.error = "timed out", f"killed after its time box of {timeout:.0f} s"
        if result.is_file():  # what it had finished
            stage.result = json.loads(result.read_text())
    else:
        if proc.returncode == 0 and result.is_file():
            stage.status, stage.result = "ok", json.loads(result.read_text())
        else:
            tail = (err or "").strip().splitlines()[-6:]
            stage.status, stage.error = "failed", f"exit code {proc.returncode}: " + " | ".join(tail)[-800:]
    stage.seconds = round(time.perf_counter() - start, 1)
    return stage


def _start(stage: str, mode: str, work: Path, time_box: float, dataset_root: str | None = None
           ) -> tuple[subprocess.Popen, Path]:
    result = work / f"{stage}.json"
    proc = subprocess.Popen(_command(stage, mode, work, result, time_box, dataset_root), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    return proc, result


def _cell(value: Any) -> str:
    return "–" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict[str, Any]]) -> list[str]:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows])


def render_report(stages: dict[str, StageResult], mode: str, started: str, total_s: float, finished: bool = True,
                  isolated: bool = True) -> str:
    """The markdown report of ``stages`` (``finished``: all that will run have run; ``isolated``: each in a process)."""
    env = stages.get("env")
    gpu = (env.result.get("gpu") if env and env.result else None) or "unknown"
    smoke = " --cpu-smoke" if mode == "smoke" else ""
    how = ("Each stage ran in its own process with its own time box" if isolated
           else "The stages ran in one process (`--in-process`), without time boxes")
    lines = [f"# GPU check report — {gpu}", "",
             f"Written by `scripts/gpu_check.sh` (`python -m benchmark.gpu_check{smoke}`) on {started}; mode "
             f"`{mode}`; " + (f"took {total_s:.0f} s" if finished else f"{total_s:.0f} s so far, still running")
             + f". {how}; a failed stage is recorded here and the others went on.", ""]
    if mode == "smoke":
        lines += ["> CPU smoke run at tiny sizes: it checks that the script works, its numbers mean nothing.", ""]
    for name, (title, _) in STAGES.items():
        stage = stages.get(name)
        if stage is None:
            continue
        lines += [f"## {title}", "", f"Status: **{stage.status}** ({stage.seconds:.0f} s)."
                  + (f" Error: `{_cell(stage.error)}`" if stage.error else ""), ""]
        settings = stage.result.get("settings")
        if settings:
            lines += ["Settings: " + "; ".join(f"{k} = {_cell(v)}" for k, v in settings.items()) + ".", ""]
        if stage.result.get("table"):
            lines += _table(stage.result["table"]) + [""]
    rows = [{"stage": name, "torch max allocated GiB": s.result.get("memory", {}).get("torch_max_allocated_gib"),
             "torch max reserved GiB": s.result.get("memory", {}).get("torch_max_reserved_gib"),
             "card peak MiB (nvidia-smi, all processes)": s.card_peak_mib}
            for name, s in stages.items() if name != "env"]
    lines += ["## 5. Peak GPU memory", "",
              "torch's allocator in the stage's own process (stages 2 and 3); the card's use polled from nvidia-smi "
              "every 0.5 s for every stage (stage 4's sealed workers included; `synth` runs alongside 1–3 and uses "
              "no GPU).", ""] + _table(rows) + [""]
    failed = [s for s in stages.values() if s.status != "ok"]
    lines += ["## Summary", "", (f"{len(failed)} stage(s) did not finish: "
                                 + ", ".join(f"`{s.name}` ({s.status})" for s in failed)) if failed
              else "Every stage finished."]
    return "\n".join(lines) + "\n"


def _in_process(stage: StageResult, sizes: Sizes, work: Path, timeout: float, dataset_root: str | None) -> None:
    """Run a stage in this process (the CPU smoke test's shortcut): no isolation, no time box, errors recorded."""
    import torch

    start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS)
    try:
        stage.result = STAGES[stage.name][1](sizes, work, dataset_root=dataset_root, time_box=timeout)
        stage.status = "ok"
    except Exception as exc:  # noqa: BLE001 - a failing stage is a result, the others go on
        stage.status, stage.error = "failed", f"{type(exc).__name__}: {exc}"[:800]
    finally:
        torch.set_num_threads(threads)
    stage.seconds = round(time.perf_counter() - start, 1)


ORDER = ("env", "resnet50", "loader", "data_wait", "synth", "paper")
"""The order the stages run in (``synth`` starts right after ``env`` and runs alongside the next three)."""


def run_checks(report: Path, mode: str = "gpu", budget_s: float = DEFAULT_BUDGET_S, workdir: Path | None = None,
               keep_workdir: bool = False, extra_reports: Sequence[Path] = (), only: Sequence[str] | None = None,
               in_process: bool = False, log: Callable[[str], None] = print) -> dict[str, StageResult]:
    """Run the stages within ``budget_s``; write the report (after each stage) to ``report`` and ``extra_reports``.

    Parameters
    ----------
    report, extra_reports
        Markdown files to write (the same text).
    mode
        ``gpu`` (CUDA, the real sizes) or ``smoke`` (CPU, tiny sizes).
    budget_s
        Time budget of the whole run; each stage gets the smaller of its own box and what is left.
    workdir, keep_workdir
        Parent folder of the temporary work folder (data written by the stages), and whether to keep it.
    only
        Run only these stages (``env`` always runs; ``paper`` brings ``synth``); default all.
    in_process
        Run the stages in this process, one after the other (``smoke`` only: no isolation, no time boxes).
    """
    sizes = MODES[mode]
    if in_process and sizes.device != "cpu":
        raise ValueError("in_process runs only the CPU smoke test; a GPU run isolates every stage in a process")
    unknown = sorted(set(only or ()) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; valid: {', '.join(ORDER)}")
    wanted = [s for s in ORDER if only is None or s == "env" or s in only or (s == "synth" and "paper" in only)]
    start = time.perf_counter()
    deadline = start + budget_s
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    work = Path(tempfile.mkdtemp(prefix="platebench-gpu-check-", dir=workdir))
    stages: dict[str, StageResult] = {}
    background: tuple[subprocess.Popen, Path, float] | None = None

    def write(finished: bool = False) -> None:
        text = render_report(stages, mode, started, time.perf_counter() - start, finished, not in_process)
        for path in (report, *extra_reports):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def say(stage: StageResult) -> None:
        log(f"gpu_check: {stage.name} {stage.status} in {stage.seconds:.0f} s"
            + (f": {stage.error}" if stage.error else ""))

    def run(name: str, dataset_root: str | None = None) -> StageResult:
        stage = stages[name] = StageResult(name)
        timeout = min(sizes.boxes[name], deadline - time.perf_counter() - RESERVE_S)
        if timeout < 5:
            stage.status, stage.error = "skipped", "the run's time budget was spent"
        else:
            log(f"gpu_check: {name} (time box {timeout:.0f} s)")
            t0 = time.perf_counter()
            with CardMemory() as card:
                if in_process:
                    _in_process(stage, sizes, work, timeout, dataset_root)
                else:
                    _finish(stage, *_start(name, mode, work, timeout, dataset_root), timeout, t0)
            stage.card_peak_mib = card.value
            say(stage)
        write()
        return stage

    try:
        env = run("env")
        if sizes.device == "cuda" and not env.result.get("cuda"):
            for name in wanted[1:]:
                stages[name] = StageResult(name, "skipped", error="torch sees no CUDA GPU here; run with "
                                                                  "--cpu-smoke to check the script on the CPU")
            return stages
        if "synth" in wanted and not in_process:  # CPU only: alongside the GPU stages
            stages["synth"] = StageResult("synth", "running")
            background = (*_start("synth", mode, work, sizes.boxes["synth"]), time.perf_counter())
        for name in wanted[1:]:
            if name == "synth" and background is not None:
                proc, result, t_synth = background
                _finish(stages["synth"], proc, result, min(sizes.boxes["synth"] - (time.perf_counter() - t_synth),
                                                           deadline - time.perf_counter() - RESERVE_S), t_synth)
                background = None
                say(stages["synth"])
            elif name == "paper" and stages["synth"].status != "ok":
                stages["paper"] = StageResult("paper", "skipped",
                                              error=f"needs the simulated dataset (synth {stages['synth'].status})")
            elif name != "synth" or in_process:
                run(name, stages["synth"].result.get("root") if name == "paper" else None)
    finally:
        if background is not None:  # interrupted while synth ran: stop it
            _kill(background[0])
            stages["synth"].status = "interrupted"
        write(finished=True)
        if not keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
    return stages


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: the whole check (parent), or one ``--stage`` (child)."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", type=Path, help=f"markdown report to write (default {DEFAULT_REPORT}; "
                        "with --cpu-smoke: gpu_report_smoke.md in the temp folder); also $OUT/gpu_report.md "
                        "when $OUT is set")
    parser.add_argument("--cpu-smoke", action="store_true", help="run every stage on the CPU at tiny sizes")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="time budget of the whole run in s")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary work folder (default: $TMPDIR)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the work folder (data, stage results)")
    parser.add_argument("--only", help=f"comma-separated stages to run (env always runs): {', '.join(ORDER[1:])}")
    parser.add_argument("--in-process", action="store_true", help="with --cpu-smoke: run the stages in this process "
                        "(fast; no isolation, no time boxes)")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=sorted(MODES), default="gpu", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--dataset-root", help=argparse.SUPPRESS)
    parser.add_argument("--time-box", type=float, default=300.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        return _child(args)
    mode = "smoke" if args.cpu_smoke else "gpu"
    report = args.report or (Path(tempfile.gettempdir()) / "gpu_report_smoke.md" if mode == "smoke"
                             else DEFAULT_REPORT)
    extra = [Path(os.environ["OUT"]) / "gpu_report.md"] if os.environ.get("OUT") else []
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    if args.in_process and mode != "smoke":
        parser.error("--in-process needs --cpu-smoke: a GPU run isolates every stage in its own process")
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    if only is not None and (bad := sorted(set(only) - set(STAGES))):
        parser.error(f"unknown stage(s) {', '.join(bad)}; valid: {', '.join(ORDER[1:])}")
    stages = run_checks(report, mode, args.budget, args.workdir, args.keep_workdir, extra, only, args.in_process)
    failed = [s.name for s in stages.values() if s.status != "ok"]
    print(f"gpu_check: wrote {report}" + "".join(f" and {p}" for p in extra)
          + (f"; {len(failed)} stage(s) did not finish: {', '.join(failed)}" if failed else "; every stage finished"))
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped by an outer `timeout`: still write the report
    sys.exit(main())
