"""A fitted image classifier as the BN policies see it: the model, how it reads pixels, its chunk size.

Evaluation images are held as centre-cropped **uint8** pixels (:meth:`Network.pixels`)
and normalised chunk by chunk (:meth:`Network.inputs`): the same values as normalising
them all at once, at a quarter of the memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..training.preprocess import Preprocessor


@dataclass(frozen=True)
class Network:
    """A fitted network and its evaluation-time input pipeline.

    Parameters
    ----------
    model : the classifier (logits out).
    preprocess : crop, channel statistics and device of the training split.
    eval_batch_size : images per forward pass where no BN context is involved.
    owner : the method's name, for error messages.
    """

    model: torch.nn.Module
    preprocess: Preprocessor
    eval_batch_size: int
    owner: str

    def pixels(self, images: np.ndarray) -> torch.Tensor:
        """Centre-cropped uint8 pixels of ``images`` on the device."""
        return self.preprocess.eval_pixels(np.asarray(images))

    def inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """Network input from centre-cropped uint8 pixels."""
        return self.preprocess.normalise(pixels)

    def tensor(self, images: np.ndarray) -> torch.Tensor:
        """Network input of ``images``: centre-cropped and normalised in one go."""
        return self.preprocess.eval(np.asarray(images))

    def eval_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Logits in evaluation mode (BN running statistics, or those applied): each image on its own."""
        self.model.eval()
        size = self.eval_batch_size
        with torch.no_grad():
            return torch.cat([self.model(self.inputs(pixels[i:i + size])) for i in range(0, len(pixels), size)])
