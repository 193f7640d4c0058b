"""Small data sets written in their real on-disk formats, so loaders are tested offline.

FAKE_DATA maps a data config name to a writer: writer(root: Path) -> list of Hydra overrides
that point the config at the files it wrote. Data configs that need no files (digits, the 2D
toy distributions) are absent.
"""

import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format of MNIST: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian dims, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_format(root: Path, folder: str, n_train: int = 64, n_test: int = 32, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, size=(n,)))


def mnist(root: Path) -> list[str]:
    write_mnist_format(root, "MNIST")
    return [f"data.root={root}", "data.batch_size=16"]


def fashion_mnist(root: Path) -> list[str]:
    write_mnist_format(root, "FashionMNIST")
    return [f"data.root={root}", "data.batch_size=16"]


FAKE_DATA = {
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
}
