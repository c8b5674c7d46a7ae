"""Pretrained encoders from local files: timm, transformers and OpenPhenom backends.

Specs (``fm_tvn``'s ``encoder`` option):

``timm:<dir>``
    A timm model folder as the Hugging Face hub holds it (``config.json`` with
    ``architecture``, ``model_args`` and ``pretrained_cfg``, and ``model.safetensors``
    or ``pytorch_model.bin``), e.g. a download of ``timm/vit_small_patch14_dinov2.lvd142m``.
``timm:<model_name>@<checkpoint>``
    A timm architecture name and a state-dict file (``.safetensors``, ``.pth``, ``.bin``).
``hf:<dir>``
    A transformers model folder, loaded with ``AutoModel.from_pretrained(dir)`` offline
    (e.g. ``facebook/dinov2-small``); the embedding is ``pooler_output`` (else the
    first token of ``last_hidden_state``).
``openphenom:<dir>``
    The OpenPhenom folder (``huggingface_mae.py`` with ``MAEModel``, its helper modules,
    ``config.json`` and weights, from https://huggingface.co/recursionpharma/OpenPhenom);
    channel-agnostic, so it gets all five channels at once, at 256 x 256.

**Channels.** An encoder that takes 5 channels gets the image as it is. A three-channel
(RGB) encoder gets the five Cell Painting channels *one at a time*: each channel is
repeated to RGB, embedded, and the five embeddings are concatenated in the order
RNA, ER, AGP, Mito, DNA (``dim = 5 x`` the encoder's width). This keeps every channel's
information separate and uses the encoder on inputs resembling its grey-level
training statistics, instead of an arbitrary mapping of five channels to three
colours. A one-channel encoder is handled the same way without the repetition.
Images are scaled to ``[0, 1]``, resized (bilinear) to the encoder's input size and
normalised with its mean and standard deviation.

Nothing is downloaded: every path must exist locally (``HF_HUB_OFFLINE`` style).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...constants import CHANNELS
from ...errors import BenchError
from .registry import register_encoder_backend
from .module import ModuleEncoder

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPENPHENOM_SIZE = 256


class ChannelwiseEncoder(nn.Module):
    """Run a ``k``-channel backbone (k = 1 or 3) on each of the image's channels; concatenate.

    Input: float images ``(B, C, H, W)`` in ``[0, 1]``; output ``(B, C * width)``.
    With ``k == C`` the image is passed whole and the output is ``(B, width)``.
    """

    def __init__(self, backbone: nn.Module, in_chans: int, size: tuple[int, int],
                 mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.backbone, self.in_chans, self.size = backbone, in_chans, tuple(size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if c == self.in_chans:
            return self.backbone(self._prepare(x)).reshape(b, -1)
        per_channel = x.reshape(b * c, 1, h, w).expand(-1, self.in_chans, -1, -1)
        return self.backbone(self._prepare(per_channel)).reshape(b, -1)


def _per_channel(values, n: int) -> tuple[float, ...]:
    """Mean/std values for ``n`` input channels (a list of another length is averaged)."""
    values = tuple(float(v) for v in values)
    return values if len(values) == n else (sum(values) / len(values),) * n


def _to_unit(device: str):
    def prepare(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(images)).to(device).float().div_(255.0)
    return prepare


def _require_path(path: str | None, backend: str, expected: str) -> Path:
    if not path:
        raise BenchError(f"encoder backend '{backend}' needs a local path: use '{backend}:<path>' ({expected})")
    p = Path(path).expanduser()
    if not p.exists():
        raise BenchError(f"encoder path {p} does not exist; expected {expected}")
    return p


def _read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means an unreadable checkpoint
        raise BenchError(f"cannot read the checkpoint {file} ({type(exc).__name__}: {exc}); expected a "
                         "PyTorch state dict (.safetensors, .pth or .bin)") from None
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise BenchError(f"{file} does not hold a state dict (found {type(state).__name__})")
    return state


def _load_timm_weights(model: nn.Module, state: dict, path: Path, arch: str) -> None:
    head = model.pretrained_cfg.get("classifier") or "head"
    heads = (head,) if isinstance(head, str) else tuple(head)
    state = {k: v for k, v in state.items() if not any(k == h or k.startswith(f"{h}.") for h in heads)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)[:200]]
        raise BenchError(f"{path} holds weights of another architecture than timm '{arch}' "
                         f"({first[0].strip()})") from None
    if result.missing_keys:
        raise BenchError(f"{path} holds weights of another architecture than timm '{arch}': "
                         f"{len(result.missing_keys)} parameters missing (e.g. {', '.join(result.missing_keys[:3])})")


@register_encoder_backend("timm")
def timm_encoder(argument: str | None, device: str) -> ModuleEncoder:
    """``timm:<dir>`` or ``timm:<model_name>@<checkpoint>`` (see the module docstring)."""
    import timm

    expected = ("a timm model folder (config.json + model.safetensors or pytorch_model.bin) or "
                "'<model_name>@<checkpoint file>'")
    if argument and "@" in argument and not Path(argument).expanduser().exists():
        arch, _, file = argument.partition("@")
        path = _require_path(file, "timm", expected)
        model_args, pretrained_cfg = {}, None
        weights = path
    else:
        path = _require_path(argument, "timm", expected)
        config_file = path / "config.json"
        if not path.is_dir() or not config_file.is_file():
            raise BenchError(f"encoder path {path} is not a timm model folder (no config.json); expected {expected}")
        try:
            config = json.loads(config_file.read_text())
            arch = config["architecture"]
        except (ValueError, KeyError):
            raise BenchError(f"{config_file} is not a timm config (no 'architecture'); expected {expected}") from None
        model_args, pretrained_cfg = dict(config.get("model_args", {})), config.get("pretrained_cfg")
        files = [path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()]
        if not files:
            raise BenchError(f"{path} has no model.safetensors or pytorch_model.bin; expected {expected}")
        weights = files[0]
    model_args["num_classes"] = 0
    try:
        model = timm.create_model(arch, pretrained=False, pretrained_cfg_overlay=pretrained_cfg, **model_args)
    except Exception as exc:  # noqa: BLE001 - unknown names and bad arguments
        raise BenchError(f"{path}: timm cannot build '{arch}' ({type(exc).__name__}: {exc})") from None
    _load_timm_weights(model, _read_state_dict(weights), path, arch)
    cfg = model.pretrained_cfg
    in_chans = int(model_args.get("in_chans", cfg.get("input_size", (3,))[0]))
    size = tuple(cfg.get("input_size", (3, 224, 224))[-2:])
    mean = _per_channel(cfg.get("mean", IMAGENET_MEAN), in_chans)
    std = _per_channel(cfg.get("std", IMAGENET_STD), in_chans)
    wrapped = ChannelwiseEncoder(model, in_chans, size, mean, std)
    dim = int(model.num_features) * (1 if in_chans == len(CHANNELS) else len(CHANNELS))
    return ModuleEncoder(f"timm:{argument}", wrapped, dim, _to_unit(device), device)


class _HFFeatures(nn.Module):
    """A transformers model -> one feature vector per image."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state[:, 0]
        return pooled.reshape(pooled.shape[0], -1)


def _hf_size(config, processor: dict) -> tuple[int, int]:
    size = processor.get("crop_size") or processor.get("size") or getattr(config, "image_size", 224)
    if isinstance(size, dict):
        if "height" in size:
            return int(size["height"]), int(size["width"])
        side = size.get("shortest_edge", 224)
        return int(side), int(side)
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[-1])
    return int(size), int(size)


@register_encoder_backend("hf")
def hf_encoder(argument: str | None, device: str) -> ModuleEncoder:
    """``hf:<dir>``: ``transformers.AutoModel.from_pretrained(dir)``, offline (see the module docstring)."""
    expected = "a transformers model folder (config.json + model.safetensors or pytorch_model.bin)"
    path = _require_path(argument, "hf", expected)
    if not (path / "config.json").is_file():
        raise BenchError(f"encoder path {path} has no config.json; expected {expected}")
    try:
        from transformers import AutoConfig, AutoModel
    except ImportError:
        raise BenchError("the 'hf' encoder backend needs transformers: pip install transformers") from None
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - unknown model types, malformed config
        raise BenchError(f"transformers cannot load {path} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300]}); expected {expected}") from None
    try:
        model, info = AutoModel.from_pretrained(path, local_files_only=True, output_loading_info=True)
    except Exception as exc:  # noqa: BLE001 - unknown model types, unreadable weights, shape mismatches
        if "mismatched_sizes" in str(exc) or "size mismatch" in str(exc):
            raise BenchError(f"{path} holds weights of another architecture than its config ({config.model_type}): "
                             f"parameter shapes differ; expected {expected}") from None
        raise BenchError(f"transformers cannot load {path} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300]}); expected {expected}") from None
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise BenchError(f"{path} holds weights of another architecture than its config "
                         f"({config.model_type}): {len(missing)} parameters missing (e.g. {', '.join(missing[:3])})")
    processor_file = path / "preprocessor_config.json"
    processor = json.loads(processor_file.read_text()) if processor_file.is_file() else {}
    in_chans = int(getattr(config, "num_channels", 3))
    size = _hf_size(config, processor)
    mean = _per_channel(processor.get("image_mean", IMAGENET_MEAN), in_chans)
    std = _per_channel(processor.get("image_std", IMAGENET_STD), in_chans)
    wrapped = ChannelwiseEncoder(_HFFeatures(model), in_chans, size, mean, std).eval()
    with torch.no_grad():
        dim = int(wrapped(torch.zeros(1, len(CHANNELS), *size)).shape[1])
    return ModuleEncoder(f"hf:{argument}", wrapped, dim, _to_unit(device), device)


class _OpenPhenomFeatures(nn.Module):
    """OpenPhenom's ``predict`` on uint8 images, centre-cropped (or resized) to 256 x 256."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        if h >= OPENPHENOM_SIZE and w >= OPENPHENOM_SIZE:
            top, left = (h - OPENPHENOM_SIZE) // 2, (w - OPENPHENOM_SIZE) // 2
            images = images[..., top:top + OPENPHENOM_SIZE, left:left + OPENPHENOM_SIZE]
        else:
            images = F.interpolate(images.float(), size=(OPENPHENOM_SIZE, OPENPHENOM_SIZE), mode="bilinear",
                                   align_corners=False).round().clamp(0, 255).to(torch.uint8)
        return self.model.predict(images)


def _import_openphenom(path: Path):
    module_file = path / "huggingface_mae.py"
    sys.path.insert(0, str(path))  # its helper modules (mae_modules, vit, ...) sit beside it
    try:
        spec = importlib.util.spec_from_file_location("huggingface_mae", module_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.MAEModel
    except ImportError as exc:
        raise BenchError(f"OpenPhenom in {path} needs a package that is not installed ({exc}); "
                         "install it and retry") from None
    except AttributeError:
        raise BenchError(f"{module_file} defines no MAEModel; expected the OpenPhenom folder from "
                         "https://huggingface.co/recursionpharma/OpenPhenom") from None
    finally:
        sys.path.remove(str(path))


@register_encoder_backend("openphenom")
def openphenom_encoder(argument: str | None, device: str) -> ModuleEncoder:
    """``openphenom:<dir>``: OpenPhenom (channel-agnostic ViT MAE) from a local download."""
    expected = ("the OpenPhenom folder (huggingface_mae.py, config.json, weights) downloaded from "
                "https://huggingface.co/recursionpharma/OpenPhenom")
    path = _require_path(argument, "openphenom", expected)
    if not (path / "huggingface_mae.py").is_file():
        raise BenchError(f"encoder path {path} has no huggingface_mae.py; expected {expected}")
    mae_model = _import_openphenom(path)
    try:
        model = mae_model.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - weights that do not fit the code
        raise BenchError(f"cannot load OpenPhenom from {path} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300]}); expected {expected}") from None
    wrapped = _OpenPhenomFeatures(model).eval()
    with torch.no_grad():
        dim = int(wrapped(torch.zeros(1, len(CHANNELS), OPENPHENOM_SIZE, OPENPHENOM_SIZE,
                                      dtype=torch.uint8)).shape[1])

    def prepare(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(images)).to(device)

    return ModuleEncoder(f"openphenom:{argument}", wrapped, dim, prepare, device)
