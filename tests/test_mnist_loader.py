"""MNIST and Fashion-MNIST read from idx files written in the real format."""

import numpy as np
import pytest
import torch

from fake_data import write_idx
from genexp.data.torchvision_mnist import MNISTDataModule
from genexp.errors import DataError


def make_module(root, variant="mnist", image_size=28, **kwargs):
    return MNISTDataModule(root=str(root), variant=variant, image_size=image_size,
                           shape=[1, image_size, image_size], num_classes=10, batch_size=8, **kwargs)


@pytest.mark.parametrize(("variant", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_idx_files_load_with_their_pixels_labels_and_splits(tmp_path, variant, folder):
    rng = np.random.default_rng(3)
    train_images = rng.integers(0, 256, size=(50, 28, 28))
    train_labels = rng.integers(0, 10, size=(50,))
    raw = tmp_path / folder / "raw"
    write_idx(raw / "train-images-idx3-ubyte", train_images)
    write_idx(raw / "train-labels-idx1-ubyte", train_labels)
    write_idx(raw / "t10k-images-idx3-ubyte", train_images[:20])
    write_idx(raw / "t10k-labels-idx1-ubyte", train_labels[:20])

    dm = make_module(tmp_path, variant=variant, val_fraction=0.2)
    dm.setup("fit")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [40, 10, 20]
    # The test split is the file's own order, pixel for pixel.
    test_images, test_labels = dm.splits["test"].tensors
    assert test_images.shape == (20, 1, 28, 28) and test_images.dtype == torch.uint8
    assert np.array_equal(test_images[:, 0].numpy(), train_images[:20])
    assert np.array_equal(test_labels.numpy(), train_labels[:20])
    # train + val together are the training file, split without overlap.
    seen = torch.cat([dm.splits["train"].tensors[1], dm.splits["val"].tensors[1]])
    assert sorted(seen.tolist()) == sorted(train_labels.tolist())

    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.dtype == torch.float32 and x.shape == (8, 1, 28, 28)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_resize_and_value_range(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    images = np.full((10, 28, 28), 255)
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(10))
    dm = make_module(tmp_path, image_size=32, value_range=[-1.0, 1.0])
    x, _ = dm.example_batch("test", 4)
    assert x.shape == (4, 1, 32, 32)
    assert torch.allclose(x, torch.ones_like(x))
    assert torch.allclose(dm.to_images(-x), torch.zeros_like(x))


def test_missing_files_name_the_folder(tmp_path):
    dm = make_module(tmp_path)
    with pytest.raises(DataError, match=str(tmp_path / "MNIST" / "raw")):
        dm.setup("fit")


def test_padding_adds_black_borders_around_the_unresized_digits(tmp_path):
    """The book's 32 px MNIST: the 28 px digits as they are, 2 black pixels on each side."""
    rng = np.random.default_rng(4)
    images, labels = rng.integers(1, 256, size=(12, 28, 28)), rng.integers(0, 10, size=(12,))
    raw = tmp_path / "MNIST" / "raw"
    for part in ("train", "t10k"):
        write_idx(raw / f"{part}-images-idx3-ubyte", images)
        write_idx(raw / f"{part}-labels-idx1-ubyte", labels)
    dm = make_module(tmp_path, image_size=32, pad=2, value_range=[-1.0, 1.0])
    dm.setup("test")
    padded = dm.splits["test"].tensors[0]
    assert padded.shape == (12, 1, 32, 32)
    assert np.array_equal(padded[:, 0, 2:30, 2:30].numpy(), images)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (padded[:, 0][:, border] == 0).all()
    x, _ = dm.on_after_batch_transfer((padded[:2], torch.zeros(2)), 0)
    assert x[:, 0, 0, 0].tolist() == [-1.0, -1.0]  # black is the bottom of the value range
    with pytest.raises(Exception, match="data.pad=16"):
        make_module(tmp_path, image_size=32, pad=16)
