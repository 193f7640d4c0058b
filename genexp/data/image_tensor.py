"""Image data sets held in memory as one uint8 tensor, with a seeded train/val/test split.

Small data sets (digits, MNIST-format) fit in memory many times over, so they are decoded
once into a (N, C, H, W) uint8 tensor and batches are indexed from it; the float
conversion to `value_range` ([0, 1] or [-1, 1]) happens after the batch reaches the device.
"""

from abc import abstractmethod

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from genexp.errors import ConfigError


VALUE_RANGES = ((0.0, 1.0), (-1.0, 1.0))


class ImageTensorDataModule(L.LightningDataModule):
    """Subclasses return the raw uint8 images and labels of their `train` and `test` parts."""

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
    ) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if self.shape[1:] != (image_size, image_size):
            raise ConfigError(f"data.shape={list(self.shape)} does not match data.image_size={image_size}")
        self.image_size = image_size
        self.value_range = tuple(float(v) for v in value_range)
        if self.value_range not in VALUE_RANGES:
            raise ConfigError(f"data.value_range={list(value_range)} is not supported; allowed: [0, 1] or [-1, 1]")
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.splits: dict[str, TensorDataset] = {}

    @abstractmethod
    def load_raw(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, C, H, W) and int64 labels (N,) of part 'train' or 'test'."""

    def prepare_data(self) -> None:
        """Downloads, where the source supports it; called on one process only."""

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train_x, train_y = self.load_raw("train")
        test_x, test_y = self.load_raw("test")
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(self.split_seed))
        n_val = round(len(train_x) * self.val_fraction)
        val_idx, train_idx = order[:n_val], order[n_val:]
        for name, x, y in (
            ("train", train_x[train_idx], train_y[train_idx]),
            ("val", train_x[val_idx], train_y[val_idx]),
            ("test", test_x, test_y),
        ):
            self.splits[name] = TensorDataset(self._resize(x), y)

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] != self.shape[0]:
            raise ConfigError(f"data.shape has {self.shape[0]} channels but the images have {images.shape[1]}")
        if images.shape[-2:] == (self.image_size, self.image_size):
            return images.contiguous()
        resized = F.interpolate(images.float(), size=(self.image_size, self.image_size), mode="bilinear",
                                antialias=True, align_corners=False)
        return resized.round().clamp(0, 255).to(torch.uint8)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        return images.float().div_(255.0), labels

    def example_batch(self, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n examples of a split, as a model sees them (same examples every call)."""
        self.setup()
        images, labels = self.splits[split][:n]
        return self.on_after_batch_transfer((images, labels), 0)

    @staticmethod
    def to_images(x: torch.Tensor) -> torch.Tensor:
        """A batch in the data's value range as viewable images in [0, 1]."""
        return x.clamp(0.0, 1.0)
