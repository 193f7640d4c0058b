"""Any folder of images (e.g. the LEGO bricks or Oxford flowers of Foster 2023), searched
recursively, with one class per top-level subfolder when asked."""

from pathlib import Path

from genexp.data.image_files import ImageFilesDataModule, check_no_classes, find_images
from genexp.data.image_tensor import UNLABELLED
from genexp.errors import ConfigError, DataError


class ImageFolderDataModule(ImageFilesDataModule):
    """Splits are seeded fractions (`val_fraction`, `test_fraction`) of all the images."""

    def __init__(self, recursive: bool = True, class_subfolders: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.recursive = recursive
        self.class_subfolders = class_subfolders

    def list_files(self) -> dict[str, tuple[list[Path], list[int]]]:
        if not self.class_subfolders:
            check_no_classes(self.num_classes, "data.class_subfolders=false gives unlabelled images")
            files = find_images(self.root, self.recursive)
            return self.split_files(files, [UNLABELLED] * len(files))
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist (data.root)")
        classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if self.num_classes != len(classes):
            raise ConfigError(f"data.num_classes={self.num_classes} but {self.root} has {len(classes)} class "
                              f"subfolders ({', '.join(classes[:20]) or 'none'}); set data.num_classes={len(classes)}")
        files, labels = [], []
        for label, name in enumerate(classes):
            found = find_images(self.root / name, self.recursive)
            files += found
            labels += [label] * len(found)
        return self.split_files(files, labels)
