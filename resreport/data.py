"""Load the chosen CIFAR-10 classes as normalised training, validation and test tensors."""
from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from resreport.config import CifarConfig, ConfigError
from resreport.store import atomic_write_bytes

log = logging.getLogger(__name__)

DEFAULT_TORCHVISION_ROOT = Path.home() / ".cache" / "resreport" / "cifar10"  # used when no --data is given
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's
IMAGE_SHAPE = (32, 32, 3)  # (height, width, channels) of every CIFAR image
CACHE_VERSION = 1  # bump when the cache file's layout changes
FIX_HINT = "pass --data DIR (train/<class>/*, test/<class>/*) or set RESREPORT_DATA"


class DataError(RuntimeError):
    """An image file that exists but cannot be decoded into a 32x32 RGB image."""


@dataclass(frozen=True)
class RawImages:
    """Decoded images of the chosen classes, before any split: the unit that the cache stores."""

    pool_images: torch.Tensor  # (N, 32, 32, 3) uint8, the official training images
    pool_labels: torch.Tensor  # (N,) int64, position in config.classes
    test_images: torch.Tensor  # (M, 32, 32, 3) uint8, the official test images
    test_labels: torch.Tensor  # (M,) int64
    fingerprint: str
    source: str


@dataclass(frozen=True)
class CifarData:
    """Flattened, normalised splits of the chosen classes; only resreport.cifar.score_on_test reads test_x."""

    train_x: torch.Tensor  # (n_train, 3072) float32, channel-major like ToTensor
    train_y: torch.Tensor  # (n_train,) int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, of the training split's pixels in [0, 1]
    std: tuple[float, ...]
    fingerprint: str  # of the source images (files or arrays)
    source: str  # human description of where the images came from
    counts: dict = field(default_factory=dict)  # {split: {class: n}}


def load_cifar(config: CifarConfig, data_dir: Path | None, cache_dir: Path) -> CifarData:
    """Load config.classes from an ImageFolder folder (or torchvision when None), split and normalise them."""
    if data_dir is None:
        raw = read_torchvision_cifar(config.classes, DEFAULT_TORCHVISION_ROOT)
    else:
        raw = read_image_folder(Path(data_dir), config.classes, Path(cache_dir))
    return split_and_normalise(raw, config)


def split_and_normalise(raw: RawImages, config: CifarConfig) -> CifarData:
    """Split the training pool (stratified, seeded), subset if asked, fit normalisation on training only.

    max_images_per_class caps each class in the official training images (before the split) and in the
    official test images, so the quick preset's 600 gives 480 train, 120 val and 600 test images per class.
    """
    pool_keep = stratified_subset(raw.pool_labels, config.max_images_per_class, config.split_seed)
    test_keep = stratified_subset(raw.test_labels, config.max_images_per_class, config.split_seed + 1)
    train_index, val_index = stratified_split(raw.pool_labels[pool_keep], config.val_fraction, config.split_seed,
                                              config.classes)
    train_index, val_index = pool_keep[train_index], pool_keep[val_index]
    mean, std = channel_statistics(raw.pool_images[train_index])
    splits = {
        "train": (raw.pool_images[train_index], raw.pool_labels[train_index]),
        "val": (raw.pool_images[val_index], raw.pool_labels[val_index]),
        "test": (raw.test_images[test_keep], raw.test_labels[test_keep]),
    }
    counts = {name: {c: int((labels == k).sum()) for k, c in enumerate(config.classes)}
              for name, (_, labels) in splits.items()}
    for name, per_class in counts.items():
        for class_name, n in per_class.items():
            if n == 0:
                raise ConfigError(f"the {name} split has no images of class {class_name!r} ({raw.source}); "
                                  f"add images or lower cifar.val_fraction / raise cifar.max_images_per_class")
    tensors = {name: (normalise_images(images, mean, std), labels) for name, (images, labels) in splits.items()}
    log.info("CIFAR-10 %s: %s", raw.source, counts)
    return CifarData(train_x=tensors["train"][0], train_y=tensors["train"][1],
                     val_x=tensors["val"][0], val_y=tensors["val"][1],
                     test_x=tensors["test"][0], test_y=tensors["test"][1],
                     classes=tuple(config.classes), mean=mean, std=std, fingerprint=raw.fingerprint,
                     source=raw.source, counts=counts)


def stratified_subset(labels: torch.Tensor, max_per_class: int | None, seed: int) -> torch.Tensor:
    """Return sorted indices keeping at most max_per_class seeded-random images of each class."""
    if max_per_class is None:
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for k in labels.unique(sorted=True).tolist():
        members = (labels == k).nonzero().flatten()
        keep.append(members[torch.randperm(len(members), generator=generator)[:max_per_class]])
    return torch.cat(keep).sort().values


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int,
                     classes: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return sorted (train, val) indices with round(val_fraction * n) of each class in val (at least one)."""
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for k, class_name in enumerate(classes):
        members = (labels == k).nonzero().flatten()
        if len(members) < 2:
            raise ConfigError(f"class {class_name!r} has {len(members)} training image(s); the training/validation "
                              f"split needs at least 2 per class; {FIX_HINT} with more images")
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = min(max(round(val_fraction * len(members)), 1), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def channel_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return per-channel mean and (population) std of uint8 (N, H, W, C) images scaled to [0, 1]."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for channel in range(images.shape[-1]):
        # exact and fast: a 256-bin histogram instead of float64 copies of every pixel
        counts = torch.bincount(images[..., channel].flatten(), minlength=256).double()
        mean = (counts * values).sum() / counts.sum()
        means.append(float(mean))
        stds.append(float(((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt()))
    return tuple(means), tuple(stds)


def normalise_images(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Scale uint8 (N, H, W, C) images to [0, 1], normalise per channel, flatten channel-major to (N, C*H*W)."""
    n_channels = images.shape[-1]
    x = images.permute(0, 3, 1, 2).contiguous().float().view(len(images), n_channels, -1)  # (N, C, H*W)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(1, -1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(1, -1, 1)
    return x.mul_(scale).add_(shift).view(len(images), -1)


def read_image_folder(data_dir: Path, classes: tuple[str, ...], cache_dir: Path) -> RawImages:
    """Decode train/<class>/* and test/<class>/* once; reuse the cache while the files are unchanged."""
    files = list_image_files(data_dir, classes)
    fingerprint = fingerprint_files(data_dir, files, classes)
    source = f"image folder {data_dir}"
    cache_path = cache_dir / f"cifar-{fingerprint[:24]}.pt"
    cached = read_cache(cache_path, fingerprint)
    if cached is not None:
        log.info("using decoded images cached in %s", cache_path)
        return RawImages(**cached, fingerprint=fingerprint, source=source)
    arrays = {}
    for split in ("train", "test"):
        paths = [path for path, _ in files[split]]
        arrays[split] = (decode_images(paths), torch.tensor([label for _, label in files[split]], dtype=torch.int64))
    tensors = {"pool_images": arrays["train"][0], "pool_labels": arrays["train"][1],
               "test_images": arrays["test"][0], "test_labels": arrays["test"][1]}
    write_cache(cache_path, fingerprint, tensors)
    return RawImages(**tensors, fingerprint=fingerprint, source=source)


def list_image_files(data_dir: Path, classes: tuple[str, ...]) -> dict[str, list[tuple[Path, int]]]:
    """Return {split: [(path, label), ...]} in a stable order; refuse missing folders or classes."""
    if not data_dir.is_dir():
        raise ConfigError(f"data folder {data_dir} does not exist; {FIX_HINT}")
    files: dict[str, list[tuple[Path, int]]] = {}
    for split in ("train", "test"):
        split_dir = data_dir / split
        if not split_dir.is_dir():
            raise ConfigError(f"data folder {data_dir} has no {split}/ folder; {FIX_HINT}")
        present = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        files[split] = []
        for label, class_name in enumerate(classes):
            if class_name not in present:
                raise ConfigError(f"class {class_name!r} not found in {split_dir} (found: {', '.join(present) or 'none'}); "
                                  f"set cifar.classes to existing names or {FIX_HINT}")
            class_dir = split_dir / class_name
            names = sorted(n for n in os.listdir(class_dir)
                           if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))
            if not names:
                raise ConfigError(f"{class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}); {FIX_HINT}")
            files[split].extend((class_dir / name, label) for name in names)
    return files


def fingerprint_files(data_dir: Path, files: dict[str, list[tuple[Path, int]]], classes: tuple[str, ...]) -> str:
    """Hash the class order and every file's relative path, size and bytes (~0.3 s for 12 000 JPEGs)."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}\0{chr(0).join(classes)}\0".encode())
    for split in ("train", "test"):
        for path, label in files[split]:
            content = path.read_bytes()
            digest.update(f"{path.relative_to(data_dir).as_posix()}\0{label}\0{len(content)}\0".encode())
            digest.update(content)
    return digest.hexdigest()


def decode_images(paths: list[Path]) -> torch.Tensor:
    """Decode image files into one uint8 (N, 32, 32, 3) tensor; name the file that fails."""
    from PIL import Image

    images = np.empty((len(paths), *IMAGE_SHAPE), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"))
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            raise DataError(f"cannot decode image {path}: {error}; replace or delete the file") from None
        if array.shape != IMAGE_SHAPE:
            raise DataError(f"image {path} is {array.shape[1]}x{array.shape[0]}, expected 32x32 (CIFAR-10)")
        images[i] = array
    log.info("decoded %d images", len(paths))
    return torch.from_numpy(images)


def read_cache(path: Path, fingerprint: str) -> dict | None:
    """Return the cached tensors when the file exists and matches the fingerprint, else None."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: decode again rather than fail
        log.warning("ignoring unreadable cache %s: %s", path, error)
        return None
    if payload.get("fingerprint") != fingerprint or payload.get("version") != CACHE_VERSION:
        return None
    return payload["tensors"]


def write_cache(path: Path, fingerprint: str, tensors: dict[str, torch.Tensor]) -> None:
    """Save decoded tensors with their fingerprint, atomically."""
    buffer = io.BytesIO()
    torch.save({"version": CACHE_VERSION, "fingerprint": fingerprint, "tensors": tensors}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    log.info("cached decoded images in %s", path)


def read_torchvision_cifar(classes: tuple[str, ...], root: Path) -> RawImages:
    """Read config.classes from torchvision's CIFAR-10 under root, downloading it when absent."""
    train = open_torchvision_split(root, train=True)
    test = open_torchvision_split(root, train=False)
    arrays = [select_classes(dataset, classes, root) for dataset in (train, test)]
    digest = hashlib.sha256(f"torchvision\0{chr(0).join(classes)}\0".encode())
    for images, labels in arrays:
        digest.update(images.numpy().tobytes())
        digest.update(labels.numpy().tobytes())
    return RawImages(pool_images=arrays[0][0], pool_labels=arrays[0][1], test_images=arrays[1][0],
                     test_labels=arrays[1][1], fingerprint=digest.hexdigest(),
                     source=f"torchvision CIFAR-10 under {root}")


def open_torchvision_split(root: Path, *, train: bool):
    """Return torchvision's CIFAR10 split, downloading when absent; a ConfigError when that fails."""
    import torchvision.datasets

    try:
        return torchvision.datasets.CIFAR10(str(root), train=train, download=True)
    except Exception as error:  # offline, a proxy, a corrupt archive: all are fixed by pointing at local data
        raise ConfigError(f"torchvision CIFAR-10 is not under {root} and could not be downloaded ({error}); "
                          f"{FIX_HINT}, or download it while online") from None


def select_classes(dataset, classes: tuple[str, ...], root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the dataset's images of the named classes as uint8 (N, 32, 32, 3) and labels = position in classes."""
    missing = [c for c in classes if c not in dataset.classes]
    if missing:
        raise ConfigError(f"class {missing[0]!r} is not a CIFAR-10 class in {root} "
                          f"(found: {', '.join(dataset.classes)}); set cifar.classes to existing names")
    targets = np.asarray(dataset.targets)
    remap = np.full(len(dataset.classes), -1, dtype=np.int64)
    for position, name in enumerate(classes):
        remap[dataset.classes.index(name)] = position
    labels = remap[targets]
    keep = np.flatnonzero(labels >= 0)
    images = np.ascontiguousarray(np.asarray(dataset.data)[keep], dtype=np.uint8)
    return torch.from_numpy(images), torch.from_numpy(labels[keep])
