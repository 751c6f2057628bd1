"""The data layer: what a dataset is, how it is loaded, checked and split.

Datasets arrive through the `register_datasets` hook as :class:`DatasetSpec` objects (the built-ins
live in :mod:`bench_harness.datasets`). Every dataset hands over whole tensors of ``uint8`` images:
the training engine keeps them resident on the device as they are and normalises each batch on the
fly with the per-channel ``mean``/``std`` computed here, so no per-sample Python code runs while
training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NoReturn

import torch

from bench_harness.errors import UserError

CACHE_ENV_VAR = "BENCH_HARNESS_DATA"
"""Environment variable that overrides the default download cache folder."""


def default_cache_dir() -> Path:
    """Where downloaded datasets are kept: ``$BENCH_HARNESS_DATA`` if set, else ``~/.cache/bench-harness/data``."""
    override = os.environ.get(CACHE_ENV_VAR, "").strip()
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "bench-harness" / "data"


@dataclass(frozen=True)
class DataRequest:
    """Where a dataset's loader may look for files and where it may write them.

    ``data_dir`` is the user's ``--data-dir``: a folder of files that already exist, which a loader
    reads but never modifies and never downloads into. When it is ``None`` the loader uses
    ``cache_dir``, downloading there what is missing. ``cache_dir`` is also the place for any file a
    loader derives from ``data_dir`` (for instance un-gzipped copies).
    """

    data_dir: Path | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)

    def __post_init__(self) -> None:
        # Accept strings from callers and expand "~" once here, so loaders can rely on Paths.
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())


@dataclass
class ImageSplits:
    """A dataset's official train and test sets as CPU tensors.

    Images are ``uint8`` of shape ``[N, C, H, W]``; labels are ``int64`` of shape ``[N]``. ``mean``
    and ``std`` hold one value per channel, measured on the training images scaled to ``[0, 1]``.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_tensors(
        cls,
        train_images: torch.Tensor,
        train_labels: torch.Tensor,
        test_images: torch.Tensor,
        test_labels: torch.Tensor,
    ) -> ImageSplits:
        """Build the splits and compute ``mean``/``std`` from the training images (for loaders)."""
        mean, std = channel_stats(train_images)
        return cls(train_images, train_labels, test_images, test_labels, mean, std)


@dataclass
class TrainValTest:
    """What the training engine consumes: train, validation and test tensors plus normalisation.

    ``mean``/``std`` are those of the full official training set (validation part included), so
    they do not change with the validation size and match the values usually published.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its name, a one-line description, its shape and a loader.

    ``load(request)`` returns an :class:`ImageSplits`; a loader that cannot find or fetch its files
    raises :class:`~bench_harness.errors.UserError` saying where it looked and what to do.
    ``default_model`` names the registered model the protocol pairs with this dataset.
    """

    name: str
    description: str
    default_model: str
    input_shape: tuple[int, int, int]
    num_classes: int
    load: Callable[[DataRequest], ImageSplits]
    train_images: int | None = None
    """Images in the training split, where known before loading (lets ``--val-size`` equal to the
    default be recognised as the default, so such runs are not redone)."""


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of ``uint8`` images, on the [0, 1] scale.

    Counting how often each of the 256 pixel values occurs is exact and needs no float copy of the
    whole set (which for CIFAR-10 would be 600 MB in float32, and float32 sums drift at that size).
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"channel_stats needs uint8 images of shape [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("channel_stats needs at least one image")
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(float(mean))
        stds.append(float(var.sqrt()))
    return tuple(means), tuple(stds)


def load_dataset(spec: DatasetSpec, request: DataRequest) -> ImageSplits:
    """Load ``spec`` through its loader and check that the result honours the contract.

    Labels of any integer type are converted to ``int64``; anything else that is off (wrong image
    dtype or shape, mismatched counts, labels out of range) is a broken dataset plugin and raises
    :class:`~bench_harness.errors.UserError` naming the dataset, since no run can use such data.
    """
    splits = spec.load(request)
    if not isinstance(splits, ImageSplits):
        _broken(spec, f"its loader returned {type(splits).__name__}, not ImageSplits")
    for part in ("train", "test"):
        images = getattr(splits, f"{part}_images")
        labels = getattr(splits, f"{part}_labels")
        if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
            _broken(spec, f"its {part} images and labels must be torch tensors")
        if images.dtype != torch.uint8:
            _broken(spec, f"its {part} images are {images.dtype}, not torch.uint8")
        if images.dim() != 4 or tuple(images.shape[1:]) != tuple(spec.input_shape):
            _broken(spec, f"its {part} images have shape {tuple(images.shape)}, not [N, {', '.join(map(str, spec.input_shape))}]")
        if images.shape[0] == 0:
            _broken(spec, f"its {part} set is empty")
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            _broken(spec, f"its {part} labels are {labels.dtype}, not an integer type")
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            _broken(spec, f"it has {images.shape[0]} {part} images but labels of shape {tuple(labels.shape)}")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= spec.num_classes:
            _broken(spec, f"its {part} labels span {low}..{high}, outside 0..{spec.num_classes - 1}")
        # The engine moves these to the device itself; handing it CPU, contiguous tensors keeps
        # that transfer a single copy.
        setattr(splits, f"{part}_images", images.cpu().contiguous())
        setattr(splits, f"{part}_labels", labels.cpu().to(torch.int64).contiguous())
    channels = spec.input_shape[0]
    if len(splits.mean) != channels or len(splits.std) != channels:
        _broken(spec, f"its mean/std have {len(splits.mean)}/{len(splits.std)} values for {channels} channel(s)")
    if any(s <= 0 for s in splits.std):
        _broken(spec, "a channel of its training images is constant (std 0), so it cannot be normalised")
    splits.mean = tuple(float(m) for m in splits.mean)
    splits.std = tuple(float(s) for s in splits.std)
    return splits


def _broken(spec: DatasetSpec, problem: str) -> NoReturn:
    raise UserError(f"Dataset '{spec.name}' is unusable: {problem}; fix or uninstall the plugin that registers it.")


def split_validation(splits: ImageSplits, val_size: int, split_seed: int = 0) -> TrainValTest:
    """Hold out ``val_size`` training images as a validation set.

    A permutation drawn from ``split_seed`` (not from the run's seed) decides which images go, so
    every run of a benchmark sees the same validation set and their validation numbers compare. The
    last ``val_size`` positions of the permutation are validation, the rest training; both keep the
    original order of the images. ``val_size`` 0 gives empty validation tensors.
    """
    total = splits.train_images.shape[0]
    if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0:
        raise UserError(f"The validation size must be a whole number of images (0 or more), not {val_size!r}.")
    if val_size >= total:
        raise UserError(
            f"A validation set of {val_size} images leaves no training images: the training set has "
            f"{total}; choose a validation size below {total}."
        )
    generator = torch.Generator().manual_seed(split_seed)
    order = torch.randperm(total, generator=generator)
    train_index = order[: total - val_size].sort().values
    val_index = order[total - val_size :].sort().values
    return TrainValTest(
        train_images=splits.train_images[train_index],
        train_labels=splits.train_labels[train_index],
        val_images=splits.train_images[val_index],
        val_labels=splits.train_labels[val_index],
        test_images=splits.test_images,
        test_labels=splits.test_labels,
        mean=splits.mean,
        std=splits.std,
    )
