"""The built-in datasets, registered through the `register_datasets` hook.

MNIST, Fashion-MNIST and CIFAR-10 come through torchvision, whose dataset classes already read the
files straight into tensors (``.data``/``.targets``); nothing here goes through per-sample PIL
transforms. ``synthetic`` is generated in memory and needs neither files nor network.

File handling, in one place because every failure must end as one sentence, never a traceback:

* Without ``--data-dir`` the files live in the cache folder, in torchvision's own layout, and are
  downloaded there when missing.
* With ``--data-dir`` nothing is downloaded and the user's folder is only ever read. Torchvision's
  layout there is read in place; other layouts (the four MNIST IDX files lying flat, gzipped or not,
  as Debian's ``dataset-fashion-mnist`` installs them; CIFAR-10's ``.tar.gz`` as distributed) are
  first unpacked into the cache folder under torchvision's layout.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import socket
import tarfile
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator
from urllib.error import URLError

import torch
import torch.nn.functional as F
from torchvision import datasets as tv_datasets

from bench_harness.data import DataRequest, DatasetSpec, ImageSplits
from bench_harness.errors import UserError
from bench_harness.hookspecs import hookimpl

DOWNLOAD_SOCKET_TIMEOUT_S = 30.0
"""Seconds a download may wait on a silent connection; torchvision sets no timeout of its own, so a
network that drops packets (rather than refusing them) would otherwise hang a run indefinitely."""

# Downloads and reads are wrapped in `except Exception`: torchvision signals a failed download with
# URLError, socket errors or RuntimeError (failed mirrors, bad checksums), a damaged archive with
# tarfile errors, and a damaged IDX or pickle file with bare asserts, TypeError, KeyError or pickle
# errors. All of them mean "these files are not usable", which the user fixes, not a harness bug;
# the messages keep the original reason.


@contextmanager
def _download_timeout(seconds: float) -> Iterator[None]:
    """Give sockets opened inside the block a timeout, then restore the previous default."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _short_reason(error: BaseException) -> str:
    """One line saying why a download failed, without torchvision's per-mirror report."""
    if isinstance(error, URLError):
        return str(error.reason)
    # torchvision's MNIST joins every mirror's error into a multi-line message; the last line is
    # the last mirror's error, typically "<urlopen error [Errno -2] Name or service not known>".
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(error).__name__
    match = re.fullmatch(r"<urlopen error (.*)>", reason)
    return match.group(1) if match else reason


def _read_reason(error: BaseException) -> str:
    """One line saying why reading existing files failed."""
    text = _short_reason(error)
    if text.startswith("Dataset not found"):
        # torchvision's advice ("use download=True") means nothing to a command-line user.
        return "a file is missing or its checksum does not match"
    name = type(error).__name__
    return text if text == name else f"{name}: {text}"


def _write_atomically(destination: Path, write: Callable[[BinaryIO], None], mtime_ns: int | None = None) -> None:
    """Write ``destination`` through a temporary file in the same folder, then rename it into place.

    A failed or interrupted write removes its temporary file and leaves ``destination`` as it was,
    never truncated for a later run to take as complete (only a killed process can leave a hidden
    ``.part`` file behind); concurrent writers each rename a whole file into place.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part", delete=False)
    temporary = Path(handle.name)
    try:
        with handle:
            write(handle)
        os.chmod(temporary, 0o644)  # temporary files are owner-only; a cached data file need not be
        if mtime_ns is not None:
            os.utime(temporary, ns=(mtime_ns, mtime_ns))
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# --- MNIST and Fashion-MNIST -------------------------------------------------------------------

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
"""The four IDX files of the MNIST family, under the names torchvision reads (uncompressed)."""


def _find_idx_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (each plain or ``.gz``), or ``None`` if any is missing.

    Also accepts the dotted spelling some mirrors use (``train-images.idx3-ubyte``).
    """
    found: dict[str, Path] = {}
    for name in MNIST_FILES:
        dotted = name.replace("-idx", ".idx")
        for candidate in (name, f"{name}.gz", dotted, f"{dotted}.gz"):
            if (folder / candidate).is_file():
                found[name] = folder / candidate
                break
        else:
            return None
    return found


def _copy_idx_files(sources: dict[str, Path], raw_folder: Path) -> None:
    """Put uncompressed copies of ``sources`` into ``raw_folder``, skipping those already there.

    Each copy carries its source's modification time, so an up-to-date copy is recognised without
    reading it, and a changed source (or a download of different files) is copied afresh.
    """
    for name, source in sources.items():
        destination = raw_folder / name
        source_mtime = source.stat().st_mtime_ns
        if destination.is_file() and destination.stat().st_mtime_ns == source_mtime:
            continue

        def write(out: BinaryIO, source: Path = source) -> None:
            opener = gzip.open if source.suffix == ".gz" else open
            with opener(source, "rb") as stream:
                while True:
                    try:
                        chunk = stream.read(1 << 20)
                    except (OSError, EOFError, zlib.error) as error:  # a damaged gzip or an unreadable file
                        raise _DamagedSource(source, error) from None
                    if not chunk:
                        break
                    out.write(chunk)

        _write_atomically(destination, write, mtime_ns=source_mtime)


class _DamagedSource(Exception):
    """Reading (un-gzipping) a source file failed: the file is to blame, not the cache."""

    def __init__(self, source: Path, error: BaseException) -> None:
        super().__init__(str(error))
        self.source, self.error = source, error


def _unpack_idx_files(sources: dict[str, Path], raw_folder: Path, title: str) -> None:
    """:func:`_copy_idx_files`, with its failures told as one sentence blaming the file or the cache."""
    try:
        _copy_idx_files(sources, raw_folder)
    except _DamagedSource as damaged:
        raise UserError(
            f"The {title} file {damaged.source} is damaged ({type(damaged.error).__name__}: {damaged.error}); "
            f"replace it with a complete copy of the original."
        ) from None
    except OSError as error:
        raise UserError(
            f"Could not unpack the {title} files into {raw_folder} ({error.strerror or error}); check that the cache "
            f"folder is writable and has space (set BENCH_HARNESS_DATA to move it)."
        ) from None


_IDX_DIMENSIONS = {"images": 3, "labels": 1}


def _idx_problem(path: Path, kind: str) -> tuple[str, tuple[int, ...]] | None:
    """Why an uncompressed IDX file is not a whole file of ``kind`` (``images``: 3 dimensions,
    ``labels``: 1), with its dimensions; None and the dimensions when it is."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            header = stream.read(4)
            if len(header) < 4 or header[:2] != b"\0\0" or header[2] != 0x08:
                return "it does not start with an IDX header of unsigned bytes", ()
            dimensions = header[3]
            raw = stream.read(4 * dimensions)
    except OSError as error:
        return f"it cannot be read: {error.strerror or error}", ()
    if dimensions != _IDX_DIMENSIONS[kind] or len(raw) != 4 * dimensions:
        return f"it holds {dimensions}-dimensional data where {kind} are {_IDX_DIMENSIONS[kind]}-dimensional", ()
    shape = tuple(int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in range(dimensions))
    count = 1
    for extent in shape:
        count *= extent
    if size != 4 + 4 * dimensions + count:
        return f"it holds {size:,} bytes where its header promises {4 + 4 * dimensions + count:,} (cut short or padded)", shape
    return None, shape


def _check_idx_files(folder: Path, blamed: dict[str, Path], title: str) -> None:
    """Check the four uncompressed IDX files in ``folder`` before torchvision reads them, naming the
    file to replace (``blamed``: the user's file each was unpacked from, or the file itself)."""
    shapes = {}
    for name in MNIST_FILES:
        kind = "labels" if "labels" in name else "images"
        problem, shapes[name] = _idx_problem(folder / name, kind)
        if problem:
            raise UserError(f"The {title} file {blamed[name]} is damaged: {problem}; replace it with a complete copy of the original.")
    for split in ("train", "t10k"):
        images, labels = shapes[f"{split}-images-idx3-ubyte"], shapes[f"{split}-labels-idx1-ubyte"]
        if images[0] != labels[0]:
            raise UserError(
                f"The {title} files {blamed[f'{split}-images-idx3-ubyte']} and {blamed[f'{split}-labels-idx1-ubyte']} do not "
                f"match: {images[0]:,} images but {labels[0]:,} labels; replace them with the original pair."
            )


def _load_mnist_family(request: DataRequest, dataset_class: type, title: str) -> ImageSplits:
    """Load MNIST or Fashion-MNIST (``dataset_class`` is torchvision's class, ``title`` the display name)."""
    folder = dataset_class.__name__  # torchvision keeps the files in ROOT/<class name>/raw/
    sources = None  # the user's files the cache copies were unpacked from, if any
    if request.data_dir is None:
        root = request.cache_dir
        raw_folder = root / folder / "raw"
        sources = _find_idx_files(raw_folder)
        if sources is not None:
            # Files the user dropped into the cache (gzipped, or with a mirror's spelling) are used as
            # they are: torchvision would insist on the exact download's checksums and refetch.
            _unpack_idx_files(sources, raw_folder, title)
        else:
            try:
                raw_folder.mkdir(parents=True, exist_ok=True)
                with _download_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
                    dataset_class(str(root), train=True, download=True)
            except Exception as error:
                raise UserError(
                    f"Could not download {title} ({_short_reason(error)}; no network?): put the four {title} files "
                    f"({', '.join(MNIST_FILES)}, gzipped or not) in {raw_folder}/ or pass --data-dir pointing at a "
                    f"folder that holds them."
                ) from None
    else:
        data_dir = request.data_dir
        in_place = data_dir / folder / "raw"
        if all((in_place / name).is_file() for name in MNIST_FILES):
            root, raw_folder = data_dir, in_place  # torchvision's layout, uncompressed: read as is
        else:
            sources = None
            for candidate in (data_dir, data_dir / "raw", in_place):
                sources = _find_idx_files(candidate)
                if sources:
                    break
            if not sources:
                raise UserError(
                    f"Could not find the {title} files in {data_dir}: expected {', '.join(MNIST_FILES)} (each may "
                    f"end in .gz) there or in {in_place}/; point --data-dir at the folder that holds them, or leave "
                    f"--data-dir out to download them into {request.cache_dir}."
                )
            root = request.cache_dir
            raw_folder = root / folder / "raw"
            _unpack_idx_files(sources, raw_folder, title)

    _check_idx_files(raw_folder, {name: (sources or {}).get(name, raw_folder / name) for name in MNIST_FILES}, title)
    try:
        train = dataset_class(str(root), train=True, download=False)
        test = dataset_class(str(root), train=False, download=False)
    except Exception as error:
        raise UserError(
            f"The {title} files in {raw_folder} could not be read ({_read_reason(error)}); replace them with "
            f"complete copies of the original files."
        ) from None
    return ImageSplits.from_tensors(
        train.data.unsqueeze(1).to(torch.uint8),  # [N, 28, 28] -> [N, 1, 28, 28]
        train.targets.to(torch.int64),
        test.data.unsqueeze(1).to(torch.uint8),
        test.targets.to(torch.int64),
    )


def load_mnist(request: DataRequest) -> ImageSplits:
    """MNIST's 60,000 training and 10,000 test digits."""
    return _load_mnist_family(request, tv_datasets.MNIST, "MNIST")


def load_fashion_mnist(request: DataRequest) -> ImageSplits:
    """Fashion-MNIST's 60,000 training and 10,000 test clothing images."""
    return _load_mnist_family(request, tv_datasets.FashionMNIST, "Fashion-MNIST")


# --- CIFAR-10 ----------------------------------------------------------------------------------

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"


def _unpack_cifar10_archive(archive: Path, root: Path) -> None:
    """Extract the batches folder of ``archive`` into ``root``, via a temporary folder and a rename.

    Only regular files directly under ``cifar-10-batches-py/`` are written, by name, so a crafted
    archive cannot place files elsewhere. The folder takes the archive's modification time, which
    lets later runs skip the 180 MB extraction while the archive is unchanged.
    """
    destination = root / CIFAR10_FOLDER
    archive_mtime = archive.stat().st_mtime_ns

    def up_to_date() -> bool:
        return destination.is_dir() and destination.stat().st_mtime_ns == archive_mtime

    if up_to_date():
        return
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{CIFAR10_FOLDER}.", suffix=".part"))
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) != 2 or parts[0] != CIFAR10_FOLDER or parts[1] in ("", ".", ".."):
                    continue
                stream = tar.extractfile(member)
                if stream is None:
                    continue
                with stream, open(staging / parts[1], "wb") as out:
                    shutil.copyfileobj(stream, out, length=1 << 20)
        os.chmod(staging, 0o755)  # mkdtemp makes it owner-only
        os.utime(staging, ns=(archive_mtime, archive_mtime))
        if destination.exists():
            shutil.rmtree(destination)  # an older or damaged copy; the archive's is authoritative
        try:
            os.replace(staging, destination)
        except OSError:
            if not up_to_date():  # unless a concurrent run has just put the same folder in place
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_cifar10(request: DataRequest) -> ImageSplits:
    """CIFAR-10's 50,000 training and 10,000 test colour images."""
    if request.data_dir is None:
        root = request.cache_dir
        try:
            root.mkdir(parents=True, exist_ok=True)
            with _download_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
                tv_datasets.CIFAR10(str(root), train=True, download=True)
        except Exception as error:
            raise UserError(
                f"Could not download CIFAR-10 ({_short_reason(error)}; no network?): put the extracted "
                f"{CIFAR10_FOLDER} folder (or {CIFAR10_ARCHIVE}) in {root}/ or pass --data-dir pointing at a "
                f"folder that holds it."
            ) from None
    else:
        data_dir = request.data_dir
        if (data_dir / CIFAR10_FOLDER / "data_batch_1").is_file():
            root = data_dir
        elif data_dir.name == CIFAR10_FOLDER and (data_dir / "data_batch_1").is_file():
            root = data_dir.parent  # the user pointed at the batches folder itself
        elif (data_dir / CIFAR10_ARCHIVE).is_file():
            root = request.cache_dir
            try:
                _unpack_cifar10_archive(data_dir / CIFAR10_ARCHIVE, root)
            except (OSError, EOFError, tarfile.TarError) as error:
                raise UserError(
                    f"Could not unpack {data_dir / CIFAR10_ARCHIVE} into {root} ({error}); check that the archive "
                    f"is complete and that the cache folder is writable (set BENCH_HARNESS_DATA to move it)."
                ) from None
        else:
            raise UserError(
                f"Could not find CIFAR-10 in {data_dir}: expected the folder {data_dir / CIFAR10_FOLDER}/ (as "
                f"extracted from {CIFAR10_ARCHIVE}) or the archive itself; point --data-dir at the folder that holds "
                f"it, or leave --data-dir out to download it into {request.cache_dir}."
            )

    try:
        train = tv_datasets.CIFAR10(str(root), train=True, download=False)
        test = tv_datasets.CIFAR10(str(root), train=False, download=False)
    except Exception as error:
        raise UserError(
            f"The CIFAR-10 files in {root / CIFAR10_FOLDER} could not be read ({_read_reason(error)}); replace "
            f"them with a fresh copy extracted from {CIFAR10_ARCHIVE}."
        ) from None

    def images(dataset) -> torch.Tensor:
        # torchvision holds CIFAR-10 as a numpy uint8 array [N, H, W, C]; the harness wants [N, C, H, W].
        return torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()

    return ImageSplits.from_tensors(
        images(train),
        torch.tensor(train.targets, dtype=torch.int64),
        images(test),
        torch.tensor(test.targets, dtype=torch.int64),
    )


# --- synthetic ---------------------------------------------------------------------------------

SYNTHETIC_SHAPE = (1, 16, 16)
SYNTHETIC_CLASSES = 10
SYNTHETIC_SEED = 20240601
"""Fixed, so every process generates the identical dataset."""


def _synthetic_images(
    count: int, prototypes: torch.Tensor, generator: torch.Generator, max_shift: int = 2, noise: float = 0.35
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` labelled images: a random class prototype, shifted, rescaled in contrast and noised.

    The shifts (up to ``max_shift`` pixels each way) make the classes not linearly separable in
    pixel space and the noise makes single pixels unreliable, so a small MLP needs a few epochs
    and tops out short of 100% -- room for pruning to show a cost.
    """
    _, height, width = SYNTHETIC_SHAPE
    labels = torch.randint(0, SYNTHETIC_CLASSES, (count,), generator=generator)
    padded = F.pad(prototypes[labels], (max_shift,) * 4)  # [count, 1, H + 2s, W + 2s]
    dy = torch.randint(0, 2 * max_shift + 1, (count,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (count,), generator=generator)
    rows = (dy[:, None] + torch.arange(height)[None, :])[:, :, None]  # [count, H, 1]
    cols = (dx[:, None] + torch.arange(width)[None, :])[:, None, :]  # [count, 1, W]
    shifted = padded[torch.arange(count)[:, None, None], 0, rows, cols].unsqueeze(1)
    contrast = 0.6 + 0.8 * torch.rand(count, 1, 1, 1, generator=generator)
    noisy = shifted * contrast + noise * torch.randn(shifted.shape, generator=generator)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8), labels.to(torch.int64)


def make_synthetic(num_train: int = 2000, num_test: int = 1000, seed: int = SYNTHETIC_SEED) -> ImageSplits:
    """Generate the ``synthetic`` dataset: 10 smooth random prototype images, one per class.

    Prototypes are 4x4 random grids upsampled to 16x16 and stretched to the full [0, 1] range, so
    classes differ in broad blobs rather than single pixels.
    """
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(SYNTHETIC_CLASSES, 1, 4, 4, generator=generator)
    prototypes = F.interpolate(coarse, size=SYNTHETIC_SHAPE[1:], mode="bilinear", align_corners=False)
    low = prototypes.amin(dim=(2, 3), keepdim=True)
    high = prototypes.amax(dim=(2, 3), keepdim=True)
    prototypes = (prototypes - low) / (high - low)
    train_images, train_labels = _synthetic_images(num_train, prototypes, generator)
    test_images, test_labels = _synthetic_images(num_test, prototypes, generator)
    return ImageSplits.from_tensors(train_images, train_labels, test_images, test_labels)


def load_synthetic(request: DataRequest) -> ImageSplits:
    """The ``synthetic`` dataset; ``request`` is ignored, since there are no files."""
    return make_synthetic()


# --- registration ------------------------------------------------------------------------------

BUILTIN_DATASETS = (
    DatasetSpec(
        "mnist",
        "MNIST handwritten digits: 60,000 train / 10,000 test greyscale 28x28 images, 10 classes.",
        "fcnn",
        (1, 28, 28),
        10,
        load_mnist,
        train_images=60_000,
    ),
    DatasetSpec(
        "cifar10",
        "CIFAR-10 small photos: 50,000 train / 10,000 test colour 32x32 images, 10 classes.",
        "cnn",
        (3, 32, 32),
        10,
        load_cifar10,
        train_images=50_000,
    ),
    DatasetSpec(
        "fashion-mnist",
        "Fashion-MNIST clothing: 60,000 train / 10,000 test greyscale 28x28 images, 10 classes.",
        "fcnn",
        (1, 28, 28),
        10,
        load_fashion_mnist,
        train_images=60_000,
    ),
    DatasetSpec(
        "synthetic",
        "Generated noisy, shifted 16x16 class prototypes: 2,000 train / 1,000 test, 10 classes; no files needed.",
        "fcnn",
        SYNTHETIC_SHAPE,
        SYNTHETIC_CLASSES,
        load_synthetic,
        train_images=2_000,
    ),
)
"""The built-in datasets, in the order ``bench list`` shows them."""


@hookimpl
def register_datasets(register: Callable) -> None:
    """Register the built-in datasets."""
    for spec in BUILTIN_DATASETS:
        register(spec)
