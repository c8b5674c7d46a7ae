"""Data-parallel training of one model on several processes (DDP): who this process is, its process group,
and the few collectives the training loop needs.

``torchrun --nproc-per-node N --no-python bench run ...`` starts N copies of ``bench run``, each told its place
by torchrun's environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``:
:func:`launch`). Every copy walks the same runs; for each run, every copy's sealed worker joins one process
group (:func:`process_group`: gloo on the CPU, NCCL on GPUs, one GPU per local rank) and trains its share of
the epoch's mini-batches; :class:`World` then averages the gradients before every optimiser step, so every rank
takes the same steps and holds the same weights. Only rank 0 validates (its loss is broadcast), evaluates and
writes the record.

What is averaged and what stays per rank: a mini-batch is still formed by the method's sampler (one plate for
the one-plate methods) and normalised by BatchNorm over its own rows, on its own rank (plain BN, not
SyncBatchNorm); gradients are averaged at every optimiser step; BN running statistics are merged at the end of
every epoch, before validation, into exactly the moving averages one process would hold after the whole
sequence of batches (:class:`RunningStatsSync`); every other buffer is rank 0's.

Rendezvous. All ranks meet in a TCP key-value store (:class:`torch.distributed.TCPStore`): the one torchrun's
agent hosts (``TORCHELASTIC_USE_AGENT_STORE=True``), else one that rank 0's ``bench run`` hosts
(:class:`Coordinator`, which says so to its workers through :data:`HOSTED_ENV`), else, for a training outside
``bench run``, one that rank 0's training hosts itself. Each run's group lives under its own key prefix
(:data:`RUN_ENV`, set by the evaluators, who agree on it run by run), so the groups of successive sealed
workers never read each other's keys.

With ``WORLD_SIZE`` unset or 1 nothing here runs: :class:`World` is size 1 and every method is an identity.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from ...errors import BenchError
from .accel import is_cuda
from .bn_stats import bn_layers

RUN_ENV = "PLATEBENCH_DDP_RUN"
"""The key prefix of the current run's process group; the evaluators set it for their sealed workers."""
HOSTED_ENV = "PLATEBENCH_DDP_STORE_HOSTED"
"""Set (to ``1``) by a rank-0 ``bench run`` that hosts the store: its workers connect to it instead of hosting."""
AGENT_ENV = "TORCHELASTIC_USE_AGENT_STORE"
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
GROUP_TIMEOUT_S = 1800.0
"""How long a rank waits for the others in the rendezvous and in a collective (rank 0 validating, say)."""

T = TypeVar("T")


class DistributedError(BenchError):
    """A multi-process launch is misconfigured, or its ranks disagree on what they run."""


# ----------------------------------------------------------------------------- the launch


@dataclass(frozen=True)
class Launch:
    """This process's place in a multi-process launch, as torchrun's environment variables give it."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    store_hosted: bool  # the store runs elsewhere (torchrun's agent, or rank 0's bench run): connect as a client

    @property
    def hosts_store(self) -> bool:
        """Whether this process must host the rendezvous store itself."""
        return self.rank == 0 and not self.store_hosted


def launch(environ: Mapping[str, str] | None = None) -> Launch | None:
    """This process's :class:`Launch`, or None when it is not one of several (``WORLD_SIZE`` unset or 1).

    Raises
    ------
    DistributedError
        If a variable is missing or not a number, or the rank lies outside the world.
    """
    env = os.environ if environ is None else environ
    if env.get("WORLD_SIZE", "1").strip() in ("", "1"):
        return None
    missing = [name for name in LAUNCH_ENV if not env.get(name, "").strip() and name != "LOCAL_RANK"]
    if missing:
        raise DistributedError(f"WORLD_SIZE={env['WORLD_SIZE']} asks for a multi-process training, but "
                               f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; launch with "
                               "torchrun (torchrun --nproc-per-node N --no-python bench run ...), which sets "
                               f"{', '.join(LAUNCH_ENV)}")
    numbers = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        text = env.get(name, env["RANK"] if name == "LOCAL_RANK" else "")
        try:
            numbers[name] = int(text)
        except ValueError:
            raise DistributedError(f"{name}={text!r} is not an integer; launch with torchrun, which sets "
                                   f"{', '.join(LAUNCH_ENV)}") from None
    size, rank = numbers["WORLD_SIZE"], numbers["RANK"]
    if size < 1 or not 0 <= rank < size:
        raise DistributedError(f"RANK={rank} does not lie in a world of WORLD_SIZE={size} processes (valid ranks: "
                               f"0 to {size - 1}); launch with torchrun")
    hosted = env.get(AGENT_ENV) == "True" or env.get(HOSTED_ENV) == "1"
    return Launch(rank, size, numbers["LOCAL_RANK"], env["MASTER_ADDR"], numbers["MASTER_PORT"], hosted)


def _store(found: Launch, timeout_s: float) -> dist.TCPStore:
    """The launch's rendezvous store: hosted here (:attr:`Launch.hosts_store`) or connected to."""
    host = found.hosts_store
    try:
        return dist.TCPStore(found.master_addr, found.master_port, found.world_size if host else None,
                             is_master=host, timeout=timedelta(seconds=timeout_s), wait_for_workers=False,
                             multi_tenant=True)
    except (RuntimeError, OSError) as exc:  # torch raises DistNetworkError (a RuntimeError)
        role = "host" if host else "reach"
        raise DistributedError(f"rank {found.rank} could not {role} the rendezvous store at "
                               f"{found.master_addr}:{found.master_port} ({type(exc).__name__}: {exc}); check "
                               "MASTER_ADDR and MASTER_PORT, and that rank 0 runs") from None


# ----------------------------------------------------------------------------- the evaluators' agreement


@dataclass(frozen=True)
class Turn:
    """One run as the ranks agreed on it: whether to fit it (rank 0's decision) and its group's key prefix."""

    fit: bool
    key: str

    @contextmanager
    def environment(self) -> Iterator[None]:
        """Inside: :data:`RUN_ENV` names this run's group (a sealed worker started inside inherits it)."""
        before = os.environ.get(RUN_ENV)
        os.environ[RUN_ENV] = self.key
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(RUN_ENV, None)
            else:
                os.environ[RUN_ENV] = before


class Coordinator:
    """The evaluators (``bench run`` processes) of one launch, agreeing run by run on what rank 0 decided.

    Rank 0 decides whether a run is fitted (it is skipped when rank 0 already holds its record) and the
    others follow, so every rank's sealed worker joins the same group even when the records are not on a
    shared disk. A rank waits for rank 0 (up to ``timeout_s``) before it starts the run's worker.
    """

    def __init__(self, found: Launch, timeout_s: float):
        self.launch = found
        self._store = _store(found, timeout_s)
        if found.hosts_store:
            os.environ[HOSTED_ENV] = "1"  # this process's workers connect to the store it hosts
        # every rank counts its coordinators and their turns alike: the n-th turn of the k-th is the same run on all
        self._space = f"platebench/c{self._store.add(f'platebench/coordinators/rank{found.rank}', 1)}"
        self._turns = itertools.count()

    @property
    def rank(self) -> int:
        return self.launch.rank

    def turn(self, run: str, fit: bool) -> Turn:
        """Rank 0's decision for ``run`` (its own ``fit`` on rank 0); raises if the ranks reached different runs."""
        key = f"{self._space}/turn{next(self._turns)}"
        if self.rank == 0:
            self._store.set(key, json.dumps({"run": run, "fit": fit}))
            return Turn(fit, key)
        try:
            decided = json.loads(self._store.get(key))
            decided_run, decided_fit = str(decided["run"]), bool(decided["fit"])
        except RuntimeError as exc:  # the store's timeout, or rank 0 gone
            raise DistributedError(f"rank {self.rank} waited in vain for rank 0 to reach {run} ({exc}); every rank "
                                   "must run the same command") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise DistributedError(f"rank {self.rank} read an unreadable decision of rank 0 for {run} at {key} "
                                   f"({exc}); something else writes into the rendezvous store") from None
        if decided_run != run:
            raise DistributedError(f"rank {self.rank} reached {run} where rank 0 reached {decided_run}: the "
                                   "ranks run different commands; start every rank with the same arguments")
        return Turn(decided_fit, key)


# ----------------------------------------------------------------------------- the group of one training


@dataclass(frozen=True)
class World:
    """The processes one model trains on (size 1: this process alone, no group) and their collectives.

    Every collective is an identity at size 1, so a caller needs no branch of its own.
    """

    rank: int = 0
    size: int = 1
    backend: str | None = None

    @classmethod
    def current(cls) -> World:
        """The default process group, if one is initialised; else a world of one."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), str(dist.get_backend()))
        return cls()

    def report(self) -> dict[str, int | str | None]:
        """What a fit report says about it."""
        return {"world_size": self.size, "backend": self.backend}

    # -- sharding -------------------------------------------------------------------------------
    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every ``size``-th item from its rank on (disjoint, all covered)."""
        return list(items[self.rank::self.size])

    def steps(self, n: int) -> int:
        """Steps every rank takes through a sequence of ``n`` items: the longest share (a shorter one idles last)."""
        return math.ceil(n / self.size)

    def position(self, step: int) -> int:
        """Where this rank's ``step``-th item (from 0) of its :meth:`shard` lies in the whole sequence."""
        return step * self.size + self.rank

    # -- collectives ----------------------------------------------------------------------------
    @property
    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Set every gradient to its mean over the ranks (one all-reduce per device and dtype).

        A rank without a gradient for a parameter (its share of the step was empty) counts zeros; a
        parameter that has no gradient on any rank keeps none, so the optimiser skips it as it would alone.
        """
        if self.size == 1:
            return
        for group in _by_kind([p for p in params if p.requires_grad]).values():
            has = torch.tensor([p.grad is not None for p in group], dtype=group[0].dtype, device=group[0].device)
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group]
                             + [has])
            dist.all_reduce(flat)
            counts = flat[-len(group):].tolist()
            start = 0
            for p, count in zip(group, counts):
                mean = flat[start:start + p.numel()].view(p.shape).div_(self.size)
                start += p.numel()
                if count == 0:
                    p.grad = None
                elif p.grad is None:
                    p.grad = torch.empty_like(p).copy_(mean)
                else:
                    p.grad.copy_(mean)

    def broadcast_tensors(self, tensors: Iterable[torch.Tensor]) -> None:
        """Overwrite ``tensors`` (in place) with rank 0's (one broadcast per device and dtype)."""
        if self.size == 1:
            return
        for group in _by_kind(list(tensors)).values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.broadcast(flat, src=0)
            _unflatten(flat, group)

    def broadcast(self, value: float) -> float:
        """Rank 0's ``value`` on every rank."""
        if self.size == 1:
            return value
        x = torch.tensor([value], dtype=torch.float64, device=self._device)
        dist.broadcast(x, src=0)
        return float(x.item())

    def sum(self, values: Sequence[float]) -> list[float]:
        """The element-wise sum of ``values`` over the ranks."""
        if self.size == 1:
            return list(values)
        x = torch.tensor(list(values), dtype=torch.float64, device=self._device)
        dist.all_reduce(x)
        return x.tolist()

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank."""
        if self.size == 1:
            return flag
        x = torch.tensor([int(flag)], dtype=torch.int64, device=self._device)
        dist.all_reduce(x, op=dist.ReduceOp.MIN)
        return bool(x.item())


class RunningStatsSync:
    """BN running statistics of a data-parallel training kept as one process's (an identity at size 1).

    A BN layer's running statistic is an exponential moving average, ``r <- (1 - m) r + m s`` per batch
    statistic ``s``: linear in every ``s``. Each rank updates it with its own batches and, for every batch of
    the other ranks, only decays it: :meth:`after` applies, after each of its batches, the decays of the
    batches skipped before it as if they had come first. At the end of the epoch (:meth:`finish`) the sum
    over the ranks holds every batch's term with one process's weight, plus ``size - 1`` surplus copies of
    the decayed starting value, which are taken off: the result is one process's statistics after the whole
    sequence of batches, up to rounding. ``num_batches_tracked`` becomes one process's count. A layer with
    ``momentum=None`` (a cumulative average) gets the mean of the ranks' averages. Every other buffer of the
    model is overwritten with rank 0's. All of it stays on the device (no synchronisation per batch).
    """

    def __init__(self, model: torch.nn.Module, world: World):
        self.world, self.model = world, model
        self.layers = [layer for layer in bn_layers(model)
                       if layer.track_running_stats and layer.running_mean is not None] if world.size > 1 else []
        self._per_batch = [torch.ones((), dtype=torch.int64, device=layer.running_mean.device)  # type: ignore
                           for layer in self.layers]  # running-statistic updates of a layer per batch
        self._last = -1

    def _state(self) -> list[tuple[torch.Tensor, ...]]:
        return [(layer.running_mean.detach().clone(), layer.running_var.detach().clone(),  # type: ignore[union-attr]
                 layer.num_batches_tracked.detach().clone()) for layer in self.layers]  # type: ignore[union-attr]

    def start(self) -> None:
        """At the start of an epoch: remember the statistics every rank starts from (the same on all)."""
        self._start, self._last = self._state(), -1

    def before(self, position: int) -> None:
        """Before the forward pass of this rank's batch at ``position`` in the epoch's sequence of batches."""
        if self.layers:
            self._skipped = position - self._last - 1  # the other ranks' batches since this rank's previous one
            self._last = position
            self._before = self._state()

    def after(self) -> None:
        """After its backward pass: apply the decays of the skipped batches where they belong, before this
        batch's update (not earlier: BN's backward checks that its statistics are as the forward left them)."""
        if not self.layers:
            return
        for i, (layer, (mean, var, count)) in enumerate(zip(self.layers, self._before)):
            if layer.momentum is None:
                continue
            updates = layer.num_batches_tracked - count  # type: ignore[operator]
            self._per_batch[i] = torch.where(updates > 0, updates, self._per_batch[i])
            f = torch.pow(1 - layer.momentum, updates)  # this batch's decay of the value before it
            lift = f * (f ** self._skipped - 1)  # true value: observed + f (f^skipped - 1) value before
            layer.running_mean.add_(mean * lift)  # type: ignore[union-attr]
            layer.running_var.add_(var * lift)  # type: ignore[union-attr]

    def finish(self, n: int) -> None:
        """At the end of an epoch of ``n`` batches over all ranks: merge the ranks' statistics (the same on all)."""
        if self.world.size == 1:
            return
        tail = n - 1 - self._last  # the other ranks' batches after this rank's last one
        stats: list[torch.Tensor] = []
        surplus: list[torch.Tensor] = []  # what the sum over the ranks holds too many of, per statistic
        extra = self.world.size - 1
        for i, (layer, (mean, var, count)) in enumerate(zip(self.layers, self._start)):
            pair = [layer.running_mean, layer.running_var]
            if layer.momentum is None:  # a cumulative average: the mean of the ranks'
                for t in pair:
                    t.div_(self.world.size)  # type: ignore[union-attr]
                surplus += [torch.zeros_like(mean), torch.zeros_like(var)]
            else:
                f = torch.pow(1 - layer.momentum, self._per_batch[i])
                for t in pair:
                    t.mul_(f ** tail)  # type: ignore[union-attr]
                surplus += [mean * (extra * f ** n), var * (extra * f ** n)]  # the starting value, decayed n times
            stats += [*pair, layer.num_batches_tracked]  # type: ignore[list-item]
            surplus.append(count * extra)
        for group in _by_kind(stats).values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat)
            _unflatten(flat, group)
        for t, too_many in zip(stats, surplus):
            t.sub_(too_many)
        tracked = {id(t) for t in stats}
        self.world.broadcast_tensors(b for b in self.model.buffers() if id(b) not in tracked)


def _by_kind(tensors: list[torch.Tensor]) -> dict[tuple[torch.device, torch.dtype], list[torch.Tensor]]:
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return groups


def _unflatten(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    start = 0
    for t in tensors:
        t.copy_(flat[start:start + t.numel()].view(t.shape))
        start += t.numel()


def backend_for(device: str | torch.device) -> str:
    """The collective backend of a training on ``device``: NCCL on CUDA, gloo elsewhere."""
    return "nccl" if is_cuda(device) else "gloo"


@contextmanager
def process_group(device: str | torch.device, timeout_s: float = GROUP_TIMEOUT_S) -> Iterator[World]:
    """Inside: this process is one rank of its launch's process group, and the :class:`World` says which.

    Outside a launch (``WORLD_SIZE`` unset or 1) it yields a world of one and starts nothing. An already
    initialised default group is used as it is and left alone. On CUDA the process takes the GPU of its
    local rank. The group's keys live under :data:`RUN_ENV` (set by the evaluators for a sealed run), else
    under a per-rank count of the groups started, which is the same on every rank when all train alike.
    """
    if dist.is_available() and dist.is_initialized():
        yield World.current()
        return
    found = launch()
    if found is None:
        yield World()
        return
    backend = backend_for(device)
    if backend == "nccl":
        if found.local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK={found.local_rank} but this machine shows "
                                   f"{torch.cuda.device_count()} GPU(s); start at most that many processes per "
                                   "node (torchrun --nproc-per-node)")
        torch.cuda.set_device(found.local_rank)
    base = _store(found, timeout_s)
    prefix = os.environ.get(RUN_ENV) or f"platebench/group{base.add(f'platebench/groups/rank{found.rank}', 1)}"
    dist.init_process_group(backend, store=dist.PrefixStore(prefix + "/", base), rank=found.rank,
                            world_size=found.world_size, timeout=timedelta(seconds=timeout_s))
    try:
        yield World(found.rank, found.world_size, backend)
    finally:
        dist.destroy_process_group()


__all__ = ["Coordinator", "DistributedError", "Launch", "Turn", "World", "backend_for", "launch", "process_group"]
