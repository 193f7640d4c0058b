"""Image data sets kept as files (CelebA, image folders): decoded per item by DataLoader workers,
or, with `in_memory=true`, decoded once into a uint8 tensor cached on disk and served like
the small data sets.

Every file is opened once at setup so that a missing or unreadable image is reported with
its path before training starts (or skipped and counted with `skip_corrupt=true`).
"""

import warnings
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF

from genexp.data.image_tensor import ImageDataModule, cached_tensors, files_fingerprint
from genexp.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def find_images(folder: Path, recursive: bool) -> list[Path]:
    """Image files in a folder (and its subfolders), sorted; hidden files and folders are left out."""
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist (data.root)")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        where = f"{folder} or its subfolders" if recursive else str(folder)
        raise DataError(f"data.root: no images ({', '.join(IMAGE_SUFFIXES)}) found in {where}")
    return files


def unreadable_reason(path: Path) -> str | None:
    """Why PIL cannot open the file (missing, empty, not an image), or None. Reads the header only."""
    try:
        with Image.open(path) as image:
            if min(image.size) < 1:
                return "the image is empty"
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def load_image(path: Path, channels: int, image_size: int, crop_size: int | None) -> torch.Tensor:
    """File -> (channels, image_size, image_size) uint8: centre crop (default: the largest
    centred square), then an antialiased resize."""
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB")
    side = crop_size or min(image.size)
    image = TF.center_crop(image, [side, side])
    image = TF.resize(image, [image_size, image_size], antialias=True)
    return TF.pil_to_tensor(image)


class ImageFiles(Dataset):
    """(uint8 image, label) per file, decoded on access (in a DataLoader worker)."""

    def __init__(self, files: list[Path], labels: list[int], channels: int, image_size: int,
                 crop_size: int | None, skip_corrupt: bool) -> None:
        self.files, self.labels = files, labels
        self.channels, self.image_size, self.crop_size = channels, image_size, crop_size
        self.skip_corrupt = skip_corrupt

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        # A file that opened at setup can still fail to decode (e.g. truncated): skip it
        # to the next readable one when asked, else stop with its path.
        for offset in range(len(self.files)):
            i = (index + offset) % len(self.files)
            try:
                return load_image(self.files[i], self.channels, self.image_size, self.crop_size), self.labels[i]
            except (OSError, ValueError) as error:
                if not self.skip_corrupt:
                    raise DataError(f"cannot decode image {self.files[i]} ({error}); remove it, "
                                    f"or set data.skip_corrupt=true") from error
                warnings.warn(f"skipping undecodable image {self.files[i]} ({error})", stacklevel=2)
        raise DataError(f"none of the {len(self.files)} images from {self.files[0].parent} can be decoded; "
                        f"check data.root")


class ImageFilesDataModule(ImageDataModule):
    """Subclasses list the files and labels of each split (`list_files`); this class checks
    them, decodes them and serves them."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"crop_size": "int >= 1", "test_fraction": "number in [0, 1)"}

    def __init__(self, root: str, channels: int = 3, crop_size: int | None = None, skip_corrupt: bool = False,
                 in_memory: bool = False, test_fraction: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        if channels != self.shape[0]:
            raise ConfigError(f"data.channels={channels} does not match data.shape={list(self.shape)}")
        self.root = Path(root).expanduser().resolve()
        self.crop_size = crop_size
        self.skip_corrupt = skip_corrupt
        self.in_memory = in_memory
        self.test_fraction = test_fraction
        self.skipped: list[Path] = []

    @abstractmethod
    def list_files(self) -> dict[str, tuple[list[Path], list[int]]]:
        """Files and labels of 'train', 'val' and 'test'."""

    def uses_cache(self) -> bool:
        return self.in_memory and super().uses_cache()

    def split_files(self, files: list[Path], labels: list[int]) -> dict[str, tuple[list[Path], list[int]]]:
        """Seeded val_fraction and test_fraction of the files; the rest is for training."""
        if len(files) < 3:
            raise DataError(f"{len(files)} images in {self.root} are too few for train, val and test splits")
        val, test, train = self.seeded_split(len(files), self.val_fraction, self.test_fraction)
        return {name: ([files[i] for i in idx], [labels[i] for i in idx])
                for name, idx in (("train", train), ("val", val), ("test", test))}

    def unreadable(self, files: list[Path]) -> set[Path]:
        """The files PIL cannot open: they stop the run with their path, or are skipped and counted."""
        with ThreadPoolExecutor(max_workers=8) as pool:  # opening files waits on the disk, not the CPU
            reasons = list(pool.map(unreadable_reason, files))
        bad = [(path, reason) for path, reason in zip(files, reasons) if reason]
        if bad and not self.skip_corrupt:
            path, reason = bad[0]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise DataError(f"cannot read image {path}: {reason}{more}; remove it, or set "
                            f"data.skip_corrupt=true to skip unreadable images")
        if len(bad) == len(files):
            raise DataError(f"none of the {len(files)} images under {self.root} can be read; check data.root")
        if bad:
            self.skipped = [path for path, _ in bad]
            rank_zero_warn(f"skipped {len(bad)} unreadable of {len(files)} images "
                           f"(data.skip_corrupt=true), e.g. {bad[0][0]}: {bad[0][1]}")
        return {path for path, _ in bad}

    def decode_all(self, dataset: ImageFiles) -> dict[str, torch.Tensor]:
        loader = DataLoader(dataset, batch_size=256, num_workers=self.num_workers)
        images, labels = zip(*loader)
        return {"images": torch.cat(images), "labels": torch.cat(labels)}

    def build_splits(self) -> dict[str, Dataset]:
        listed = self.list_files()
        cache_paths = {name: self.cache_path(name, f"{self.shape[0]}x{self.image_size}",
                                             files_fingerprint(files, labels, self.crop_size, self.skip_corrupt))
                       for name, (files, labels) in listed.items()} if self.uses_cache() else {}
        # Opening every file takes a while on large sets: not needed when every split is cached.
        cached = cache_paths and all(p.is_file() for p in cache_paths.values())
        bad = set() if cached else self.unreadable([f for files, _ in listed.values() for f in files])
        splits: dict[str, Dataset] = {}
        for name, (files, labels) in listed.items():
            kept = [(f, y) for f, y in zip(files, labels) if f not in bad]
            if not kept:
                raise DataError(f"the {name} split of the images in {self.root} is empty; change "
                                f"data.val_fraction / data.test_fraction or add images")
            dataset = ImageFiles([f for f, _ in kept], [y for _, y in kept], self.shape[0], self.image_size,
                                 self.crop_size, self.skip_corrupt)
            if self.in_memory:
                tensors = cached_tensors(cache_paths.get(name), lambda: self.decode_all(dataset))
                splits[name] = self.tensor_dataset(tensors["images"], tensors["labels"])
            else:
                splits[name] = dataset
        return splits


def check_no_classes(num_classes: int | None, why: str) -> None:
    """A data set without labels: data.num_classes must say so."""
    if num_classes is not None:
        raise ConfigError(f"data.num_classes={num_classes} but {why}; set data.num_classes=null")
