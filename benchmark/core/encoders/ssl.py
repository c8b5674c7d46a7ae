"""The shipped encoder ``platebench-ssl``: a small 5-channel ResNet pretrained without labels.

Weights are a safetensors file with a JSON config next to it (same stem): backbone
name, embedding width, the per-channel pixel statistics of its pretraining images and
how it was pretrained. ``bench methods pretrain-encoder`` regenerates them
(:mod:`benchmark.core.encoders.simclr`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ...errors import MethodError
from ..training.backbones import create_backbone
from .registry import register_encoder_backend
from .module import ModuleEncoder
from ..training.preprocess import ChannelStats, normalise

NAME = "platebench-ssl"


def _methods_folder() -> Path:
    """The built-in methods' folder (found by name, not imported: core never imports methods)."""
    spec = importlib.util.find_spec("benchmark.methods")
    assert spec is not None and spec.submodule_search_locations, "benchmark.methods is not installed"
    return Path(next(iter(spec.submodule_search_locations))).resolve()


WEIGHTS = _methods_folder() / "weights" / "platebench_ssl.safetensors"
"""Where the shipped weights live: ``methods/weights/`` in the repository, ``benchmark/methods/weights/`` installed."""


def config_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_encoder(path: Path, backbone: torch.nn.Module, config: dict[str, Any]) -> tuple[Path, Path]:
    """Write the backbone's weights (safetensors) and ``config`` (JSON, same stem); return both paths.

    Each file is written next to its destination and renamed over it, so an interrupted write never
    leaves a truncated encoder; the weights are made world-readable (safetensors writes them 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    partial = path.with_name(f".{path.name}.partial")
    save_file(state, str(partial))
    partial.chmod(0o644)
    meta_partial = path.with_name(f".{config_path(path).name}.partial")
    meta_partial.write_text(json.dumps(config, indent=1))
    os.replace(partial, path)
    os.replace(meta_partial, config_path(path))
    return path, config_path(path)


def load_backbone(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The pretrained feature extractor and its config from ``path`` (safetensors + JSON)."""
    path = Path(path)
    if not path.is_file() or not config_path(path).is_file():
        raise MethodError(f"encoder weights {path} (and its {config_path(path).name}) not found; "
                          "regenerate them with `bench methods pretrain-encoder --out PATH`")
    config = json.loads(config_path(path).read_text())
    backbone = create_backbone(config["backbone"], num_classes=0)
    try:
        backbone.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise MethodError(f"encoder weights {path} do not fit backbone {config['backbone']}: {exc}") from None
    return backbone.eval(), config


@register_encoder_backend(NAME)
def platebench_ssl(argument: str | None, device: str) -> ModuleEncoder:
    """The shipped self-supervised encoder (``platebench-ssl``) or one at ``platebench-ssl:<path>``."""
    path = Path(argument) if argument else WEIGHTS
    backbone, config = load_backbone(path)
    stats = ChannelStats(np.asarray(config["channel_mean"], np.float32), np.asarray(config["channel_std"], np.float32))
    name = NAME if argument is None else f"{NAME}:{path}"
    return ModuleEncoder(name, backbone, int(config["dim"]), lambda x: normalise(x, stats, device), device)

