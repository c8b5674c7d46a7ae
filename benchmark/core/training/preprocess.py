"""Image preprocessing: per-channel statistics of the training split, crops, flips, normalisation.

Training images get a random crop and random horizontal/vertical flips; evaluation
images a centre crop. Pixels go from uint8 ``(N, C, H, W)`` to float tensors
normalised with the training split's per-channel mean and standard deviation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import MethodError
from .accel import to_device


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and standard deviation of pixel values (uint8 scale)."""

    mean: np.ndarray  # (C,)
    std: np.ndarray   # (C,)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}


def channel_stats(images: np.ndarray | Sequence, chunk: int = 512) -> ChannelStats:
    """Mean and std per channel over all pixels of ``images`` (``(N, C, H, W)``), read in chunks.

    uint8 pixels are counted into one 256-bin histogram per channel, from which the moments follow exactly
    (~6x faster than summing them as float64); other dtypes are summed as float64.
    """
    n = len(images)
    if n == 0:
        raise MethodError("cannot compute channel statistics of an empty training split")
    total = total_sq = None
    count = 0
    for start in range(0, n, chunk):
        x = np.asarray(images[start:start + chunk])
        s, sq = _uint8_sums(x) if x.dtype == np.uint8 else _float_sums(x)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return ChannelStats(mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32))


def _uint8_sums(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sum and sum of squares of uint8 pixels, exact, from one histogram per channel."""
    pixels = torch.from_numpy(np.ascontiguousarray(x))
    counts = torch.stack([torch.bincount(pixels[:, c].reshape(-1), minlength=256)
                          for c in range(x.shape[1])]).numpy().astype(np.float64)
    values = np.arange(256, dtype=np.float64)
    return counts @ values, counts @ (values * values)


def _float_sums(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sum and sum of squares, as float64."""
    x = x.astype(np.float64, copy=False)
    return x.sum(axis=(0, 2, 3)), np.square(x).sum(axis=(0, 2, 3))


def check_crop(crop: int, image_shape: Sequence[int]) -> int:
    """The crop size to use for images of ``image_shape`` (C, H, W); 0 means the whole image."""
    side = min(image_shape[-2:])
    if crop == 0:
        return side
    if crop > side:
        raise MethodError(f"crop {crop} px is larger than the images ({image_shape[-2]}x{image_shape[-1]} px); "
                          f"set crop <= {side} (or 0 for the whole image)")
    return crop


AUGMENTATIONS = ("flips", "dihedral")
"""Symmetries drawn for every training crop: ``flips`` (horizontal and vertical flips: 4 of the square's 8
symmetries) or ``dihedral`` (flips and a transpose: all 8, the rotations by 90° included; cells have no
orientation, so every one is a free augmentation)."""


def check_augment(name: str) -> None:
    """Raise a MethodError naming the valid augmentations unless ``name`` is one."""
    if name not in AUGMENTATIONS:
        raise MethodError(f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENTATIONS)}")


def random_crop_flip(images: np.ndarray, crop: int, rng: np.random.Generator, augment: str = "flips") -> np.ndarray:
    """A random ``crop x crop`` window of each image, each flipped horizontally/vertically with p=0.5 and, with
    ``augment="dihedral"``, transposed with p=0.5 (a uniform draw from the dihedral group of the square)."""
    n, _, h, w = images.shape
    ys = rng.integers(0, h - crop + 1, size=n)
    xs = rng.integers(0, w - crop + 1, size=n)
    flip_h, flip_v = rng.random(n) < 0.5, rng.random(n) < 0.5
    transpose = rng.random(n) < 0.5 if augment == "dihedral" else np.zeros(n, dtype=bool)
    out = np.empty(images.shape[:2] + (crop, crop), dtype=images.dtype)
    for i in range(n):
        patch = images[i, :, ys[i]:ys[i] + crop, xs[i]:xs[i] + crop]
        if flip_h[i]:
            patch = patch[:, :, ::-1]
        if flip_v[i]:
            patch = patch[:, ::-1, :]
        if transpose[i]:
            patch = patch.transpose(0, 2, 1)
        out[i] = patch
    return out


def center_crop(images: np.ndarray, crop: int) -> np.ndarray:
    """The central ``crop x crop`` window of each image."""
    h, w = images.shape[-2:]
    y, x = (h - crop) // 2, (w - crop) // 2
    return images[..., y:y + crop, x:x + crop]


def normalise(images: np.ndarray | torch.Tensor, stats: ChannelStats, device: str | torch.device = "cpu",
              channels_last: bool = False) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> float32 tensor standardised per channel with ``stats``.

    The pixels travel to ``device`` as uint8 (on CUDA: pinned, non-blocking) and are
    converted and standardised there.
    """
    if not isinstance(images, torch.Tensor):
        images = torch.from_numpy(np.ascontiguousarray(images))
    x = to_device(images, device).to(dtype=torch.float32, copy=True)
    mean = torch.as_tensor(stats.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(stats.std, device=x.device).view(1, -1, 1, 1)
    x = x.sub_(mean).div_(std)  # in place; broadcasting is fastest in the standard layout, reorder after
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@dataclass(frozen=True)
class Preprocessor:
    """Crop/flip/normalise images the same way in training and evaluation.

    Parameters
    ----------
    stats : per-channel statistics of the training split.
    crop : side of the square random crop of training images, in pixels.
    device : where the tensors go.
    channels_last : use the channels-last memory format (faster convolutions on CPU).
    eval_crop : side of the centre crop of evaluation images (None: ``crop``). A network that pools
        globally takes any size, so evaluation may see more of the field than one training crop.
    augment : the symmetries of a training crop (:data:`AUGMENTATIONS`).
    """

    stats: ChannelStats
    crop: int
    device: str = "cpu"
    channels_last: bool = False
    eval_crop: int | None = None
    augment: str = "flips"

    def train(self, images: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Random crop + flips (+ transpose: ``augment``), normalised."""
        return normalise(self.augmented(images, rng), self.stats, self.device, self.channels_last)

    def augmented(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The uint8 random crops and symmetries of :meth:`train`, not yet normalised."""
        return random_crop_flip(np.asarray(images), self.crop, rng, self.augment)

    def eval(self, images: np.ndarray) -> torch.Tensor:
        """Centre crop, normalised."""
        return self.normalise(self.eval_pixels(images))

    def eval_pixels(self, images: np.ndarray) -> torch.Tensor:
        """Centre crop, still uint8, on the device: a quarter of the memory of :meth:`eval`'s output.

        Hold evaluation sets in this form and :meth:`normalise` them chunk by chunk.
        """
        side = self.crop if self.eval_crop is None else self.eval_crop
        pixels = torch.from_numpy(np.ascontiguousarray(center_crop(np.asarray(images), side)))
        return to_device(pixels, self.device)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (already cropped) -> the network's normalised float input."""
        if pixels.dtype != torch.uint8:  # normalising twice would silently shift every input
            raise TypeError(f"Preprocessor.normalise takes uint8 pixels (from eval_pixels), got {pixels.dtype}")
        return normalise(pixels, self.stats, self.device, self.channels_last)
