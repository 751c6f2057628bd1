"""On-device data augmentation for CIFAR-style images: random crop with zero padding, horizontal flip.

The random choices of a whole epoch are drawn at once, from the run's own generator, before the
epoch starts; the training step only *reads* them by batch position. So the augmented step stays
capturable as a CUDA graph (no random-number generation inside it), and a run's augmentation depends
on its seed alone, never on which other runs share the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentationDraw:
    """One epoch's random choices, one entry per position of the epoch's sample order."""

    shift_rows: torch.Tensor
    """Row offset of each crop inside the padded image, in [0, 2 * padding]."""
    shift_columns: torch.Tensor
    flip: torch.Tensor
    """True where the crop is mirrored left to right."""

    def slice(self, start: int, stop: int) -> "AugmentationDraw":
        """The choices for positions ``start:stop`` (one batch)."""
        return AugmentationDraw(self.shift_rows[start:stop], self.shift_columns[start:stop], self.flip[start:stop])


class RandomCropFlip:
    """Pad by ``padding`` zero pixels, crop back to the original size at a random offset, flip half."""

    def __init__(self, seed: int, device: torch.device, padding: int = 4) -> None:
        self.padding = padding
        # Its own generator, so augmentation never shifts the data-order stream or the model's init.
        self.generator = torch.Generator(device=device).manual_seed(seed + 1_000_003)
        self.device = device

    def draw(self, count: int) -> AugmentationDraw:
        """Random choices for an epoch of ``count`` samples."""
        span = 2 * self.padding + 1
        rows = torch.randint(0, span, (count,), generator=self.generator, device=self.device)
        columns = torch.randint(0, span, (count,), generator=self.generator, device=self.device)
        flip = torch.rand(count, generator=self.generator, device=self.device) < 0.5
        return AugmentationDraw(rows, columns, flip)

    def __call__(self, images: torch.Tensor, draw: AugmentationDraw) -> torch.Tensor:
        """Augment a batch ``[B, C, H, W]`` (any dtype) with one choice per image; tensor work only."""
        batch, _, height, width = images.shape
        padded = F.pad(images, (self.padding,) * 4)
        rows = draw.shift_rows.view(batch, 1) + torch.arange(height, device=images.device).view(1, height)
        columns = draw.shift_columns.view(batch, 1) + torch.arange(width, device=images.device).view(1, width)
        # Mirroring a crop is reading its columns backwards.
        columns = torch.where(draw.flip.view(batch, 1), columns.flip(1), columns)
        samples = torch.arange(batch, device=images.device).view(batch, 1, 1)
        cropped = padded.permute(0, 2, 3, 1)[samples, rows.view(batch, height, 1), columns.view(batch, 1, width)]
        return cropped.permute(0, 3, 1, 2).contiguous()
