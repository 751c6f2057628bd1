"""Model architectures of the seed protocol, registered through the `register_models` hook.

Both models are plain ``nn.Sequential`` chains. The harness relies on that: it finds the prunable
layers (every ``nn.Linear`` and ``nn.Conv2d``) in module order, and treats each one's output units
as the inputs of the next prunable layer, which is what neuron pruning and compaction need.
A third-party model that is such a chain works with every granularity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from bench_harness.hookspecs import hookimpl


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: a name, a description and a builder.

    ``build(input_shape, num_classes)`` returns a fresh, randomly initialised ``nn.Module`` for
    inputs of shape ``(channels, height, width)``; the caller seeds torch before calling it.
    """

    name: str
    description: str
    build: Callable[[tuple[int, int, int], int], nn.Module]
    defaults: dict = field(default_factory=dict)
    """The widths the builder uses, shown by ``bench list`` and written into run records."""


FCNN_HIDDEN = (300, 100)
"""LeNet-300-100's hidden widths: the plan's FCNN has two hidden FC layers and names no widths."""

CNN_CHANNELS = (32, 64)
"""The plan names the CNN's layer order only; these widths are ours (see the README)."""


def build_fcnn(input_shape: tuple[int, int, int], num_classes: int, hidden: tuple[int, ...] = FCNN_HIDDEN) -> nn.Sequential:
    """Input -> FC 300 -> ReLU -> FC 100 -> ReLU -> FC classes (784-300-100-10 on 28x28x1 inputs)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for units in hidden:
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def build_cnn(input_shape: tuple[int, int, int], num_classes: int, channels: tuple[int, ...] = CNN_CHANNELS) -> nn.Sequential:
    """Conv 3x3 (32) -> ReLU -> MaxPool 2 -> Conv 3x3 (64) -> ReLU -> MaxPool 2 -> FC classes.

    The convolutions are padded (``padding=1``) so each pooling halves the side exactly; the final
    fully-connected layer adapts to whatever spatial size is left.
    """
    in_channels, height, width = input_shape
    layers: list[nn.Module] = []
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        in_channels, height, width = out_channels, height // 2, width // 2
    layers += [nn.Flatten(), nn.Linear(in_channels * height * width, num_classes)]
    return nn.Sequential(*layers)


@hookimpl
def register_models(register: Callable) -> None:
    """Register the seed protocol's two models."""
    register(ModelSpec("fcnn", "LeNet-300-100: FC 300 -> FC 100 -> FC classes (MNIST's model)", build_fcnn, {"hidden": list(FCNN_HIDDEN)}))
    register(ModelSpec("cnn", "Conv 32 -> pool -> conv 64 -> pool -> FC classes (CIFAR-10's model)", build_cnn, {"channels": list(CNN_CHANNELS)}))
