"""scikit-learn's bundled 8x8 handwritten digits: 1797 images, available fully offline."""

from functools import cache

import torch

from genexp.data.image_tensor import ImageTensorDataModule, files_fingerprint


@cache
def all_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as uint8 images (N, 1, 8, 8) and int64 labels, read once per process."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are counts 0..16; map them onto the full uint8 range.
    images = torch.from_numpy(digits.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    return images, torch.from_numpy(digits.target).long()


class DigitsDataModule(ImageTensorDataModule):
    """Digits have no official test split: a seeded `test_fraction` of them is held out."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"test_fraction": "number in [0, 1)"}

    def __init__(self, test_fraction: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.test_fraction = test_fraction

    def source_fingerprint(self) -> str:
        import sklearn

        return files_fingerprint([], "sklearn", sklearn.__version__, self.test_fraction, self.split_seed)

    def load_raw(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = all_digits()
        test, train = self.seeded_split(len(images), self.test_fraction, seed=self.split_seed + 1)
        idx = test if part == "test" else train
        return images[idx], labels[idx]
