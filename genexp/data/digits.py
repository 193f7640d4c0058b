"""scikit-learn's bundled 8x8 handwritten digits: 1797 images, available fully offline."""

import torch

from genexp.data.image_tensor import ImageTensorDataModule, files_fingerprint


class DigitsDataModule(ImageTensorDataModule):
    """Digits have no official test split: a seeded `test_fraction` of them is held out."""

    def __init__(self, test_fraction: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.test_fraction = test_fraction

    def source_fingerprint(self) -> str:
        import sklearn

        return files_fingerprint([], "sklearn", sklearn.__version__, self.test_fraction, self.split_seed)

    def load_raw(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        # Pixel values are counts 0..16; map them onto the full uint8 range.
        images = torch.from_numpy(digits.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
        labels = torch.from_numpy(digits.target).long()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed + 1))
        n_test = round(len(images) * self.test_fraction)
        idx = order[:n_test] if part == "test" else order[n_test:]
        return images[idx], labels[idx]
