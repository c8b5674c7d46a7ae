"""What the zygote imports once, so that every sealed worker forked from it starts in milliseconds.

Only label-free code: the numeric libraries, platebench's harness and the built-in
methods. Plugins are never imported here: a worker imports them itself, under its
audit hook. Each import is tried on its own, so a library that fails to import costs
its workers that import later, never the zygote.

It also runs one tiny training step of a small ResNet (:func:`warm_torch`): torch's
first forward and backward pass in a process costs about a second of one-time set-up,
which every worker would otherwise pay again. The step runs on one thread (no thread
pool exists when workers are forked) and leaves torch's thread count and random
state as it found them, so a worker computes exactly what the evaluator's own process would.
"""

from __future__ import annotations

import importlib
import pkgutil

HEAVY = ("numpy", "polars", "pyarrow", "torch", "timm", "sklearn", "scipy",
         # the profiles extra (absent without it): inmoose's import runs `uname -p` and ctypes look-ups a sealed
         # worker refuses, and the four take ~4 s to import, paid here once instead of in every worker
         "inmoose.pycombat", "harmonypy", "pycytominer.operations.transform", "copairs.map", "copairs.matching")
HARNESS = ("benchmark.sealed.worker", "benchmark.protocol.evaluation", "benchmark.registry", "benchmark.core")


def _builtin_methods() -> list[str]:
    from .. import methods

    return [f"{methods.__name__}.{m.name}" for m in pkgutil.iter_modules(methods.__path__)
            if not m.name.startswith("_") and m.name != "base"]


def warm_torch() -> None:
    """One training step and one evaluation pass of a small ResNet, on one thread (see module docstring)."""
    import torch
    import torch.nn.functional as F

    from ..core.training.backbones import create_backbone

    threads, state = torch.get_num_threads(), torch.get_rng_state()
    torch.set_num_threads(1)
    try:
        model = create_backbone("resnet_micro").to(memory_format=torch.channels_last)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.randn(4, 5, 32, 32).contiguous(memory_format=torch.channels_last)
        model.train()
        F.cross_entropy(model(x), torch.arange(4)).backward()
        optimiser.step()
        model.eval()
        with torch.no_grad():
            torch.softmax(model(x).double(), dim=1)
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(state)


def preload(warm: bool = True) -> None:
    """Import the heavy libraries and the harness, then (``warm``: the zygote) the built-in methods and one
    training step; errors are left to the workers."""
    for name in HEAVY + HARNESS:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - a worker will report it, with the method's context
            continue
    if not warm:
        return
    for step in (lambda: [importlib.import_module(name) for name in _builtin_methods()], warm_torch):
        try:
            step()
        except Exception:  # noqa: BLE001, S110
            pass
