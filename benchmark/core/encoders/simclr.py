"""Self-supervised pretraining of the shipped encoder (SimCLR: two augmented views, NT-Xent loss).

No labels are used: each image is its own class. Augmentations are random crops,
flips, 90-degree rotations and per-channel intensity gain/offset jitter, so the
encoder learns morphology rather than the stain intensities of a lab.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..training.backbones import create_backbone, n_parameters
from ..training.preprocess import channel_stats, normalise, random_crop_flip
from ..training.loop import seed_everything


@dataclass(frozen=True)
class SSLSettings:
    """Settings of :func:`pretrain_encoder`."""

    backbone: str = "resnet_micro"  # feature extractor (see benchmark.core.training.backbones)
    epochs: int = 6                 # passes over the pretraining images
    batch_size: int = 128           # images per step (two views each)
    crop: int = 48                  # side of the random crops (px)
    temperature: float = 0.2        # NT-Xent temperature
    lr: float = 2e-3                # Adam learning rate
    proj_dim: int = 64              # width of the projection head's output
    gain_jitter: float = 0.25       # per-channel intensity gain drawn from 1 +- this
    offset_jitter: float = 0.25     # per-channel offset (in std units) drawn from +- this


def _views(images: np.ndarray, settings: SSLSettings, stats, rng: np.random.Generator) -> torch.Tensor:
    x = random_crop_flip(images, settings.crop, rng)
    x = np.rot90(x, k=int(rng.integers(4)), axes=(2, 3))
    t = normalise(x, stats)
    n, c = t.shape[:2]
    gain = 1 + settings.gain_jitter * (2 * torch.from_numpy(rng.random((n, c, 1, 1), dtype=np.float32)) - 1)
    offset = settings.offset_jitter * (2 * torch.from_numpy(rng.random((n, c, 1, 1), dtype=np.float32)) - 1)
    return t * gain + offset


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """The SimCLR loss: each view must pick its partner among all 2B - 1 other views."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = len(z1)
    sim.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, partner)


def pretrain_encoder(images: np.ndarray, settings: SSLSettings = SSLSettings(), seed: int = 0,
                     progress: Callable[[str], None] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Pretrain a feature extractor on unlabelled uint8 images ``(N, 5, H, W)`` with SimCLR.

    Returns the backbone (``num_classes=0``: pooled features) and the config to save
    next to its weights (backbone, width, pixel statistics, settings, timings).
    """
    rng = seed_everything(seed)
    stats = channel_stats(images)
    backbone = create_backbone(settings.backbone, num_classes=0)
    dim = backbone.num_features
    head = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.ReLU(), torch.nn.Linear(dim, settings.proj_dim))
    params = list(backbone.parameters()) + list(head.parameters())
    optimiser = torch.optim.Adam(params, lr=settings.lr)
    steps_per_epoch = max(len(images) // settings.batch_size, 1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, settings.epochs * steps_per_epoch)
    start, losses = time.perf_counter(), []
    backbone.train(), head.train()
    for epoch in range(1, settings.epochs + 1):
        order, total = rng.permutation(len(images)), 0.0
        for step in range(steps_per_epoch):
            batch = np.asarray(images[np.sort(order[step * settings.batch_size:(step + 1) * settings.batch_size])])
            views = torch.cat([_views(batch, settings, stats, rng), _views(batch, settings, stats, rng)])
            z = head(backbone(views.contiguous(memory_format=torch.channels_last)))
            loss = nt_xent(z[:len(batch)], z[len(batch):], settings.temperature)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            total += loss.item()
        losses.append(round(total / steps_per_epoch, 4))
        if progress is not None:
            progress(f"epoch {epoch}/{settings.epochs}  NT-Xent loss {losses[-1]:.4f}  "
                     f"({time.perf_counter() - start:.0f} s)")
    backbone.eval()
    config = {"name": "platebench-ssl", "backbone": settings.backbone, "dim": int(dim),
              "channel_mean": stats.to_dict()["mean"], "channel_std": stats.to_dict()["std"],
              "n_parameters": n_parameters(backbone), "objective": "SimCLR (NT-Xent), no labels",
              "settings": asdict(settings), "seed": seed, "n_images": int(len(images)),
              "image_shape": list(images.shape[1:]), "epoch_losses": losses,
              "train_seconds": round(time.perf_counter() - start, 1)}
    return backbone, config
