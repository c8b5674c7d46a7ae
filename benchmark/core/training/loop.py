"""The one training loop: Adam or SGD-Nesterov (constant, one-cycle or plateau learning rate), gradient accumulation,
validation-based early stopping.

A method plugs in (a) how an epoch's mini-batches are formed (:func:`benchmark.core.training.loader.epochs`
turns a batch composition into the epoch function), (b) how the validation loss is
computed (:class:`benchmark.core.recipe.validation.ValidationSet`) and, optionally, (c) the
training loss of a step: :func:`cross_entropy_loss` by default; a loss with extra terms
on features or domains (Deep CORAL, DANN) is any ``(model, step) -> loss`` callable,
and parameters of its own (a domain head with its own learning rate) join the optimiser
through ``params``. Targets of ``-1`` (DMSO context images) take part in the forward
pass — and so in BN batch statistics — but not in the class loss.

Data-parallel (several processes, :mod:`benchmark.core.training.distributed`): every rank passes its share of the
epoch's batches (a :class:`SizedEpoch` whose length is the longest share, which every rank steps through;
a shorter share idles in its last step); gradients are averaged over the ranks before every optimiser step,
so all ranks take the same steps; BN running statistics become one process's after every epoch
(:class:`~benchmark.core.training.distributed.RunningStatsSync`); rank 0 alone computes the validation loss and every
rank follows its early-stopping decisions.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ...constants import DMSO_LABEL
from ...errors import MethodError
from .distributed import RunningStatsSync, World
from .weight_average import WeightAverage

SELECTION_RULE = "min val loss (training-domain val batches)"


class Step(NamedTuple):
    """One mini-batch. An epoch may also yield plain ``(inputs, targets)`` pairs."""

    inputs: torch.Tensor                 # (N, C, h, w) network input
    targets: torch.Tensor                # (N,) class index; -1 = DMSO context, not in the class loss
    domains: torch.Tensor | None = None  # (N,) domain (training plate) index of every row, or None


TrainingLoss = Callable[[torch.nn.Module, Step], torch.Tensor]
"""``(model, step) -> scalar loss``: runs the forward pass of one step and scores it."""


class LossWithParameters(Protocol):
    """A training loss with parameters of its own (DANN's domain head), built once the model is.

    ``build(model, n_domains)`` returns the :data:`TrainingLoss` and the Adam parameter
    groups of those parameters (each may set its own ``lr``); ``n_domains`` counts the
    domain ids the steps carry (:func:`benchmark.core.training.loader.n_domains`).
    """

    def build(self, model: torch.nn.Module, n_domains: int) -> tuple[TrainingLoss, list[dict[str, Any]]]:
        ...


def bind_loss(loss: TrainingLoss | LossWithParameters, model: torch.nn.Module, n_domains: int
              ) -> tuple[TrainingLoss, list[dict[str, Any]]]:
    """``(training loss, extra parameter groups)`` of a recipe's loss: built if it has parameters, else as is."""
    if hasattr(loss, "build"):
        return loss.build(model, n_domains)
    return loss, []  # type: ignore[return-value]


def cross_entropy_loss(model: torch.nn.Module, step: Step) -> torch.Tensor:
    """Cross-entropy of the labelled rows; DMSO context rows (target -1) only take part in the forward pass."""
    return F.cross_entropy(model(step.inputs), step.targets, ignore_index=DMSO_LABEL)


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of :func:`train_model`."""

    lr: float = 1e-3           # (peak) learning rate
    weight_decay: float = 0.0  # weight decay (Adam: L2 in the gradient; SGD: likewise)
    max_epochs: int = 10       # epoch cap
    patience: int = 3          # epochs without a better validation loss before stopping
    grad_accum: int = 1        # mini-batches per optimiser step
    schedule: str = "constant"  # learning rate: "constant", "onecycle" (warm-up to lr, then cosine to ~0) or
                                # "plateau" (warm-up over the first epoch, then lr until the validation loss stalls)
    optimizer: str = "adam"    # "adam", or "sgd" (momentum 0.9, Nesterov)
    lr_patience: int = 2       # plateau schedule: epochs without a better validation loss before lr *= lr_decay
    lr_decay: float = 0.2      # plateau schedule: factor of each decay
    min_delta: float = 0.0     # relative drop of the validation loss that counts as progress for early stopping
                               # and decays (the best epoch is still the lowest loss, however small the drop)
    weight_average: float = 0.0  # per-step decay of a moving average of the weights that is validated, selected
                                 # and returned (0: none; :mod:`benchmark.core.training.weight_average`)

    def __post_init__(self) -> None:
        check_schedule(self.schedule)
        check_optimizer(self.optimizer)


SCHEDULES = ("constant", "onecycle", "plateau")
OPTIMIZERS = ("adam", "sgd")
SGD_MOMENTUM = 0.9


def check_schedule(name: str) -> None:
    """Raise a MethodError naming the valid schedules unless ``name`` is one."""
    if name not in SCHEDULES:
        raise MethodError(f"unknown learning-rate schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def check_optimizer(name: str) -> None:
    """Raise a MethodError naming the valid optimisers unless ``name`` is one."""
    if name not in OPTIMIZERS:
        raise MethodError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def make_optimiser(params: Any, settings: TrainSettings) -> torch.optim.Optimizer:
    """Adam, or SGD with Nesterov momentum, at ``settings.lr`` (param groups may set their own)."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=SGD_MOMENTUM, nesterov=True,
                               weight_decay=settings.weight_decay)
    return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)


WARMUP_FRACTION = 0.25
"""Share of the one-cycle schedule's steps spent warming up."""


class PlateauSchedule:
    """Linear warm-up over the first epoch's optimiser steps, then the peak learning rate, multiplied by
    ``lr_decay`` whenever the validation loss has not improved for ``lr_patience`` epochs (the counter restarts
    after each decay). With early stopping at ``patience`` > ``lr_patience`` a run ends on a plateau it has
    already tried smaller steps on: its best epoch lies before the cap unless the cap cut it off."""

    def __init__(self, optimiser: torch.optim.Optimizer, settings: TrainSettings, steps_per_epoch: int):
        self.optimiser, self.settings = optimiser, settings
        self.peaks = [group["lr"] for group in optimiser.param_groups]
        self.warmup_steps, self.step_count, self.scale, self.stalled = max(1, steps_per_epoch), 0, 1.0, 0
        self.best = math.inf
        self._apply(1 / (self.warmup_steps + 1))

    def _apply(self, factor: float) -> None:
        for group, peak in zip(self.optimiser.param_groups, self.peaks):
            group["lr"] = peak * factor

    def step(self) -> None:
        """After an optimiser step: the next step's warm-up factor."""
        self.step_count += 1
        if self.step_count <= self.warmup_steps:
            self._apply(min(1.0, (self.step_count + 1) / (self.warmup_steps + 1)) * self.scale)

    def epoch_end(self, val_loss: float) -> None:
        """After an epoch's validation: decay when the loss has not progressed (:func:`progressed`) for
        ``lr_patience`` epochs."""
        if progressed(val_loss, self.best, self.settings.min_delta):
            self.best, self.stalled = val_loss, 0
            return
        self.stalled += 1
        if self.stalled >= self.settings.lr_patience:
            self.scale, self.stalled = self.scale * self.settings.lr_decay, 0
            self._apply(self.scale)

    @property
    def lr(self) -> float:
        """The current learning rate of the first parameter group."""
        return float(self.optimiser.param_groups[0]["lr"])


class SizedEpoch:
    """An epoch of steps whose number is known before it starts (the one-cycle schedule needs it)."""

    def __init__(self, steps: Iterable[Step], n_steps: int):
        self.steps, self.n_steps = steps, n_steps

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return self.n_steps


def _updates_per_epoch(settings: TrainSettings, epoch: Iterable[Step]) -> int:
    if not isinstance(epoch, Sized):
        raise MethodError(f"the {settings.schedule} schedule needs the number of steps per epoch: return a "
                          "SizedEpoch from the epoch function")
    return max(1, math.ceil(len(epoch) / settings.grad_accum))


def _one_cycle(optimiser: torch.optim.Optimizer, settings: TrainSettings, epoch: Iterable[Step]
               ) -> torch.optim.lr_scheduler.OneCycleLR:
    total = settings.max_epochs * _updates_per_epoch(settings, epoch)
    peaks = [group["lr"] for group in optimiser.param_groups]  # settings.lr unless a group sets its own
    # torch divides by the warm-up's length in steps minus one: 0 when it is exactly one step (4 steps in all);
    # such a run (a tiny dataset) then warms up over two steps instead
    warmup = WARMUP_FRACTION if WARMUP_FRACTION * total != 1 else 2 / total
    return torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=peaks, total_steps=total,
                                               pct_start=warmup, anneal_strategy="cos")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch and Python, make cuDNN deterministic, and return a numpy generator for ``seed``."""
    torch.manual_seed(seed)
    random.seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return np.random.default_rng(seed)


def _check_finite(value: float, what: str, epoch: int, step: int | None, lr: float) -> None:
    if not math.isfinite(value):
        where = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
        raise MethodError(f"training diverged: {what} is {value} at {where}; lower the learning rate "
                          f"(lr={lr:g}) or check the input images for NaN/inf")


def _epoch_loss(step_losses: list[torch.Tensor], epoch: int, lr: float) -> float:
    """The sum of an epoch's step losses, read from the device once; raises at the first step whose loss is
    NaN or infinite (the optimiser has taken the rest of the epoch's steps by then, which changes nothing: the
    run fails)."""
    if not step_losses:
        return 0.0
    values = torch.stack(step_losses).double().cpu()
    bad = torch.nonzero(~torch.isfinite(values))
    if len(bad):
        step = int(bad[0, 0])
        _check_finite(float(values[step]), "the training loss", epoch, step + 1, lr)
    return float(values.sum())


def progressed(loss: float, reference: float, min_delta: float) -> bool:
    """Whether ``loss`` is lower than ``reference`` by more than the share ``min_delta`` of it."""
    return loss < reference * (1 - min_delta) if math.isfinite(reference) else loss < reference


Scheduler = torch.optim.lr_scheduler.OneCycleLR | PlateauSchedule


def _optimiser_step(optimiser: torch.optim.Optimizer, scheduler: Scheduler | None, world: World,
                    average: tuple[WeightAverage, torch.nn.Module] | None = None) -> None:
    world.average_gradients(p for group in optimiser.param_groups for p in group["params"])  # alone: nothing
    optimiser.step()
    optimiser.zero_grad(set_to_none=True)
    if average is not None:
        average[0].update(average[1])
    if isinstance(scheduler, PlateauSchedule):
        scheduler.step()
    elif scheduler is not None and scheduler.last_epoch + 1 < scheduler.total_steps:  # type: ignore[attr-defined]
        scheduler.step()  # an epoch longer than the first keeps the final learning rate


def train_model(model: torch.nn.Module, epoch_batches: Callable[[np.random.Generator], Iterable[Step]],
                val_loss: Callable[[torch.nn.Module], float], settings: TrainSettings, seed: int,
                progress: Callable[[str], None] | None = None,
                on_step: Callable[[float, float], None] | None = None,
                loss: TrainingLoss = cross_entropy_loss,
                params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]] | None = None,
                world: World | None = None,
                on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train ``model`` (Adam or SGD) with early stopping on ``val_loss``; restore the best weights.

    Parameters
    ----------
    model : the network (on its device); trained in place.
    epoch_batches : ``rng -> iterable of Step`` (or ``(inputs, targets)`` pairs), one epoch of mini-batches;
        data-parallel, this rank's share as a :class:`SizedEpoch` whose length is the longest share.
    val_loss : ``model -> float``, called under ``torch.no_grad()`` after every epoch (on rank 0 only);
        the method decides the BN mode (running statistics, or plate-wise contexts).
    settings : optimisation settings.
    seed : seeds torch and the batch order.
    progress : called with one line per epoch (e.g. ``print``), or None; on rank 0 only.
    on_step : timing hook, called after every mini-batch with ``(data_seconds, step_seconds)``:
        the wait for the batch (reading, augmenting, copying) and the whole step including that wait.
    loss : the training loss of one step (default: cross-entropy of the labelled rows).
    params : what Adam updates (default: ``model.parameters()``); param groups may set their
        own ``lr``, which is also their peak under the one-cycle schedule. Only ``model``'s
        weights are restored to the best epoch.
    world : the processes training together (:mod:`benchmark.core.training.distributed`); default: the initialised
        default process group, else this process alone.
    on_epoch : called after every epoch's validation (model in ``eval()`` mode, on rank 0 only) with the epoch and
        ``{"train_loss", "val_loss", "lr"}``: a learning curve's hook. It may evaluate the model but must leave its
        weights and statistics as it found them.

    Returns
    -------
    The training report: epochs run, best epoch, the cap, whether the run converged (best epoch below the cap),
    best validation loss, selection rule, optimiser steps, the mean training loss and the validation loss of every
    epoch (training loss over all ranks' batches), the learning rate at the end of every epoch, training time, throughput (all ranks), the
    share of step time spent waiting for data, and the world size and collective backend.

    Raises
    ------
    MethodError
        If a training or validation loss is NaN or infinite (says at which epoch and step), or a data-parallel
        epoch does not say how many steps every rank takes.
    """
    world = World.current() if world is None else world
    rng = seed_everything(seed)
    optimiser = make_optimiser(model.parameters() if params is None else params, settings)
    best_loss, best_epoch, best_state = math.inf, 0, None
    progress_loss, progress_epoch = math.inf, 0  # the last loss that counted as progress (settings.min_delta)
    n_images, start, epoch = 0, time.perf_counter(), 0
    data_seconds = step_seconds = 0.0
    scheduler = None
    n_updates, epoch_losses, val_losses, lrs = 0, [], [], []
    running_stats = RunningStatsSync(model, world)  # alone: does nothing
    average = WeightAverage(model, settings.weight_average) if settings.weight_average > 0 else None
    averaged = (average, model) if average is not None else None
    selected = average.swapped_in if average is not None else _as_is  # the network validated and kept
    for epoch in range(1, settings.max_epochs + 1):
        model.train()
        optimiser.zero_grad(set_to_none=True)
        pending, n_steps, step_losses = 0, 0, []
        running_stats.start()
        this_epoch = epoch_batches(rng)
        if settings.schedule == "onecycle" and scheduler is None:
            scheduler = _one_cycle(optimiser, settings, this_epoch)
        elif settings.schedule == "plateau" and scheduler is None:
            scheduler = PlateauSchedule(optimiser, settings, _updates_per_epoch(settings, this_epoch))
        batches = _in_lockstep(this_epoch, world)
        step = 0
        while True:
            tick = time.perf_counter()
            try:
                item = next(batches)
            except StopIteration:
                break
            step += 1
            if item is not None:  # None: this rank's share is over, it only joins the step's gradient average
                batch = Step(*item)
                waited = time.perf_counter() - tick
                running_stats.before(world.position(step - 1))
                step_loss = loss(model, batch)
                (step_loss / settings.grad_accum).backward()
                running_stats.after()  # after the backward pass, which needs the statistics as the forward left them
                step_losses.append(step_loss.detach())  # read once per epoch: no host sync per step
            pending += 1
            if pending == settings.grad_accum:
                _optimiser_step(optimiser, scheduler, world, averaged)
                pending, n_updates = 0, n_updates + 1
            if item is None:
                continue
            n_steps += 1
            n_images += len(batch.inputs)
            took = time.perf_counter() - tick
            data_seconds, step_seconds = data_seconds + waited, step_seconds + took
            if on_step is not None:
                on_step(waited, took)
        if pending:
            _optimiser_step(optimiser, scheduler, world, averaged)
            n_updates += 1
        train_loss = _epoch_loss(step_losses, epoch, settings.lr)
        total, count = world.sum([train_loss, n_steps])
        epoch_losses.append(total / max(count, 1))
        running_stats.finish(int(count))  # BN running statistics: one process's after all ranks' batches
        model.eval()
        if average is not None:
            average.sync(world)
        current = math.nan
        with selected(model):
            if world.rank == 0:
                with torch.no_grad():
                    current = float(val_loss(model))
            current = world.broadcast(current)  # every rank takes rank 0's decisions
            _check_finite(current, "the validation loss", epoch, None, settings.lr)
            val_losses.append(current)
            lrs.append(float(optimiser.param_groups[0]["lr"]))
            if on_epoch is not None and world.rank == 0:
                with torch.no_grad():
                    on_epoch(epoch, {"train_loss": epoch_losses[-1], "val_loss": current, "lr": lrs[-1]})
            improved = current < best_loss
            if improved:
                best_loss, best_epoch = current, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if progressed(current, progress_loss, settings.min_delta):
                progress_loss, progress_epoch = current, epoch
        if isinstance(scheduler, PlateauSchedule):
            scheduler.epoch_end(current)
        if progress is not None and world.rank == 0:
            progress(f"epoch {epoch:3d}  train loss {epoch_losses[-1]:.4f}  "
                     f"val loss {current:.4f}{'  *' if improved else ''}")
        if epoch - progress_epoch >= settings.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    seconds = time.perf_counter() - start
    n_images = int(world.sum([n_images])[0])
    return {"epochs_run": epoch, "best_epoch": best_epoch, "max_epochs": settings.max_epochs,
            "converged": best_epoch < settings.max_epochs, "best_val_loss": best_loss, "schedule": settings.schedule,
            "optimizer": settings.optimizer, "selection": SELECTION_RULE, "optimiser_steps": n_updates,
            "train_loss": epoch_losses, "val_loss": val_losses, "lr": lrs,
            "train_seconds": round(seconds, 3),
            "images_per_second": round(n_images / seconds, 1) if seconds > 0 else None,
            "data_wait_fraction": round(data_seconds / step_seconds, 4) if step_seconds > 0 else None,
            **world.report()}


@contextmanager
def _as_is(model: torch.nn.Module) -> Iterator[None]:
    yield


def _in_lockstep(epoch: Iterable[Step], world: World) -> Iterator[Step | tuple | None]:
    """The epoch's steps; data-parallel, padded with None to the ``len(epoch)`` steps every rank takes."""
    if world.size == 1:
        return iter(epoch)
    if not isinstance(epoch, Sized):
        raise MethodError(f"data-parallel training on {world.size} processes needs to know how many steps every "
                          "rank takes: return a SizedEpoch of this rank's share (benchmark.core.training.loader.epochs does)")

    def padded() -> Iterator[Step | tuple | None]:
        n = 0
        for item in epoch:
            n += 1
            if n > len(epoch):
                raise MethodError(f"rank {world.rank}'s share of the epoch holds more than the {len(epoch)} steps its "
                                  "SizedEpoch announced; the ranks would fall out of step")
            yield item
        yield from [None] * (len(epoch) - n)
    return padded()


def stderr_progress(prefix: str) -> Callable[[str], None]:
    """A progress callback printing ``prefix: line`` to stderr."""
    def report(line: str) -> None:
        print(f"{prefix}: {line}", file=sys.stderr, flush=True)
    return report
