"""Stages ``resnet50`` and ``data_wait``: training images/s of the backbone, and the share of a step spent waiting
for data with the real loader and training loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .dataset import write_check_dataset
from .memory import peak_since_last, torch_memory
from .sizes import Sizes


def _train_rate(model: Any, x: Any, y: Any, steps: int, warmup: int, sync: Callable[[], None]) -> float:
    """Images/s of ``steps`` Adam steps after ``warmup`` ones, each as train_model runs it (loss.item() every step)."""
    import torch

    from ..core.training.loop import Step, cross_entropy_loss

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

    from ..core.training.accel import Autocast
    from ..core.training.backbones import create_backbone, n_parameters

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
    peak_since_last(device)
    for name, bf16, deterministic, benchmark in variants:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic, benchmark
        row: dict[str, Any] = {"variant": name}
        try:
            net = Autocast(model) if bf16 else model
            row["images/s"] = round(_train_rate(net, x, y, sizes.timed_steps, sizes.warmup_steps, sync), 1)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory in one variant
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        table.append({**row, **peak_since_last(device)})
    return {"settings": {"backbone": sizes.backbone, "parameters": n_parameters(model),
                         "input": f"5×{sizes.train_px}×{sizes.train_px}", "batch": sizes.train_batch,
                         "optimiser": "Adam 1e-3", "warm-up steps": sizes.warmup_steps,
                         "timed steps": sizes.timed_steps, "data": "random tensors already on the device",
                         "TF32 (cuDNN / matmul)": f"{torch.backends.cudnn.allow_tf32} / "
                                                  f"{torch.backends.cuda.matmul.allow_tf32}"},
            "table": table, "memory": torch_memory(device)}


def stage_data_wait(sizes: Sizes, work: Path, **_: Any) -> dict[str, Any]:
    """Share of the step time waiting for data, with the real loader and training loop, at the default workers and 0."""
    import numpy as np
    import torch

    from ..core.training.accel import accelerate, loader_workers
    from ..core.training.backbones import create_backbone
    from ..core.training.loader import epochs
    from ..core.training.preprocess import Preprocessor, channel_stats
    from ..core.training.sampler import MixedBatches
    from ..core.training.loop import TrainSettings, train_model

    device = sizes.device
    data = write_check_dataset(work / "wait_store", sizes.wait_plates, sizes.wait_sites, sizes.wait_stored_px)
    train = data.labelled(data.index)
    sample = np.sort(np.random.default_rng(0).choice(len(data.index), size=min(512, len(data.index)), replace=False))
    pre = Preprocessor(channel_stats(data.read(sample)), sizes.wait_crop, device, True, sizes.wait_crop)
    table = []
    default = loader_workers(device)
    peak_since_last(device)
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
        table.append({**row, **peak_since_last(device)})
    n_treated = int((~data.index["is_control"]).sum())
    return {"settings": {"backbone": sizes.backbone, "stored image": f"5×{sizes.wait_stored_px}²",
                         "random crop": sizes.wait_crop, "batch": f"{sizes.wait_batch} mixed (ERM)",
                         "treated images": n_treated, "epochs": sizes.wait_epochs,
                         "device": device, "bf16 autocast": device == "cuda", "pinned memory": device == "cuda",
                         "DataLoader": "rebuilt every epoch, prefetch 4 (core/training/loader.py)"},
            "table": table, "memory": torch_memory(device)}
