"""What every ResNet-classifier method shares (a base class, not a method): its config fields, setup and the plumbing of fit.

A method subclasses :class:`ConvNetMethod` and adds only what makes it itself: how
a training epoch's batches are formed, how the validation loss is computed, and
how a target plate is predicted. The reference setting of the study (GPU) is
``backbone="resnet50", crop=256, lr=1e-3, schedule="constant", max_epochs=200, patience=20,
grad_accum=8`` (``--preset paper``). The CPU default trains for 6 epochs with a one-cycle
schedule peaking at 1e-2: on the simulator it matches 8 epochs at a constant 3e-3 in
accuracy for three quarters of the compute.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from ..datasets.dataset import LabelledImages
from ..core.accel import accelerate, loader_workers, mixed_precision
from ..core.backbones import create_backbone, n_parameters
from ..core.loader import training_steps
from ..core.preprocess import Preprocessor, channel_stats, check_crop
from ..core.sampler import Batch
from ..core.training import SizedEpoch, TrainSettings, check_schedule, stderr_progress, train_model
from .base import Method, MethodConfig


@dataclasses.dataclass(frozen=True)
class ConvNetConfig(MethodConfig):
    """Hyper-parameters shared by the ResNet-classifier methods (CPU defaults)."""

    backbone: str = "resnet_micro"  # 5-channel ResNet (resnet_micro, resnet_small, resnet18, resnet50)
    crop: int = 40                  # side of the random (train) / centre (test) crop in px; 0 = whole image
    lr: float = 1e-2                # Adam (peak) learning rate (reference: 1e-3, constant)
    weight_decay: float = 0.0       # Adam weight decay
    max_epochs: int = 6             # epoch budget (passes over the training plates' treated images; reference: 200)
    patience: int = 6               # early stopping: epochs without a lower validation loss (reference: 20)
    grad_accum: int = 1             # mini-batches per optimiser step (reference: 8)
    schedule: str = "onecycle"      # learning rate: "onecycle" (warm-up, cosine to ~0) or "constant" (reference)
    eval_batch_size: int = 256      # images per forward pass when no BN context is involved
    stats_images: int = 2048        # training images sampled to compute per-channel mean/std
    channels_last: bool = True      # channels-last memory format (faster on CPU)
    threads: int = 1                # torch CPU threads (1: 2 threads are ~10x slower on a busy 2-core CPU); 0 = torch default

    def __post_init__(self) -> None:
        check_schedule(self.schedule)  # refuse before any run starts, not inside fit


class ConvNetMethod(Method):
    """Base of methods that train a 5-channel ResNet classifier on image pixels."""

    Config = ConvNetConfig
    config: ConvNetConfig
    quick_overrides = {"max_epochs": 1, "patience": 1}  # --quick smoke profile and `bench methods check`

    # -- set-up -----------------------------------------------------------------------------
    def _setup(self, train: LabelledImages, seed: int) -> None:
        cfg = self.config
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        all_ids = np.sort(np.concatenate([train.treated_ids(), train.control_ids()]))
        rng = np.random.default_rng([seed, 7])
        sample = np.sort(rng.choice(all_ids, size=min(cfg.stats_images, len(all_ids)), replace=False))
        images = train.read(sample)
        self.stats_ = channel_stats(images)
        self.preprocess_ = Preprocessor(self.stats_, check_crop(cfg.crop, images.shape[1:]),
                                        self.device, cfg.channels_last)
        torch.manual_seed(seed)
        model = create_backbone(cfg.backbone).to(self.device)
        model = model.to(memory_format=torch.channels_last) if cfg.channels_last else model
        self.model_ = accelerate(model, self.device)  # bf16 autocast on CUDA

    def _steps(self, train: LabelledImages, make_batches: Callable[[np.random.Generator], list[Batch]]
               ) -> Callable[[np.random.Generator], SizedEpoch]:
        """Turn a batch sampler into an epoch of (inputs, targets); DMSO context gets target -1."""
        def epoch(rng: np.random.Generator) -> SizedEpoch:
            batches = make_batches(rng)
            return SizedEpoch(training_steps(train, batches, self.preprocess_, rng, loader_workers(self.device)),
                              len(batches))
        return epoch

    def _train(self, train: LabelledImages, make_batches: Callable[[np.random.Generator], list[Batch]],
               val_loss: Callable[[torch.nn.Module], float], seed: int) -> None:
        cfg = self.config
        settings = TrainSettings(lr=cfg.lr, weight_decay=cfg.weight_decay, max_epochs=cfg.max_epochs,
                                 patience=cfg.patience, grad_accum=cfg.grad_accum, schedule=cfg.schedule)
        progress = stderr_progress(f"{self.name} seed {seed}") if self.verbose else None
        report = train_model(self.model_, self._steps(train, make_batches), val_loss, settings, seed, progress)
        report.update(backbone=cfg.backbone, n_parameters=n_parameters(self.model_), crop=self.preprocess_.crop,
                      n_train_plates=len(train.plates), n_train_treated=int(len(train.treated_ids())),
                      channel_stats=self.stats_.to_dict(), mixed_precision=mixed_precision(self.device),
                      loader_workers=loader_workers(self.device))
        self.fit_report_ = report

    # -- evaluation helpers -----------------------------------------------------------------
    def _eval_tensor(self, images: np.ndarray) -> torch.Tensor:
        """The network input for ``images``: centre-cropped and normalised."""
        return self.preprocess_.eval(np.asarray(images))

    def _eval_pixels(self, images: np.ndarray) -> torch.Tensor:
        """Centre-cropped uint8 pixels on the device; :meth:`_inputs` turns a chunk into network input."""
        return self.preprocess_.eval_pixels(np.asarray(images))

    def _inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """Network input from centre-cropped uint8 pixels."""
        return self.preprocess_.normalise(pixels)

    def _logits_running_stats(self, pixels: torch.Tensor) -> torch.Tensor:
        """Logits in eval mode (BN running statistics) of centre-cropped uint8 pixels: each image on its own."""
        self.model_.eval()
        size = self.config.eval_batch_size
        with torch.no_grad():
            return torch.cat([self.model_(self._inputs(pixels[i:i + size])) for i in range(0, len(pixels), size)])

    def _val_set(self, val: LabelledImages, plate: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Treated images of ``val`` (one plate or all) as centre-cropped uint8 pixels, and their labels.

        Kept as uint8 and normalised chunk by chunk: as float32 the validation set of a
        JUMP run at 256 px would take about 13 GB.
        """
        ids = val.treated_ids(plate)
        return (self._eval_pixels(val.read(ids)),
                torch.as_tensor(val.labels(ids), dtype=torch.long, device=self.device))


def softmax(logits: torch.Tensor) -> np.ndarray:
    """Class probabilities as a float64 numpy array whose rows sum to 1."""
    probs = torch.softmax(logits.double(), dim=1).cpu().numpy()
    return probs / probs.sum(axis=1, keepdims=True)
