"""Image data modules: what they all share, and the in-memory uint8 tensor path.

Small data sets (digits, MNIST, Fashion-MNIST, CIFAR-10) fit in memory many times over, so
they are decoded once into a (N, C, H, W) uint8 tensor, cached on disk, and served by one
indexing operation per batch (optionally from GPU memory) instead of per-sample PIL
transforms. Every image module hands out uint8 batches; the float conversion to
`value_range` ([0, 1] or [-1, 1]) happens after the batch reaches the device.
"""

import hashlib
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from genexp.errors import ConfigError
from genexp.files import write_atomically
from genexp.value_range import from_unit, to_unit

VALUE_RANGES = ((0.0, 1.0), (-1.0, 1.0))
UNLABELLED = -1  # the label of every image of a data set without classes


class IndexedTensors(TensorDataset):
    """A TensorDataset that a DataLoader reads a whole batch from with one indexing operation
    (DataLoader calls __getitems__ with the batch's indices), wherever the tensors live."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, device=self.tensors[0].device)
        return tuple(t[index] for t in self.tensors)


def batch_as_is(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Collate for IndexedTensors: the batch is already stacked (module level so workers can pickle it)."""
    return batch


def files_fingerprint(paths: Iterable[Path], *extra: object) -> str:
    """A short hash of file names, sizes and modification times (and extra settings): a cache
    made from other files, or with other settings, is never mistaken for this one."""
    digest = hashlib.sha1(repr(extra).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def cached_tensors(path: Path | None, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Load the tensors saved at `path`, or build and save them there (atomically, so that
    processes started together never read a half-written file). `path=None`: no cache."""
    if path is not None and path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except (OSError, RuntimeError, EOFError) as error:
            warnings.warn(f"ignoring unreadable cache {path} ({error}); decoding again", stacklevel=2)
    tensors = build()
    if path is not None:
        try:
            write_atomically(path, lambda file: torch.save(tensors, file))
        except OSError as error:  # a read-only data folder: run without the cache
            warnings.warn(f"cannot write the data cache {path} ({error}); set data.cache_dir to a writable "
                          f"folder, or null", stacklevel=2)
    return tensors


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, C, size, size) uint8, antialiased (a no-op at the right size)."""
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


class ImageDataModule(L.LightningDataModule):
    """Shape and range checks, loaders over `self.splits` (train, val, test), uint8 -> float
    conversion on the device, and the `example_batch` / `to_images` views that callbacks use.
    Subclasses fill `self.splits` in `build_splits` with datasets of (uint8 image, label)."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"image_size": "int >= 1", "batch_size": "int >= 1", "num_workers": "int >= 0",
                    "val_fraction": "number in [0, 1)", "split_seed": "int >= 0"}

    def __init__(
        self,
        shape: list[int],
        image_size: int,
        num_classes: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        value_range: tuple[float, float] = (0.0, 1.0),
        preload_to_device: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3 or self.shape[1:] != (image_size, image_size) or self.shape[0] not in (1, 3):
            raise ConfigError(f"data.shape={list(self.shape)} must be [1 or 3 channels, data.image_size, "
                              f"data.image_size] with data.image_size={image_size}")
        self.image_size = image_size
        self.value_range = tuple(float(v) for v in value_range)
        if self.value_range not in VALUE_RANGES:
            raise ConfigError(f"data.value_range={list(value_range)} is not supported; allowed: [0, 1] or [-1, 1]")
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        if preload_to_device and num_workers:
            raise ConfigError("data.preload_to_device=true serves batches from device memory and needs "
                              f"data.num_workers=0 (got {num_workers})")
        self.preload_to_device = preload_to_device
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.splits: dict[str, Dataset] = {}

    @abstractmethod
    def build_splits(self) -> dict[str, Dataset]:
        """Datasets 'train', 'val' and 'test' of (uint8 (C, H, W) image, int64 label)."""

    def uses_cache(self) -> bool:
        return self.cache_dir is not None

    def cache_path(self, *key: object) -> Path | None:
        """<cache_dir>/<data set>-<key parts>.pt, or None when caching is off."""
        if not self.uses_cache():
            return None
        return self.cache_dir / ("-".join([type(self).__name__.lower(), *map(str, key)]) + ".pt")

    def download(self) -> None:
        """Fetch the source files, where the source supports it and the config asks for it."""

    def prepare_data(self) -> None:
        """Runs on one process per machine: download, then fill the cache the other processes read."""
        self.download()
        if self.uses_cache():
            self.setup()

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.build_splits()

    def seeded_split(self, n: int, *fractions: float, seed: int | None = None) -> list[torch.Tensor]:
        """A permutation of range(n) cut into len(fractions) + 1 parts: the given fractions
        first, the rest last. The same seed (default `split_seed`) gives the same parts on
        every machine."""
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed if seed is None else seed))
        parts, start = [], 0
        for fraction in fractions:
            size = round(n * fraction)
            parts.append(order[start:start + size])
            start += size
        return parts + [order[start:]]

    def tensor_dataset(self, images: torch.Tensor, labels: torch.Tensor) -> IndexedTensors:
        """A batch-indexed dataset over uint8 images (already at image_size), moved to the
        accelerator if asked."""
        if images.shape[1] != self.shape[0]:
            raise ConfigError(f"data.shape has {self.shape[0]} channels but the images have {images.shape[1]}")
        if self.preload_to_device and self.trainer is not None:
            device = self.trainer.strategy.root_device
            images, labels = images.to(device), labels.to(device)
        return IndexedTensors(images, labels)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.splits[split]
        in_memory = isinstance(dataset, IndexedTensors)
        on_device = in_memory and dataset.tensors[0].device.type != "cpu"
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=batch_as_is if in_memory else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available() and not on_device,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        return from_unit(images.float().div_(255.0), self.value_range), labels

    def example_batch(self, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n examples of a split, as a model sees them (same examples every call)."""
        self.setup()
        dataset = self.splits[split]
        batch = default_collate([dataset[i] for i in range(min(n, len(dataset)))])
        return self.on_after_batch_transfer(batch, 0)

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the data's value range as viewable images in [0, 1]."""
        return to_unit(x, self.value_range).clamp(0.0, 1.0)


class ImageTensorDataModule(ImageDataModule):
    """Subclasses return the raw uint8 images and labels of their 'train' and 'test' parts;
    a seeded `val_fraction` of 'train' becomes the validation split. With `cache_dir` set,
    each part is decoded once and kept there as a tensor file, keyed by data set, part,
    size and a fingerprint of the source files.

    `pad` black pixels are added on each side after resizing to image_size - 2 * pad, so that
    data.image_size stays the size the models see (the book pads MNIST's 28 px to 32 with
    zeros: data.image_size=32 data.pad=2)."""

    config_rules = {"pad": "int >= 0"}

    def __init__(self, pad: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 <= pad < self.image_size / 2:
            raise ConfigError(f"data.pad={pad} is not allowed with data.image_size={self.image_size}: it must be "
                              f"an integer >= 0 and leave image_size - 2 * pad >= 1 pixels of image")
        self.pad = pad

    @abstractmethod
    def load_raw(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, C, H, W) and int64 labels (N,) of part 'train' or 'test'."""

    @abstractmethod
    def source_fingerprint(self) -> str:
        """Changes whenever what load_raw returns would change (see files_fingerprint)."""

    def load_part(self, part: str) -> dict[str, torch.Tensor]:
        def decode() -> dict[str, torch.Tensor]:
            images, labels = self.load_raw(part)
            images = resize_uint8(images, self.image_size - 2 * self.pad)
            return {"images": F.pad(images, [self.pad] * 4, value=0), "labels": labels.long()}

        size = f"{self.shape[0]}x{self.image_size}" + (f"pad{self.pad}" if self.pad else "")
        key = (part, size, self.source_fingerprint())
        return cached_tensors(self.cache_path(*key), decode)

    def build_splits(self) -> dict[str, Dataset]:
        train, test = self.load_part("train"), self.load_part("test")
        val_idx, train_idx = self.seeded_split(len(train["images"]), self.val_fraction)
        return {
            "train": self.tensor_dataset(train["images"][train_idx], train["labels"][train_idx]),
            "val": self.tensor_dataset(train["images"][val_idx], train["labels"][val_idx]),
            "test": self.tensor_dataset(test["images"], test["labels"]),
        }
