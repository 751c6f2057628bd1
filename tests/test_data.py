"""The data layer and the built-in datasets: splits, statistics, synthetic data, files and failures.

Nothing here touches the network: the offline tests make name resolution fail the way it does on a
machine without network, and run torchvision's real download code into that.
"""

import gzip
import hashlib
import os
import pickle
import socket
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pluggy
import pytest
import torch

from bench_harness import datasets
from bench_harness import hookspecs
from bench_harness.data import (
    DataRequest,
    DatasetSpec,
    ImageSplits,
    TrainValTest,
    channel_stats,
    default_cache_dir,
    load_dataset,
    split_validation,
)
from bench_harness.errors import UserError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SPECS = {spec.name: spec for spec in datasets.BUILTIN_DATASETS}


# --- helpers -------------------------------------------------------------------------------------


def numbered_splits(count=100, test_count=7):
    """Splits whose training image i is filled with the value i, so an image names its index."""
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 1, 4, 4).contiguous()
    labels = torch.arange(count, dtype=torch.int64) % 10
    test = torch.zeros(test_count, 1, 4, 4, dtype=torch.uint8)
    return ImageSplits.from_tensors(images, labels, test, torch.zeros(test_count, dtype=torch.int64))


def ids(images):
    return images[:, 0, 0, 0].to(torch.int64)


def idx_bytes(tensor):
    """``tensor`` (uint8) in the IDX format of the MNIST family."""
    header = struct.pack(">BBBB", 0, 0, 0x08, tensor.dim()) + b"".join(struct.pack(">I", n) for n in tensor.shape)
    return header + tensor.contiguous().numpy().tobytes()


def write_fake_mnist(folder, gzipped=True, dotted=False, seed=0, train=6, test=4):
    """Write the four IDX files of a tiny MNIST-like set into ``folder``; return the tensors."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        "train-images-idx3-ubyte": torch.randint(0, 256, (train, 28, 28), generator=generator, dtype=torch.uint8),
        "train-labels-idx1-ubyte": torch.arange(train, dtype=torch.uint8) % 10,
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (test, 28, 28), generator=generator, dtype=torch.uint8),
        "t10k-labels-idx1-ubyte": (torch.arange(test, dtype=torch.uint8) + 3) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, tensor in tensors.items():
        filename = name.replace("-idx", ".idx") if dotted else name
        data = idx_bytes(tensor)
        if gzipped:
            (folder / f"{filename}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / filename).write_bytes(data)
    return tensors


def snapshot(folder):
    """Every file under ``folder`` with its size, modification time and content hash."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def go_offline(monkeypatch):
    """Make every host name unresolvable, as on a machine without network."""

    def unresolvable(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)


def forbid_downloads(monkeypatch):
    """Record any attempt of torchvision to download; returns the list of attempts."""
    attempts = []

    def record(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("no download may happen here")

    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.mnist as tv_mnist

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", record)
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", record)
    return attempts


# --- cache folder and requests -------------------------------------------------------------------


def test_default_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_HARNESS_DATA", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("BENCH_HARNESS_DATA")
    assert default_cache_dir() == Path.home() / ".cache" / "bench-harness" / "data"


def test_data_request_takes_strings_and_defaults_to_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_HARNESS_DATA", str(tmp_path))
    request = DataRequest(data_dir=str(tmp_path / "files"))
    assert request.data_dir == tmp_path / "files" and isinstance(request.data_dir, Path)
    assert request.cache_dir == tmp_path
    assert DataRequest().data_dir is None


# --- validation split ----------------------------------------------------------------------------


def test_split_sizes_and_disjointness():
    splits = numbered_splits(100)
    parts = split_validation(splits, 20)
    assert isinstance(parts, TrainValTest)
    assert parts.train_images.shape == (80, 1, 4, 4) and parts.val_images.shape == (20, 1, 4, 4)
    train, val = set(ids(parts.train_images).tolist()), set(ids(parts.val_images).tolist())
    assert not train & val
    assert train | val == set(range(100))
    # Labels travel with their images.
    assert torch.equal(parts.train_labels, ids(parts.train_images) % 10)
    assert torch.equal(parts.val_labels, ids(parts.val_images) % 10)
    assert parts.test_images is splits.test_images and parts.mean == splits.mean and parts.std == splits.std


def test_split_depends_on_the_split_seed_only():
    splits = numbered_splits(100)
    torch.manual_seed(1)
    first = split_validation(splits, 10, split_seed=0)
    torch.manual_seed(2)  # a different run seed must not move the validation set
    again = split_validation(splits, 10, split_seed=0)
    other = split_validation(splits, 10, split_seed=1)
    assert torch.equal(ids(first.val_images), ids(again.val_images))
    assert not torch.equal(ids(first.val_images), ids(other.val_images))
    # It is a random draw, not simply the last images.
    assert ids(first.val_images).tolist() != list(range(90, 100))


def test_split_of_zero_gives_empty_validation_tensors():
    parts = split_validation(numbered_splits(30), 0)
    assert parts.val_images.shape == (0, 1, 4, 4) and parts.val_images.dtype == torch.uint8
    assert parts.val_labels.shape == (0,) and parts.val_labels.dtype == torch.int64
    assert parts.train_images.shape[0] == 30


@pytest.mark.parametrize("size", [30, 31, -1])
def test_split_refuses_sizes_that_leave_no_training_data(size):
    with pytest.raises(UserError, match="validation"):
        split_validation(numbered_splits(30), size)


# --- statistics ----------------------------------------------------------------------------------


def test_channel_stats_are_exact_per_channel():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 8, 8), generator=generator, dtype=torch.uint8)
    images[:, 1] //= 4  # make the channels differ
    mean, std = channel_stats(images)
    scaled = images.double() / 255
    expected_mean = scaled.mean(dim=(0, 2, 3))
    expected_std = scaled.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), expected_mean, atol=1e-12)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), expected_std, atol=1e-12)
    assert mean[1] < mean[0] / 2


def test_channel_stats_of_half_black_half_white():
    images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    images[1] = 255
    assert channel_stats(images) == ((0.5,), (0.5,))


# --- synthetic -----------------------------------------------------------------------------------


def test_synthetic_shapes_dtypes_and_determinism(tmp_path):
    spec = SPECS["synthetic"]
    first = load_dataset(spec, DataRequest(None, tmp_path))
    second = load_dataset(spec, DataRequest(None, tmp_path))
    assert first.train_images.shape == (2000, 1, 16, 16) and first.test_images.shape == (1000, 1, 16, 16)
    assert first.train_images.dtype == torch.uint8 and first.train_labels.dtype == torch.int64
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    assert first.mean == second.mean and first.std == second.std
    assert set(first.train_labels.tolist()) == set(range(10))
    assert first.train_labels.bincount().min() > 120  # roughly balanced
    assert not any(tmp_path.iterdir())  # no files written


def test_synthetic_is_learnable_but_not_trivial():
    splits = datasets.make_synthetic()
    train = splits.train_images.flatten(1).double() / 255
    test = splits.test_images.flatten(1).double() / 255
    centroids = torch.stack([train[splits.train_labels == c].mean(0) for c in range(10)])
    predictions = torch.cdist(test, centroids).argmin(1)
    accuracy = (predictions == splits.test_labels).double().mean().item()
    assert 0.5 < accuracy < 0.99, accuracy


def test_synthetic_mean_and_std_are_sane():
    splits = datasets.make_synthetic()
    (mean,), (std,) = splits.mean, splits.std
    assert 0.1 < mean < 0.9 and 0.05 < std < 0.5
    assert (mean, std) == tuple(x[0] for x in channel_stats(splits.train_images))


# --- the load_dataset contract -------------------------------------------------------------------


def spec_returning(splits, shape=(1, 4, 4), classes=10):
    return DatasetSpec("broken", "A test dataset.", "fcnn", shape, classes, lambda request: splits)


def test_load_dataset_converts_integer_labels_to_int64(tmp_path):
    splits = numbered_splits(20)
    splits.train_labels = splits.train_labels.to(torch.int32)
    loaded = load_dataset(spec_returning(splits), DataRequest(None, tmp_path))
    assert loaded.train_labels.dtype == torch.int64


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda s: setattr(s, "train_images", s.train_images.float()), "float32"),
        (lambda s: setattr(s, "test_images", torch.zeros(3, 1, 5, 5, dtype=torch.uint8)), "shape"),
        (lambda s: setattr(s, "train_labels", s.train_labels[:-1]), "labels"),
        (lambda s: setattr(s, "test_labels", torch.full((7,), 10)), "outside"),
        (lambda s: setattr(s, "mean", (0.1, 0.2)), "mean"),
    ],
)
def test_load_dataset_rejects_broken_loaders(tmp_path, breakage, message):
    splits = numbered_splits(20)
    breakage(splits)
    with pytest.raises(UserError, match=message) as raised:
        load_dataset(spec_returning(splits), DataRequest(None, tmp_path))
    assert "'broken'" in str(raised.value)


# --- registration --------------------------------------------------------------------------------


def test_builtin_datasets_register_through_the_hook():
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(datasets)
    registered = []
    manager.hook.register_datasets(register=registered.append)
    by_name = {spec.name: spec for spec in registered}
    assert list(by_name) == ["mnist", "cifar10", "fashion-mnist", "synthetic"]
    assert {name: spec.default_model for name, spec in by_name.items()} == {
        "mnist": "fcnn", "cifar10": "cnn", "fashion-mnist": "fcnn", "synthetic": "fcnn",
    }
    assert by_name["cifar10"].input_shape == (3, 32, 32) and by_name["synthetic"].input_shape == (1, 16, 16)
    assert all(spec.num_classes == 10 and 0 < len(spec.description) <= 120 for spec in registered)


# --- offline and missing files -------------------------------------------------------------------


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST/raw"), ("fashion-mnist", "FashionMNIST/raw"), ("cifar10", "")])
def test_offline_download_is_one_sentence_naming_the_folder(monkeypatch, tmp_path, name, folder):
    go_offline(monkeypatch)
    timeout_before = socket.getdefaulttimeout()
    cache = tmp_path / "cache"
    started = time.monotonic()
    with pytest.raises(UserError) as raised:
        load_dataset(SPECS[name], DataRequest(None, cache))
    elapsed = time.monotonic() - started
    message = str(raised.value)
    assert message.startswith("Could not download") and "no network?" in message
    assert str(cache / folder) in message and "--data-dir" in message
    assert "\n" not in message
    assert elapsed < 10
    assert socket.getdefaulttimeout() == timeout_before  # the download timeout was undone


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_data_dir_names_the_folder_and_downloads_nothing(monkeypatch, tmp_path, name):
    attempts = forbid_downloads(monkeypatch)
    user_dir = tmp_path / "my-data"
    user_dir.mkdir()
    with pytest.raises(UserError) as raised:
        load_dataset(SPECS[name], DataRequest(user_dir, tmp_path / "cache"))
    assert str(user_dir) in str(raised.value) and "\n" not in str(raised.value)
    assert attempts == []


# --- MNIST-family files in the user's folder -------------------------------------------------------


@pytest.mark.parametrize("gzipped, dotted", [(True, False), (False, False), (True, True)])
def test_flat_idx_folder_is_unpacked_into_the_cache(monkeypatch, tmp_path, gzipped, dotted):
    attempts = forbid_downloads(monkeypatch)
    user_dir, cache = tmp_path / "flat", tmp_path / "cache"
    tensors = write_fake_mnist(user_dir, gzipped=gzipped, dotted=dotted)
    before = snapshot(user_dir)
    splits = datasets.load_fashion_mnist(DataRequest(user_dir, cache))
    assert torch.equal(splits.train_images, tensors["train-images-idx3-ubyte"].unsqueeze(1))
    assert torch.equal(splits.train_labels, tensors["train-labels-idx1-ubyte"].long())
    assert torch.equal(splits.test_images, tensors["t10k-images-idx3-ubyte"].unsqueeze(1))
    assert torch.equal(splits.test_labels, tensors["t10k-labels-idx1-ubyte"].long())
    assert sorted(p.name for p in (cache / "FashionMNIST" / "raw").iterdir()) == sorted(datasets.MNIST_FILES)
    assert snapshot(user_dir) == before
    assert attempts == []


def test_unpacked_copies_are_reused_until_the_source_changes(tmp_path):
    user_dir, cache = tmp_path / "flat", tmp_path / "cache"
    write_fake_mnist(user_dir, seed=0)
    datasets.load_mnist(DataRequest(user_dir, cache))
    copy = cache / "MNIST" / "raw" / "train-images-idx3-ubyte"
    inode = copy.stat().st_ino
    first = datasets.load_mnist(DataRequest(user_dir, cache))
    assert copy.stat().st_ino == inode  # not rewritten

    replacement = write_fake_mnist(user_dir, seed=1)
    source = user_dir / "train-images-idx3-ubyte.gz"
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    second = datasets.load_mnist(DataRequest(user_dir, cache))
    assert not torch.equal(first.train_images, second.train_images)
    assert torch.equal(second.train_images, replacement["train-images-idx3-ubyte"].unsqueeze(1))


def test_torchvision_layout_in_data_dir_is_read_in_place(tmp_path):
    user_dir, cache = tmp_path / "tv", tmp_path / "cache"
    tensors = write_fake_mnist(user_dir / "MNIST" / "raw", gzipped=False)
    before = snapshot(user_dir)
    splits = datasets.load_mnist(DataRequest(user_dir, cache))
    assert torch.equal(splits.test_images, tensors["t10k-images-idx3-ubyte"].unsqueeze(1))
    assert not cache.exists()
    assert snapshot(user_dir) == before


def test_gzipped_files_dropped_into_the_cache_are_used_without_network(monkeypatch, tmp_path):
    attempts = forbid_downloads(monkeypatch)
    tensors = write_fake_mnist(tmp_path / "MNIST" / "raw", gzipped=True)
    splits = datasets.load_mnist(DataRequest(None, tmp_path))
    assert torch.equal(splits.train_images, tensors["train-images-idx3-ubyte"].unsqueeze(1))
    assert attempts == []


def test_truncated_archive_leaves_nothing_half_written(tmp_path):
    user_dir, cache = tmp_path / "flat", tmp_path / "cache"
    write_fake_mnist(user_dir, train=200)
    archive = user_dir / "train-images-idx3-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    before = snapshot(user_dir)
    with pytest.raises(UserError) as raised:
        datasets.load_mnist(DataRequest(user_dir, cache))
    assert str(user_dir) in str(raised.value)
    assert list((cache / "MNIST" / "raw").iterdir()) == []  # no partial file, no stray temporary
    assert snapshot(user_dir) == before


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "file"
    target.write_bytes(b"complete old content")

    def write_then_fail(out):
        out.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        datasets._write_atomically(target, write_then_fail)
    assert target.read_bytes() == b"complete old content"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_corrupt_idx_file_is_a_user_error_that_names_the_file_not_the_cache(tmp_path, gzipped):
    user_dir = tmp_path / "flat"
    write_fake_mnist(user_dir, gzipped=gzipped)
    name = "t10k-labels-idx1-ubyte" + (".gz" if gzipped else "")
    (user_dir / name).write_bytes(gzip.compress(b"not an idx file at all") if gzipped else b"not an idx file at all")
    with pytest.raises(UserError, match="is damaged: it does not start with an IDX header") as raised:
        datasets.load_mnist(DataRequest(user_dir, tmp_path / "cache"))
    assert f"file {user_dir / name} is damaged" in str(raised.value) and "cache" not in str(raised.value)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_folder(monkeypatch, tmp_path):
    attempts = forbid_downloads(monkeypatch)
    before = snapshot(DEBIAN_FASHION_MNIST)
    splits = load_dataset(SPECS["fashion-mnist"], DataRequest(DEBIAN_FASHION_MNIST, tmp_path))
    assert splits.train_images.shape == (60000, 1, 28, 28) and splits.test_images.shape == (10000, 1, 28, 28)
    assert splits.train_images.dtype == torch.uint8 and splits.test_labels.dtype == torch.int64
    assert splits.train_labels.bincount().tolist() == [6000] * 10
    assert splits.test_labels.bincount().tolist() == [1000] * 10
    # Fashion-MNIST's training pixels are known to average about 0.286 with a spread of about 0.353.
    assert splits.mean[0] == pytest.approx(0.2860, abs=1e-3) and splits.std[0] == pytest.approx(0.3530, abs=1e-3)
    assert snapshot(DEBIAN_FASHION_MNIST) == before
    assert attempts == []


# --- CIFAR-10 files in the user's folder -----------------------------------------------------------


def write_fake_cifar(folder, per_batch=3):
    """A tiny CIFAR-10 in its pickled-batch format; returns the training images as [N, C, H, W]."""
    generator = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    train = []
    for index, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]):
        rows = generator.integers(0, 256, size=(per_batch, 3 * 32 * 32), dtype=np.uint8)
        labels = [(index + i) % 10 for i in range(per_batch)]
        with open(folder / name, "wb") as out:
            pickle.dump({"data": rows, "labels": labels}, out)
        if name != "test_batch":
            train.append(rows)
    with open(folder / "batches.meta", "wb") as out:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, out)
    return torch.from_numpy(np.concatenate(train)).view(-1, 3, 32, 32)


def test_cifar10_folder_is_read_as_channels_first(monkeypatch, tmp_path):
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)  # our batches are fakes
    expected = write_fake_cifar(tmp_path / "cifar-10-batches-py")
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):  # the parent, or the folder itself
        splits = load_dataset(SPECS["cifar10"], DataRequest(data_dir, tmp_path / "cache"))
        assert splits.train_images.shape == (15, 3, 32, 32) and splits.train_images.is_contiguous()
        assert torch.equal(splits.train_images, expected)
        assert len(splits.mean) == 3 and splits.test_labels.dtype == torch.int64


def test_cifar10_archive_is_unpacked_into_the_cache_and_nowhere_else(monkeypatch, tmp_path):
    import torchvision.datasets.cifar as tv_cifar

    staging, user_dir, cache = tmp_path / "staging", tmp_path / "downloads", tmp_path / "cache"
    expected = write_fake_cifar(staging / "cifar-10-batches-py")
    (staging / "escape").write_bytes(b"must not be extracted")
    user_dir.mkdir()
    with tarfile.open(user_dir / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        tar.add(staging / "escape", arcname="cifar-10-batches-py/../../escape")
    before = snapshot(user_dir)

    # With the real checksums the fake batches are rejected, as one sentence.
    with pytest.raises(UserError, match="could not be read"):
        load_dataset(SPECS["cifar10"], DataRequest(user_dir, cache))

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    splits = load_dataset(SPECS["cifar10"], DataRequest(user_dir, cache))
    assert torch.equal(splits.train_images, expected)
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-batches-py"]
    assert not (tmp_path / "escape").exists()
    assert snapshot(user_dir) == before


def test_cifar10_archive_is_extracted_once_while_unchanged(tmp_path):
    staging, user_dir, cache = tmp_path / "staging", tmp_path / "downloads", tmp_path / "cache"
    write_fake_cifar(staging / "cifar-10-batches-py")
    user_dir.mkdir()
    archive = user_dir / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    datasets._unpack_cifar10_archive(archive, cache)
    marker = cache / "cifar-10-batches-py" / "marker"
    marker.write_bytes(b"")  # would vanish if the folder were extracted again
    os.utime(marker.parent, ns=(archive.stat().st_mtime_ns,) * 2)
    datasets._unpack_cifar10_archive(archive, cache)
    assert marker.exists()
    os.utime(archive, ns=(archive.stat().st_atime_ns, archive.stat().st_mtime_ns + 10**9))
    datasets._unpack_cifar10_archive(archive, cache)
    assert not marker.exists()
    assert (cache / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert [p.name for p in cache.iterdir()] == ["cifar-10-batches-py"]
