"""MNIST and Fashion-MNIST read through torchvision from the original idx files."""

from pathlib import Path

import torch
from torchvision import datasets

from genexp.data.image_tensor import ImageTensorDataModule, files_fingerprint
from genexp.errors import DataError

_SOURCES = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}


class MNISTDataModule(ImageTensorDataModule):
    """`variant` is mnist or fashion_mnist; files live in <root>/<ClassName>/raw/ as torchvision expects."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"download": "bool"}

    def __init__(self, root: str, variant: str = "mnist", download: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if variant not in _SOURCES:
            raise DataError(f"data.variant={variant!r} is not known; allowed: {', '.join(_SOURCES)}")
        self.root = Path(root).expanduser().resolve()
        self.source = _SOURCES[variant]
        self.download_source = download
        self.raw_folder = self.root / self.source.__name__ / "raw"  # where torchvision puts the idx files
        self.raw_files = [self.raw_folder / Path(url).stem for url, _ in self.source.resources]

    def download(self) -> None:
        if not self.download_source or all(path.is_file() for path in self.raw_files):
            return
        # One data set fetches the files of both parts; the test part is the smaller one to load.
        self.source(str(self.root), train=False, download=True)

    def source_fingerprint(self) -> str:
        return files_fingerprint(sorted(self.raw_folder.glob("*-ubyte")) if self.raw_folder.is_dir() else [])

    def load_raw(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            dataset = self.source(str(self.root), train=(part == "train"), download=False)
        except RuntimeError as error:
            files = ", ".join(path.name for path in self.raw_files)
            raise DataError(
                f"{self.source.__name__} not found: looked for {files} in {self.raw_folder}. "
                f"Run with data.download=true to fetch it, or copy the idx files there "
                f"(data.root={self.root})."
            ) from error
        return dataset.data.unsqueeze(1).contiguous(), dataset.targets.long()
