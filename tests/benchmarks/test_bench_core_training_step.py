"""One training step (forward, backward, Adam) of the CPU default model and of the reference ResNet-50.

Variants: memory format (contiguous vs channels-last), torch threads (1 vs 2), bf16
autocast, and ``torch.compile``. Inputs are prepared in advance: this measures the
model's arithmetic only (the loader has its own benchmark). BatchNorm runs in
training mode, as in every method's training loop.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmark.core.training.backbones import create_backbone

MODELS = {"resnet_micro": dict(batch=64, side=40, steps=5, rounds=3),   # CS-ARM-BN default: 32 treated + 32 DMSO
          "resnet50": dict(batch=2, side=256, steps=1, rounds=2)}       # reference model and crop, tiny batch
SMOKE = {"resnet_micro": dict(batch=4, side=40, steps=1, rounds=1),
         "resnet50": dict(batch=2, side=32, steps=1, rounds=1)}
"""The smoke run's sizes (one small step each, on one thread: two threads on a busy 2-core machine take ~10x
longer); a compiled variant there goes through dynamo with the eager backend, which checks the benchmark's code
without paying inductor's compilation."""
VARIANTS = [  # (model, threads, channels_last, precision, compiled)
    ("resnet_micro", 1, False, "fp32", False),
    ("resnet_micro", 1, True, "fp32", False),
    ("resnet_micro", 2, False, "fp32", False),
    ("resnet_micro", 2, True, "fp32", False),
    ("resnet_micro", 1, True, "bf16", False),
    ("resnet_micro", 1, True, "fp32", True),
    ("resnet50", 1, False, "fp32", False),
    ("resnet50", 1, True, "fp32", False),
    ("resnet50", 2, True, "fp32", False),
]


def _label(v) -> str:
    model, threads, cl, precision, compiled = v
    return f"{model}-t{threads}-{'cl' if cl else 'nchw'}-{precision}{'-compile' if compiled else ''}"


@pytest.mark.parametrize("variant", VARIANTS, ids=_label)
def test_train_step(benchmark, smoke, variant):
    """Images/s of training steps = batch * steps / time."""
    model_name, threads, channels_last, precision, compiled = variant
    spec = (SMOKE if smoke else MODELS)[model_name]
    torch.set_num_threads(1 if smoke else threads)
    torch.manual_seed(0)
    model = create_backbone(model_name).train()
    x = torch.randn(spec["batch"], 5, spec["side"], spec["side"])
    y = torch.randint(0, 8, (spec["batch"],))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = model
    if compiled:
        try:
            forward = torch.compile(model, backend="eager" if smoke else "inductor")
            forward(x)  # compile outside the timed rounds
        except Exception as exc:  # noqa: BLE001 - an unavailable compiler is a result, not a failure
            pytest.skip(f"torch.compile unavailable here: {type(exc).__name__}: {str(exc)[:120]}")

    def steps():
        for _ in range(spec["steps"]):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = forward(x)
            loss = F.cross_entropy(logits.float(), y)
            loss.backward()
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)

    benchmark.pedantic(steps, rounds=spec["rounds"], warmup_rounds=1)
    benchmark.group = f"train step {model_name} {spec['side']}px batch {spec['batch']}"
    benchmark.extra_info.update(kind="train_step", model=model_name, threads=threads, channels_last=channels_last,
                                precision=precision, compiled=compiled, n_images=spec["batch"] * spec["steps"],
                                baseline=_label((model_name, 1, False, "fp32", False)))
