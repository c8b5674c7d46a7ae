"""What every ResNet-classifier method shares (a base class, not a method): config fields, set-up, and
running its :class:`~benchmark.core.recipe.axes.Recipe`.

A method subclasses :class:`ConvNetMethod` and declares its choices in :meth:`~ConvNetMethod.recipe`:
which images form a training mini-batch, where BN statistics come from in training,
validation and test, and (optionally) its training loss. ``fit``, ``adapt`` and ``predict``
here only run that recipe with the core's mechanisms. The reference setting of the study (GPU) is
``backbone="resnet50", crop=256, eval_crop=256, lr=1e-3, schedule="constant", max_epochs=200,
patience=20`` with gradient accumulation 8 for the one-plate methods (``--preset paper``).

The CPU default (issue 26) trains every ResNet method to its plateau, not to a budget: 40 px random crops
under all 8 symmetries of the square (cells have no orientation), Adam at 1e-2 warmed up over the first
epoch, validation and selection on a moving average of the weights and BN statistics (decay 0.998 per step,
a horizon of ~7 epochs of ERM: its validation loss falls smoothly where the live network's jumps by 2-3×
between epochs at this learning rate, and a shorter average stops runs in the temporary plateaus of a noisy
curve), the learning rate divided by 5 after 3 epochs without a lower validation loss, and early stopping
after 8; every fit report says whether the best epoch came before the 100-epoch cap (``converged``).
Evaluation is on the whole 64 px field (the network pools globally). The recipe was chosen on the training
domain's validation loss alone (datasets/synthetic/DATA_CARD.md, "Training to the plateau"); it is the same
for every ResNet method.
"""

from __future__ import annotations

import dataclasses
import math
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from ..config_bounds import Bound, at_least, between, positive
from ..core.training.accel import accelerate, loader_workers, mixed_precision
from ..core.training.backbones import create_backbone, n_parameters
from ..core.training.distributed import World, process_group
from ..core.training.loader import epochs, n_domains
from ..core.recipe.network import Network
from ..core.training.preprocess import Preprocessor, channel_stats, check_augment, check_crop
from ..core.recipe.axes import Recipe
from ..core.training.model_cache import training_code_digest, current_fold, key_digest, source_cache
from ..core.training.loop import (TrainSettings, bind_loss, check_optimizer, check_schedule, stderr_progress,
                                   train_model)
from ..core.recipe.validation import ValidationSet
from ..datasets.dataset import LabelledImages, PlateView
from .base import Method, MethodConfig


@dataclasses.dataclass(frozen=True)
class ConvNetConfig(MethodConfig):
    """Hyper-parameters shared by the ResNet-classifier methods (CPU defaults)."""

    backbone: str = "resnet_micro"  # 5-channel ResNet (resnet_micro, resnet_small, resnet18, resnet50)
    crop: int = 40                  # side of the random training crop in px; 0 = whole image
    eval_crop: int = 0              # side of the centre crop at validation and test in px; 0 = whole image
    lr: float = 1e-2                # Adam (peak) learning rate (reference: 1e-3, constant)
    weight_decay: float = 0.0       # weight decay
    max_epochs: int = 100           # epoch cap (passes over the training plates' treated images; reference: 200)
    patience: int = 8               # early stopping: epochs without a lower validation loss (reference: 20)
    grad_accum: int = 1             # mini-batches per optimiser step (reference: 8)
    schedule: str = "plateau"       # learning rate: "plateau" (warm-up over epoch 1, then decay by lr_decay when
                                    # the validation loss stalls), "onecycle" (warm-up, cosine to ~0 at the cap)
                                    # or "constant" (reference)
    optimizer: str = "adam"         # "adam" (reference) or "sgd" (Nesterov momentum 0.9)
    lr_patience: int = 3            # plateau schedule: epochs without a lower validation loss before a decay
    lr_decay: float = 0.2           # plateau schedule: factor of each decay
    min_delta: float = 0.0          # relative drop of the validation loss that counts as progress for early
                                    # stopping and decays (the best epoch is the lowest loss all the same)
    augment: str = "dihedral"       # training-crop symmetries: "dihedral" (flips + 90° rotations) or "flips"
                                    # (horizontal/vertical: the reference)
    weight_average: float = 0.998   # per-step decay of the weight average validated, selected and kept (0: none,
                                    # the reference)
    eval_batch_size: int = 32       # images per forward pass when no BN context is involved (speed only: 32 keeps
                                    # a pass in the CPU's caches, ~1.7x faster than 256; the paper preset: 256)
    stats_images: int = 2048        # training images sampled to compute per-channel mean/std
    channels_last: bool = True      # channels-last memory format (faster on CPU)
    threads: int = 1                # torch CPU threads (1: 2 threads are ~10x slower on a busy 2-core CPU); 0 = torch default

    bounds = {"crop": at_least(0), "eval_crop": at_least(0), "lr": positive(), "weight_decay": at_least(0),
              "max_epochs": at_least(1), "patience": at_least(1), "grad_accum": at_least(1),
              "lr_patience": at_least(1), "lr_decay": positive(), "min_delta": between(0, 1), "weight_average": Bound(low=0, high=1, high_open=True),
              "eval_batch_size": at_least(1), "stats_images": at_least(1), "threads": at_least(0)}

    def __post_init__(self) -> None:
        super().__post_init__()  # the bounds
        check_schedule(self.schedule)  # refuse before any run starts, not inside fit
        check_optimizer(self.optimizer)
        check_augment(self.augment)


class ConvNetMethod(Method):
    """Base of methods that train a 5-channel ResNet classifier on image pixels by a :class:`Recipe`."""

    Config = ConvNetConfig
    config: ConvNetConfig
    quick_overrides = {"max_epochs": 1, "patience": 1}  # --quick smoke profile and `bench methods check`
    world_: World = World()  # the processes fit trains on: several under torchrun (benchmark.core.training.distributed)
    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    """Called after every training epoch's validation (see ``train_model``): a learning curve's hook, set on an
    instance by the caller (``scripts/learning_curves.py``); never set in a benchmark run."""

    @abstractmethod
    def recipe(self) -> Recipe:
        """The method's choices along the shared axes, built from its config."""

    def build_model(self) -> torch.nn.Module:
        """The freshly initialised network (default: the configured backbone)."""
        return create_backbone(self.config.backbone)

    # -- the method API ------------------------------------------------------------------------
    def fit(self, train: LabelledImages, val: LabelledImages, seed: int) -> ConvNetMethod:
        with process_group(self.device) as world:  # torchrun: one rank of a data-parallel training, else alone
            self.world_ = world
            return self._fit(train, val, seed)

    def _fit(self, train: LabelledImages, val: LabelledImages, seed: int) -> ConvNetMethod:
        if self._start_from_source(train, seed):  # source-model cache hit: the cached ERM weights, not retrained
            return self
        recipe = self.recipe()
        self._setup(train, seed)
        net = self.net
        # data-parallel, rank 0 alone reads and scores the validation set; train_model broadcasts its loss
        validation = ValidationSet.read(val, recipe.validation, net, seed) if self.world_.rank == 0 else None
        cfg = self.config
        settings = TrainSettings(lr=cfg.lr, weight_decay=cfg.weight_decay, max_epochs=cfg.max_epochs,
                                 patience=cfg.patience, grad_accum=cfg.grad_accum, schedule=cfg.schedule,
                                 optimizer=cfg.optimizer, lr_patience=cfg.lr_patience, lr_decay=cfg.lr_decay,
                                 min_delta=cfg.min_delta,
                                 weight_average=cfg.weight_average)
        progress = stderr_progress(f"{self.name} seed {seed}") if self.verbose else None
        steps = epochs(train, recipe.batches, self.preprocess_, loader_workers(self.device), self.world_)
        # a loss with parameters of its own (DANN's domain head) trains them in groups of their own
        base_loss, extra = bind_loss(recipe.loss, self.model_, n_domains(train))
        params = [{"params": list(self.model_.parameters())}, *extra] if extra else None
        with recipe.training_norm.applied(self.model_, base_loss) as loss:
            report = train_model(self.model_, steps, lambda model: validation.loss(net) if validation else math.nan,
                                 settings, seed, progress, loss=loss, params=params, world=self.world_,
                                 on_epoch=self.on_epoch)
        self.fit_report_ = {**report, **self._report(train)}
        self._keep_source()
        return self

    def adapt(self, plate: PlateView) -> ConvNetMethod:
        self._check_fitted()
        for attr in ("plate_", "plate_norm_"):
            self.__dict__.pop(attr, None)  # forget the previous plate
        self.plate_norm_ = self.recipe().test.adapt(self.net, plate)
        self.plate_ = plate.plate
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._check_fitted()
        self._check_adapted("plate_norm_")
        net = self.net
        return softmax(self.plate_norm_.logits(net, net.pixels(images)))

    # -- the model cache (benchmark.core.training.model_cache) ------------------------------------------
    starts_from: ClassVar[type[ConvNetConfig] | None] = None
    """The config class of the model this method trains exactly as (``ERMConfig``: AdaBN, TENT, DeYO, ROID), or
    None. In a sealed worker ``fit`` loads the fold's cached model of the same seed, config, training axes and code
    version when there is one, and caches what it trained otherwise: methods with the same ``starts_from`` share
    one model (keyed by the fields of that class); any other method caches its own (keyed by its name and its
    whole config), so that scoring a fitted run again (new scenario blocks) loads it instead of training."""

    def _source_key(self, seed: int) -> dict[str, Any] | None:
        fold = current_fold()
        if fold is None:
            return None
        recipe = self.recipe()
        trains_as = self.starts_from or type(self.config)
        key = {"fold": fold.key(), "seed": int(seed), "device": str(self.device), "code": training_code_digest(),
               "config": {f.name: getattr(self.config, f.name) for f in dataclasses.fields(trains_as)},
               "training": {"batches": repr(recipe.batches), "training_norm": repr(recipe.training_norm),
                            "validation": repr(recipe.validation),
                            "loss": _describe_loss(recipe.loss)}}
        if self.starts_from is None:  # a model of its own: never shared with another method
            key["method"] = f"{type(self).__module__}.{type(self).__qualname__}"
        if self.world_.size > 1:  # a data-parallel training is another model than one process's
            key["world_size"] = self.world_.size
        return key

    def _start_from_source(self, train: LabelledImages, seed: int) -> bool:
        """Remember the seed; on a cache hit set the model up with the cached weights and report, and say True."""
        self.seed_ = int(seed)
        self.source_ = {"cached": False}
        key, cache = self._source_key(seed), source_cache()
        if key is None or cache is None:
            self.source_ = {"cached": False, "why": "no fold scope (an in-process run)"}
            return False
        start = time.perf_counter()
        self._setup(train, seed)
        entry = cache.load(key, self.model_.state_dict())
        if not self.world_.all_true(entry is not None):  # data-parallel: load only if every rank has it
            self.source_ = {"cached": False, "key": key_digest(key)}
            return False
        self.model_.load_state_dict(entry.state)
        self.model_.eval()
        self.source_ = {"cached": True, "key": key_digest(key), "load_s": round(time.perf_counter() - start, 3)}
        self.fit_report_ = {**entry.report, **self._report(train), "source_model": self.source_}
        return True

    def _keep_source(self) -> None:
        """After training: cache the model (when :meth:`_start_from_source` found none) and report it."""
        key, cache = self._source_key(self.seed_), source_cache()
        if key is not None and cache is not None and self.world_.rank == 0:  # the other ranks write nothing
            report = {k: v for k, v in self.fit_report_.items() if k != "source_model"}
            try:
                self.source_ = {**self.source_, "saved": cache.save(key, self.model_.state_dict(), report).name}
            except OSError as exc:  # a full or read-only cache costs a retraining next time, not this run
                self.source_ = {**self.source_, "not_saved": str(exc)}
        self.fit_report_ = {**self.fit_report_, "source_model": self.source_}

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def net(self) -> Network:
        """The fitted network as the BN policies see it."""
        return Network(self.model_, self.preprocess_, self.config.eval_batch_size, self.name)

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
                                        self.device, cfg.channels_last, check_crop(cfg.eval_crop, images.shape[1:]),
                                        cfg.augment)
        torch.manual_seed(seed)
        model = self.build_model().to(self.device)
        model = model.to(memory_format=torch.channels_last) if cfg.channels_last else model
        self.model_ = accelerate(model, self.device)  # bf16 autocast on CUDA

    def _report(self, train: LabelledImages) -> dict[str, Any]:
        return dict(backbone=self.config.backbone, n_parameters=n_parameters(self.model_), crop=self.preprocess_.crop,
                    eval_crop=self.preprocess_.eval_crop,
                    n_train_plates=len(train.plates), n_train_treated=int(len(train.treated_ids())),
                    channel_stats=self.stats_.to_dict(), mixed_precision=mixed_precision(self.device),
                    loader_workers=loader_workers(self.device))


def _describe_loss(loss: Any) -> str:
    """A loss as the model cache's key names it: a function by its qualified name, a loss object (Deep CORAL's,
    DANN's frozen dataclasses) by its class and its repr, which holds its settings."""
    if hasattr(loss, "__qualname__"):
        return f"{loss.__module__}.{loss.__qualname__}"
    return f"{type(loss).__module__}.{type(loss).__qualname__}: {loss!r}"


def softmax(logits: torch.Tensor) -> np.ndarray:
    """Class probabilities as a float64 numpy array whose rows sum to 1."""
    probs = torch.softmax(logits.double(), dim=1).cpu().numpy()
    return probs / probs.sum(axis=1, keepdims=True)
