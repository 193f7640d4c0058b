"""CelebA aligned faces (Liu et al. 2015), from torchvision's layout or a plain folder.

Accepted layouts under data.root (the first that holds .jpg files wins):
  celeba/img_align_celeba/*.jpg + celeba/list_eval_partition.txt, list_attr_celeba.txt (torchvision)
  img_align_celeba/img_align_celeba/*.jpg + list_eval_partition.csv, list_attr_celeba.csv (Kaggle)
  img_align_celeba/*.jpg, or the jpgs directly in data.root (annotation files optional)
The official partition gives train/val/test when its file is there; otherwise seeded
fractions do. An attribute (e.g. Blond_Hair) can serve as a two-class label.
"""

import csv
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_warn
from torchvision import datasets

from genexp.data.image_files import ImageFilesDataModule, check_no_classes, find_images
from genexp.data.image_tensor import UNLABELLED
from genexp.errors import ConfigError, DataError

IMAGE_FOLDERS = ("celeba/img_align_celeba", "img_align_celeba/img_align_celeba", "img_align_celeba", ".")
PARTITION, ATTRIBUTES = "list_eval_partition", "list_attr_celeba"
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def read_table(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Column names and {file name: values} of a CelebA annotation file. The .txt files have
    optional count and header lines and space-separated columns; Kaggle's .csv files have a
    header row (image_id, ...)."""
    try:
        with path.open(newline="") as file:
            rows = [row for row in (csv.reader(file) if path.suffix == ".csv" else map(str.split, file)) if row]
        if path.suffix == ".csv":
            header, body = rows[0][1:], rows[1:]
        elif len(rows[0]) == 1:  # list_attr_celeba.txt: a count line, then the attribute names
            header, body = rows[1], rows[2:]
        else:  # list_eval_partition.txt: no header
            header, body = ["partition"], rows
        table = {row[0]: row[1:] for row in body}
        if any(len(values) != len(header) for values in table.values()):
            raise ValueError(f"rows do not all have the {len(header)} columns {header[:5]}...")
        return header, table
    except (OSError, ValueError, IndexError, csv.Error) as error:
        raise DataError(f"cannot read the CelebA annotation file {path}: {error}") from error


class CelebADataModule(ImageFilesDataModule):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"download": "bool"}

    def __init__(self, download: bool = False, label_attribute: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.download_source = download
        self.label_attribute = label_attribute
        if label_attribute is None:
            check_no_classes(self.num_classes, "data.label_attribute=null gives unlabelled faces")
        elif self.num_classes != 2:
            raise ConfigError(f"data.label_attribute={label_attribute} gives 2 classes (without, with); "
                              f"set data.num_classes=2 (got {self.num_classes})")

    def download(self) -> None:
        if not self.download_source:
            return
        try:
            datasets.CelebA(str(self.root), split="all", download=True)
        except Exception as error:  # Google Drive quotas break this download often
            raise DataError(f"downloading CelebA into {self.root / 'celeba'} failed ({error}); download "
                            f"img_align_celeba (e.g. from Kaggle), unpack it under data.root={self.root} "
                            f"and run with data.download=false") from error

    def image_folder(self) -> Path:
        for name in IMAGE_FOLDERS:
            folder = (self.root / name).resolve()
            if folder.is_dir() and next(folder.glob("*.jpg"), None) is not None:
                return folder
        raise DataError(f"no CelebA images (*.jpg) in any of {', '.join(str(self.root / n) for n in IMAGE_FOLDERS)}; "
                        f"set data.root to the folder that holds img_align_celeba, or run with data.download=true")

    def annotation(self, images: Path, name: str) -> Path | None:
        for folder in dict.fromkeys((images.parent, images.parent.parent, self.root)):
            for suffix in (".txt", ".csv"):
                if (folder / f"{name}{suffix}").is_file():
                    return folder / f"{name}{suffix}"
        return None

    def labels(self, images: Path, names: list[str]) -> list[int]:
        if self.label_attribute is None:
            return [UNLABELLED] * len(names)
        path = self.annotation(images, ATTRIBUTES)
        if path is None:
            raise DataError(f"data.label_attribute={self.label_attribute} needs {ATTRIBUTES}.txt (or .csv) "
                            f"beside {images}")
        header, table = read_table(path)
        if self.label_attribute not in header:
            raise ConfigError(f"data.label_attribute={self.label_attribute} is not in {path}; "
                              f"allowed: {', '.join(header)}")
        column = header.index(self.label_attribute)
        missing = [n for n in names if n not in table]
        if missing:
            raise DataError(f"{path} has no row for {missing[0]} (and {len(missing) - 1} more images)")
        return [int(table[n][column] == "1") for n in names]  # attributes are -1 / 1

    def list_files(self) -> dict[str, tuple[list[Path], list[int]]]:
        images = self.image_folder()
        files = find_images(images, recursive=False)
        names = [f.name for f in files]
        labels = self.labels(images, names)
        partition_path = self.annotation(images, PARTITION)
        if partition_path is None:
            return self.split_files(files, labels)
        _, partition = read_table(partition_path)
        unlisted = len([n for n in names if n not in partition])
        if unlisted:
            rank_zero_warn(f"{unlisted} images in {images} are not in {partition_path} and are left out")
        if len(partition) > len(names) - unlisted:
            rank_zero_warn(f"{len(partition) - len(names) + unlisted} images listed in {partition_path} "
                           f"are not in {images}; using the {len(names) - unlisted} that are")
        splits = {}
        for split, code in SPLIT_CODES.items():
            chosen = [i for i, n in enumerate(names) if n in partition and partition[n][0] == str(code)]
            if not chosen:
                raise DataError(f"no images of the {split} partition ({code}) of {partition_path} are in {images}")
            splits[split] = ([files[i] for i in chosen], [labels[i] for i in chosen])
        return splits
