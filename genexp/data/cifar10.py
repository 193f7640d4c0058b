"""CIFAR-10 (Krizhevsky 2009) from its pickled python batches, as torchvision downloads them.

torchvision's own reader insists on the official MD5 sums, so the batches are read here
(they are plain pickles of a uint8 array and a label list) and torchvision only downloads.
"""

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from genexp.data.image_tensor import ImageTensorDataModule, files_fingerprint
from genexp.errors import DataError

FOLDER = datasets.CIFAR10.base_folder  # cifar-10-batches-py
PARTS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def read_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """One pickled batch: 'data' is (N, 3072) uint8 in channel-major order, 'labels' a list."""
    try:
        with path.open("rb") as file:
            entry = pickle.load(file, encoding="latin1")
        return np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32), list(entry["labels"])
    except FileNotFoundError as error:
        raise DataError(f"CIFAR-10 batch {path} not found. Run with data.download=true to fetch it, "
                        f"or unpack cifar-10-python.tar.gz into data.root={path.parent.parent}") from error
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as error:
        raise DataError(f"CIFAR-10 batch {path} is unreadable ({type(error).__name__}: {error}); "
                        f"delete it and run with data.download=true to fetch it again") from error


class CIFAR10DataModule(ImageTensorDataModule):
    """Files live in <root>/cifar-10-batches-py/ (data_batch_1..5, test_batch)."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"download": "bool"}

    def __init__(self, root: str, download: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser().resolve()
        self.download_source = download

    def download(self) -> None:
        official = datasets.CIFAR10.train_list + datasets.CIFAR10.test_list  # [file name, md5]
        if not self.download_source or all(check_integrity(str(self.root / FOLDER / name), md5)
                                           for name, md5 in official):
            return  # a missing or damaged batch is fetched again, as torchvision would
        # One archive holds both parts; the test part is the smaller one to load.
        datasets.CIFAR10(str(self.root), train=False, download=True)

    def batch_paths(self, part: str) -> list[Path]:
        return [self.root / FOLDER / name for name in PARTS[part]]

    def source_fingerprint(self) -> str:
        return files_fingerprint([p for part in PARTS for p in self.batch_paths(part) if p.is_file()])

    def load_raw(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        batches = [read_batch(path) for path in self.batch_paths(part)]
        images = torch.from_numpy(np.concatenate([b[0] for b in batches]))
        labels = torch.tensor([label for b in batches for label in b[1]], dtype=torch.long)
        return images, labels
